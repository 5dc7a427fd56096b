"""The volume actor's table and the server actor's volume steps (pure)."""

from __future__ import annotations

import msgspec

from actors import server as s
from actors import volume as vol
from actors.table import Send, SetTimer
from protocol import Envelope, Message, Target
from protocol import compute as m
from protocol import volume as v
from protocol.actor import StateTimeout
from protocol.states import PowerState

VID = "bbbbbbbb-0000-0000-0000-000000000001"
SID = "11111111-2222-3333-4444-555555555555"
AID = "cccccccc-0000-0000-0000-000000000001"
FLAVOR = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}
CONN = v.VolumeConnection(volume_id=VID, driver="file", path=f"/v/volume-{VID}", format="qcow2")


def volume(**changes: object) -> vol.VolumeRecord:
    record = vol.VolumeRecord(id=VID, version=1, project_id="p", size=1, backend="node@file")
    return msgspec.structs.replace(record, **changes)


def server(**changes: object) -> s.ServerRecord:
    record = s.ServerRecord(
        id=SID, version=1, project_id="p", user_id="u", display_name="vm", flavor=FLAVOR, image_id="img"
    )
    return msgspec.structs.replace(record, **changes)


def apply(table, record, kind: str, body: Message):
    return table.apply(record, Envelope.new(Target(kind, record.id), body), 1000.0)


def sent(outcome, kind: type) -> list[Send]:
    return [e for e in outcome.effects if isinstance(e, Send) and isinstance(e.body, kind)]


def test_create_extend_delete() -> None:
    out = apply(vol.table, volume(), "volume", v.CreateVolume())
    [req] = sent(out, v.CreateVolumeOnBackend)
    assert req.target == Target("agent", "node@file") and req.body.size == 1
    assert any(isinstance(e, SetTimer) for e in out.effects)
    out = apply(
        vol.table, out.record, "volume", v.VolumeCreated(backend="node@file", provider_location="/v/x")
    )
    assert out.record.status == "available"
    out = apply(vol.table, out.record, "volume", v.ExtendVolume(new_size=2))
    assert out.record.status == "extending" and sent(out, v.ExtendVolumeOnBackend)[0].body.new_size == 2
    out = apply(vol.table, out.record, "volume", v.VolumeExtended(size=2))
    assert (out.record.status, out.record.size) == ("available", 2)
    out = apply(vol.table, out.record, "volume", v.DeleteVolume())
    assert out.record.status == "deleting" and sent(out, v.DeleteVolumeOnBackend)
    assert apply(vol.table, out.record, "volume", v.VolumeDeleted()).delete is True


def test_no_backend_and_failures_end_in_error_states() -> None:
    assert apply(vol.table, volume(backend=None), "volume", v.CreateVolume()).record.status == "error"
    creating = apply(vol.table, volume(), "volume", v.CreateVolume()).record
    failed = apply(vol.table, creating, "volume", v.VolumeCreateFailed(reason="disk full")).record
    assert (failed.status, failed.fault) == ("error", "disk full")
    timed_out = apply(vol.table, creating, "volume", StateTimeout(state="creating")).record
    assert timed_out.status == "error" and "Timed out" in (timed_out.fault or "")
    deleting = apply(
        vol.table, volume(status="available", provider_location="/v/x"), "volume", v.DeleteVolume()
    )
    assert (
        apply(vol.table, deleting.record, "volume", v.VolumeDeleteFailed(reason="x")).record.status
        == "error_deleting"
    )
    reset = apply(vol.table, failed, "volume", v.ResetVolumeState(status="available")).record
    assert reset.status == "available"


def test_an_attached_volume_cannot_be_deleted_and_detach_frees_it() -> None:
    attachment = {
        "id": AID,
        "server_id": SID,
        "device": "/dev/vdb",
        "mode": "rw",
        "delete_on_termination": False,
    }
    reserved = volume(status="reserved", provider_location="/v/x", attachment=attachment)
    out = apply(vol.table, reserved, "volume", v.VolumeReserved(attachment_id=AID, server_id=SID))
    assert any(isinstance(e, SetTimer) for e in out.effects)
    in_use = apply(
        vol.table,
        out.record,
        "volume",
        v.VolumeAttached(attachment_id=AID, server_id=SID, host="h1", device="/dev/vdb"),
    ).record
    assert (in_use.status, in_use.attach_status, in_use.attachment["host"]) == ("in-use", "attached", "h1")
    try:
        apply(vol.table, in_use, "volume", v.DeleteVolume())
        raise AssertionError("deleting an in-use volume must be refused")
    except Exception as exc:  # IllegalTransition
        assert "cannot accept" in str(exc) or "attached" in str(exc)
    # a detach for another attachment changes nothing; the right one frees it
    assert (
        apply(vol.table, in_use, "volume", v.VolumeDetached(attachment_id="other")).record.status == "in-use"
    )
    free = apply(vol.table, in_use, "volume", v.VolumeDetached(attachment_id=AID)).record
    assert (free.status, free.attachment) == ("available", None)
    gone = apply(vol.table, in_use, "volume", v.VolumeDetached(attachment_id=AID, delete=True))
    assert gone.record.status == "deleting"


def test_a_server_hot_plugs_and_unplugs_through_its_host() -> None:
    record = server(vm_state="active", task_state=None, host="h1")
    out = apply(
        s.table, record, "server", v.AttachVolume(attachment_id=AID, device="/dev/vdb", connection=CONN)
    )
    [req] = sent(out, v.AttachVolumeOnHost)
    assert req.target == Target("agent", "h1") and req.body.device == "/dev/vdb"
    out = apply(s.table, out.record, "server", v.VolumeAttachedToServer(attachment_id=AID, volume_id=VID))
    [done] = sent(out, v.VolumeAttached)
    assert done.target == Target("volume", VID) and out.record.block_devices[0]["status"] == "attached"
    out = apply(s.table, out.record, "server", v.DetachVolume(attachment_id=AID, volume_id=VID))
    assert sent(out, v.DetachVolumeOnHost)[0].body.device == "/dev/vdb"
    out = apply(s.table, out.record, "server", v.VolumeDetachedFromServer(attachment_id=AID, volume_id=VID))
    assert out.record.block_devices == [] and sent(out, v.VolumeDetached)


def test_a_server_that_cannot_attach_gives_the_reservation_back() -> None:
    out = apply(
        s.table, server(), "server", v.AttachVolume(attachment_id=AID, device="/dev/vdb", connection=CONN)
    )
    assert sent(out, v.VolumeAttachFailed) and out.record.block_devices == []


def test_boot_from_volume_waits_for_the_volume_then_spawns_with_it_as_root() -> None:
    bdm = {
        "attachment_id": AID,
        "volume_id": VID,
        "device": "/dev/vda",
        "boot_index": 0,
        "delete_on_termination": True,
        "connection": None,
        "status": "waiting",
    }
    record = server(image_id=None, block_devices=[bdm])
    out = apply(s.table, record, "server", m.Scheduled(host="h1", node="h1", availability_zone="nova"))
    assert s.state_name(out.record) == "building:block_device_mapping" and not sent(out, m.Spawn)
    out = apply(s.table, out.record, "server", v.VolumeReady(attachment_id=AID, connection=CONN))
    [spawn] = sent(out, m.Spawn)
    assert spawn.body.image_id is None and spawn.body.volumes[0].boot_index == 0
    out = apply(s.table, out.record, "server", m.Spawned(host="h1", power_state=PowerState.RUNNING))
    assert sent(out, v.VolumeAttached)[0].body.device == "/dev/vda"
    out = apply(s.table, out.record, "server", m.DeleteServer())
    out = apply(s.table, out.record, "server", m.Destroyed(host="h1"))
    [gone] = sent(out, v.VolumeDetached)
    assert gone.body.delete is True


def test_a_boot_volume_that_fails_fails_the_build() -> None:
    bdm = {
        "attachment_id": AID,
        "volume_id": VID,
        "device": "/dev/vda",
        "boot_index": 0,
        "delete_on_termination": False,
        "connection": None,
        "status": "waiting",
    }
    out = apply(
        s.table,
        server(image_id=None, block_devices=[bdm]),
        "server",
        v.VolumeFailed(attachment_id=AID, volume_id=VID, reason="no space"),
    )
    assert s.state_name(out.record) == "error" and "no space" in out.record.fault["message"]


def test_an_extension_the_api_began_goes_to_the_backend_with_its_timer() -> None:
    """The API sets extending (and the target size) itself, so a client sees it at once; the
    actor then asks the backend and starts the extending timeout."""
    begun = volume(status="extending", provider_location="/v/x", target_size=3)
    out = apply(vol.table, begun, "volume", v.ExtendVolume(new_size=3))
    [req] = sent(out, v.ExtendVolumeOnBackend)
    assert (out.record.status, req.body.new_size) == ("extending", 3)
    assert any(isinstance(e, SetTimer) and e.body.state == "extending" for e in out.effects)
    # Another size than the one the API recorded: not this extension's message.
    assert apply(vol.table, begun, "volume", v.ExtendVolume(new_size=5)).effects == ()
    # Nothing on a backend: the extension ends, available again with the reason.
    nothing = volume(status="extending", backend=None, target_size=3)
    out = apply(vol.table, nothing, "volume", v.ExtendVolume(new_size=3))
    assert (out.record.status, out.record.target_size) == ("available", None)
    assert "no storage" in (out.record.fault or "")


def test_a_client_reservation_times_out_and_its_attach_makes_the_volume_in_use() -> None:
    """os-reserve (the API's available -> attaching) starts the attaching timeout; os-attach
    (the attachment written, `volume.attached` sent) makes it in-use; a late `volume.attaching`
    changes nothing."""
    reserved = volume(status="attaching", provider_location="/v/x")
    out = apply(vol.table, reserved, "volume", v.VolumeAttaching())
    assert any(isinstance(e, SetTimer) and e.body.state == "attaching" for e in out.effects)
    timed_out = apply(vol.table, out.record, "volume", StateTimeout(state="attaching")).record
    assert timed_out.status == "error" and "attaching" in (timed_out.fault or "")
    attachment = {"id": AID, "server_id": SID, "device": "/dev/vdc", "mode": "rw", "origin": "os-attach"}
    writing = volume(status="attaching", provider_location="/v/x", attachment=attachment)
    in_use = apply(
        vol.table,
        writing,
        "volume",
        v.VolumeAttached(attachment_id=AID, server_id=SID, host="", device="/dev/vdc"),
    ).record
    assert (in_use.status, in_use.attach_status, in_use.attachment["origin"]) == (
        "in-use",
        "attached",
        "os-attach",
    )
    assert apply(vol.table, in_use, "volume", v.VolumeAttaching()).record == in_use
    assert apply(vol.table, writing, "volume", v.VolumeAttaching()).effects == ()
