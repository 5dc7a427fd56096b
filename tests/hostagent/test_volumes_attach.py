"""Volumes on the compute host: disks in the domain XML at spawn (boot from volume: the volume
is vda), attach and detach on libvirt's test driver (its stand-in: the persistent definition)
and through the HostAgent's queue, the definition the agent keeps, and a restart that restores
it. Hot-plug into real guests on qemu:///system is in test_volumes_hotplug.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actors.client import ActorClient
from hostagent.virt import domain
from hostagent.virt.base import DetachTimeout, DeviceInUse, Disk, InstanceNotFound, InstanceSpec, VirtError
from hostagent.virt.libvirt import LibvirtDriver
from protocol import Envelope, Target
from protocol import compute as m
from protocol import volume as v
from protocol.power import PowerAction
from protocol.states import PowerState
from tests.hostagent.conftest import PREFIX, StartAgent, make_image
from tests.hostagent.test_volumes_agent import ActorInbox
from tests.hostagent.test_volumes_agent import inbox as inbox  # noqa: PLC0414 (a fixture, re-exported)

OpenDriver = Callable[..., Awaitable[LibvirtDriver]]
TINY = m.FlavorSpec(id="1", name="m1.tiny", ram=512, vcpus=1, disk=1)


def volume_file(directory: Path, size: str = "1G") -> tuple[str, Path]:
    """A volume as the file backend leaves it: (its id, its qcow2 file)."""
    volume_id = str(uuid.uuid4())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"volume-{volume_id}"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return volume_id, path


def connection(volume_id: str, path: Path) -> v.VolumeConnection:
    return v.VolumeConnection(volume_id=volume_id, driver="file", path=str(path), format="qcow2")


def disks(definition: str) -> list[tuple[str, str | None, str | None]]:
    """(device, source file, serial) of each disk, in the definition's order."""
    return [(d.device, d.source, d.serial) for d in domain.disks_of(definition)]


# --- the domain XML --------------------------------------------------------------------------------------


def test_device_names_follow_the_kernels() -> None:
    assert [domain.device_name(i) for i in (0, 1, 25, 26, 27, 51, 52)] == [
        "vda",
        "vdb",
        "vdz",
        "vdaa",
        "vdab",
        "vdaz",
        "vdba",
    ]


def test_volumes_keep_their_devices_and_local_disks_take_the_free_ones(workdir: Path) -> None:
    root = Disk(workdir / "vol-root", "qcow2", device="vda", serial="root-volume")
    data = Disk(workdir / "vol-data", "raw", device="vdb", serial="data-volume")
    local = Disk(workdir / "disk.local", "qcow2")
    swap = Disk(workdir / "disk.swap", "qcow2")
    s = InstanceSpec(
        uuid=str(uuid.uuid4()),
        name="x",
        vcpus=1,
        memory_mb=64,
        disks=(root, local, data, swap),
        console_log=workdir / "console.log",
    )
    definition = domain.build(s, "test")
    assert disks(definition) == [  # in device order: the BIOS boots the first
        ("vda", str(root.path), "root-volume"),
        ("vdb", str(data.path), "data-volume"),
        ("vdc", str(local.path), None),
        ("vdd", str(swap.path), None),
    ]
    element = ET.fromstring(definition).find("devices/disk[serial='data-volume']")
    assert element is not None and element.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert element.find("target").get("bus") == "virtio"  # type: ignore[union-attr]

    with pytest.raises(VirtError, match="two disks want device vdb"):
        domain.with_devices([data, Disk(workdir / "other", "qcow2", device="vdb")])
    with pytest.raises(VirtError, match="invalid disk device"):
        domain.with_devices([Disk(workdir / "other", "qcow2", device="sda")])


# --- the test driver's stand-in -------------------------------------------------------------------


def spec(workdir: Path) -> InstanceSpec:
    server_id = str(uuid.uuid4())
    directory = workdir / "instances" / server_id
    return InstanceSpec(
        uuid=server_id,
        name=f"{PREFIX}-server",
        vcpus=1,
        memory_mb=256,
        disks=(Disk(directory / "disk", "qcow2"),),
        console_log=directory / "console.log",
    )


async def test_the_test_driver_records_attach_and_detach_in_the_persistent_definition(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    driver = await open_test_driver()
    s = spec(workdir)
    assert await driver.spawn(s) is PowerState.RUNNING
    volume_id, path = volume_file(workdir / "volumes")
    disk = Disk(path, "qcow2", device="vdb", serial=volume_id)

    await driver.attach_volume(s.uuid, disk)
    definition = await driver.definition(s.uuid)
    assert definition is not None
    assert disks(definition) == [("vda", str(s.disks[0].path), None), ("vdb", str(path), volume_id)]
    assert await driver.power_state(s.uuid) is PowerState.RUNNING  # the guest was left alone

    await driver.attach_volume(s.uuid, disk)  # attached already: success, no second disk
    assert disks(await driver.definition(s.uuid) or "") == disks(definition)

    other_id, other = volume_file(workdir / "volumes")
    with pytest.raises(DeviceInUse) as in_use:
        await driver.attach_volume(s.uuid, Disk(other, "qcow2", device="vdb", serial=other_id))
    assert in_use.value.source == str(path) and "vdb" in in_use.value.reason

    # Detaching by volume id: another volume that now sits at the device is not touched.
    assert await driver.detach_volume(s.uuid, "vdb", serial=other_id) is False
    assert await driver.detach_volume(s.uuid, "vdb", serial=volume_id, timeout=1) is True
    assert disks(await driver.definition(s.uuid) or "") == [("vda", str(s.disks[0].path), None)]
    assert await driver.detach_volume(s.uuid, "vdb", serial=volume_id) is False  # not there: success

    # A stopped domain: the same, into the definition.
    assert await driver.power(s.uuid, PowerAction.STOP) is PowerState.SHUTDOWN
    await driver.attach_volume(s.uuid, disk)
    assert ("vdb", str(path), volume_id) in disks(await driver.definition(s.uuid) or "")

    missing = str(uuid.uuid4())
    with pytest.raises(InstanceNotFound):
        await driver.attach_volume(missing, disk)
    with pytest.raises(InstanceNotFound):
        await driver.detach_volume(missing, "vdb", serial=volume_id)
    assert await driver.definition(missing) is None


# --- through the host agent -------------------------------------------------------------------------


async def server_inbox(inbox: Any, server_id: str) -> ActorInbox:
    return await inbox(Target("server", server_id))


async def next_reply(box: ActorInbox, kind: type, timeout: float = 10.0) -> Envelope:
    """The next message of this type, skipping power-state reports."""

    async def find() -> Envelope:
        while True:
            envelope = await box.next(timeout)
            if isinstance(envelope.body, kind):
                return envelope
            assert isinstance(envelope.body, m.PowerStateReport), envelope.body

    return await asyncio.wait_for(find(), timeout)


async def test_the_agent_attaches_and_detaches_idempotently_and_keeps_its_definition_in_step(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path, workdir: Path
) -> None:
    agent = await start_agent()
    server_id = str(uuid.uuid4())
    box = await server_inbox(inbox, server_id)
    target = Target("agent", agent.name)
    await client.send(
        target,
        m.Spawn(server_id=server_id, name=f"{PREFIX} server", flavor=TINY, image_id=make_image(image_dir)),
    )
    await next_reply(box, m.Spawned)
    volume_id, path = volume_file(workdir / "volumes")
    saved = agent.storage.paths(server_id).definition

    attach = Envelope.new(
        target,
        v.AttachVolumeOnHost(
            server_id=server_id,
            attachment_id="att-1",
            device="/dev/vdb",
            connection=connection(volume_id, path),
        ),
    )
    await client.publish(attach)
    reply = await next_reply(box, v.VolumeAttachedToServer)
    assert (reply.body.attachment_id, reply.body.volume_id) == ("att-1", volume_id)  # type: ignore[attr-defined]
    assert ("vdb", str(path), volume_id) in disks(saved.read_text())
    assert disks(saved.read_text()) == disks(await agent.driver.definition(server_id) or "")
    await client.publish(attach)  # redelivered
    again = await next_reply(box, v.VolumeAttachedToServer)
    assert again.id == reply.id
    assert [d for d in disks(saved.read_text()) if d[2] == volume_id] == [("vdb", str(path), volume_id)]

    detach = Envelope.new(
        target,
        v.DetachVolumeOnHost(
            server_id=server_id, attachment_id="att-1", volume_id=volume_id, device="/dev/vdb"
        ),
    )
    for _ in range(2):
        await client.publish(detach)
        done = await next_reply(box, v.VolumeDetachedFromServer)
        assert (done.body.attachment_id, done.body.volume_id) == ("att-1", volume_id)  # type: ignore[attr-defined]
        assert all(d[2] != volume_id for d in disks(saved.read_text()))
    assert path.exists()  # the volume's file is the storage agent's, never the host's to remove
    assert await agent.driver.power_state(server_id) is PowerState.RUNNING


async def test_an_attach_the_host_cannot_make_is_answered_with_the_reason(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path, workdir: Path
) -> None:
    agent = await start_agent()
    server_id = str(uuid.uuid4())
    box = await server_inbox(inbox, server_id)
    target = Target("agent", agent.name)
    await client.send(
        target,
        m.Spawn(server_id=server_id, name=f"{PREFIX} server", flavor=TINY, image_id=make_image(image_dir)),
    )
    await next_reply(box, m.Spawned)
    volume_id, path = volume_file(workdir / "volumes")
    gone = workdir / "volumes" / f"volume-{uuid.uuid4()}"
    cases = [
        (connection(volume_id, gone), "/dev/vdb", "not reachable"),
        (
            v.VolumeConnection(volume_id=volume_id, driver="rbd", path="pool/volume", format="raw"),
            "/dev/vdb",
            "file volumes only",
        ),
        (connection(volume_id, path), "/dev/sdb", "Invalid device"),
        (connection(volume_id, path), "/dev/vda", "in use by another disk"),  # the root disk's
        (connection("../../etc", path), "/dev/vdb", "invalid volume id"),
    ]
    for conn, device, expected in cases:
        await client.send(
            target,
            v.AttachVolumeOnHost(server_id=server_id, attachment_id="att", device=device, connection=conn),
        )
        failed = (await next_reply(box, v.VolumeAttachToServerFailed)).body
        assert expected in failed.reason, failed  # type: ignore[attr-defined]
    assert len(disks(await agent.driver.definition(server_id) or "")) == 1

    missing = str(uuid.uuid4())
    lost = await server_inbox(inbox, missing)
    await client.send(
        target,
        v.AttachVolumeOnHost(
            server_id=missing, attachment_id="att", device="/dev/vdb", connection=connection(volume_id, path)
        ),
    )
    assert "could not be found" in (await next_reply(lost, v.VolumeAttachToServerFailed)).body.reason  # type: ignore[attr-defined]
    await client.send(
        target,
        v.DetachVolumeOnHost(server_id=missing, attachment_id="att", volume_id=volume_id, device="/dev/vdb"),
    )
    await next_reply(lost, v.VolumeDetachedFromServer)  # no domain: attached to nothing here


class GuestHoldsOn(LibvirtDriver):
    """A guest that never releases a volume (the fault being injected: the test driver cannot
    hot-unplug, so it cannot wait for a guest either)."""

    async def detach_volume(
        self, uuid: str, device: str, *, serial: str | None = None, timeout: float = 20.0
    ) -> bool:
        raise DetachTimeout(uuid, device, timeout)


async def test_a_detach_the_guest_does_not_complete_is_answered_with_the_reason_and_keeps_the_volume(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path, workdir: Path
) -> None:
    agent = await start_agent(driver=GuestHoldsOn, detach_timeout=0.5)
    server_id = str(uuid.uuid4())
    box = await server_inbox(inbox, server_id)
    target = Target("agent", agent.name)
    await client.send(
        target,
        m.Spawn(server_id=server_id, name=f"{PREFIX} server", flavor=TINY, image_id=make_image(image_dir)),
    )
    await next_reply(box, m.Spawned)
    volume_id, path = volume_file(workdir / "volumes")
    await client.send(
        target,
        v.AttachVolumeOnHost(
            server_id=server_id,
            attachment_id="att",
            device="/dev/vdb",
            connection=connection(volume_id, path),
        ),
    )
    await next_reply(box, v.VolumeAttachedToServer)
    await client.send(
        target,
        v.DetachVolumeOnHost(
            server_id=server_id, attachment_id="att", volume_id=volume_id, device="/dev/vdb"
        ),
    )
    failed = (await next_reply(box, v.VolumeDetachFromServerFailed)).body
    assert (failed.attachment_id, failed.volume_id) == ("att", volume_id)  # type: ignore[attr-defined]
    assert "did not release device vdb within 0.5 seconds" in failed.reason  # type: ignore[attr-defined]
    saved = agent.storage.paths(server_id).definition.read_text()
    assert ("vdb", str(path), volume_id) in disks(saved)  # still attached, as the server actor records it


async def test_a_server_boots_from_its_volume_with_its_data_volumes_and_keeps_them_across_a_restart(
    start_agent: StartAgent, client: ActorClient, inbox: Any, workdir: Path, pool: asyncpg.Pool
) -> None:
    agent = await start_agent()
    server_id = str(uuid.uuid4())
    box = await server_inbox(inbox, server_id)
    root_id, root = volume_file(workdir / "volumes")
    data_id, data = volume_file(workdir / "volumes")
    flavor = m.FlavorSpec(id="2", name="m1.eph", ram=512, vcpus=1, disk=1, ephemeral=1)
    await client.send(
        Target("agent", agent.name),
        m.Spawn(
            server_id=server_id,
            name=f"{PREFIX} bfv",
            flavor=flavor,
            image_id=None,
            volumes=[
                m.BlockDevice(device="/dev/vdb", connection=connection(data_id, data)),
                m.BlockDevice(device="/dev/vda", connection=connection(root_id, root), boot_index=0),
            ],
        ),
    )
    spawned = (await next_reply(box, m.Spawned)).body
    assert spawned.power_state == PowerState.RUNNING  # type: ignore[attr-defined]
    paths = agent.storage.paths(server_id)
    expected = [("vda", str(root), root_id), ("vdb", str(data), data_id), ("vdc", str(paths.ephemeral), None)]
    assert disks(await agent.driver.definition(server_id) or "") == expected
    assert disks(paths.definition.read_text()) == expected
    assert not paths.disk.exists()  # no image: no local root disk
    assert json.loads(paths.disk_info.read_text()) == {str(paths.ephemeral): "qcow2"}

    extra_id, extra = volume_file(workdir / "volumes")
    await client.send(
        Target("agent", agent.name),
        v.AttachVolumeOnHost(
            server_id=server_id,
            attachment_id="att-2",
            device="/dev/vdd",
            connection=connection(extra_id, extra),
        ),
    )
    await next_reply(box, v.VolumeAttachedToServer)

    # The test hypervisor forgets its domains with the process: the new agent restores the
    # definition it kept, volumes included, and starts it as its active server was (the database
    # places the server here: an instance it does not know would be reaped).
    await agent.stop()
    await pool.execute(
        "INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, flavor, host, "
        "reservation_id) VALUES ($1, 1, $2, $2, $2, 'active', $3, $4, $2)",
        server_id,
        PREFIX,
        {},
        agent.name,
    )
    try:
        again = await start_agent(agent.name)
    finally:
        await pool.execute("DELETE FROM servers WHERE id = $1", server_id)
    assert await again.driver.power_state(server_id) is PowerState.RUNNING  # back as its server was
    assert disks(await again.driver.definition(server_id) or "") == [*expected, ("vdd", str(extra), extra_id)]

    await client.send(Target("agent", again.name), m.Destroy(server_id=server_id))
    await next_reply(box, m.Destroyed)
    assert root.exists() and data.exists() and extra.exists()  # volumes outlive the server's files
    assert not paths.directory.exists()


async def test_a_spawn_with_a_volume_the_host_cannot_reach_fails_and_leaves_nothing(
    start_agent: StartAgent, client: ActorClient, inbox: Any, workdir: Path
) -> None:
    agent = await start_agent()
    server_id = str(uuid.uuid4())
    box = await server_inbox(inbox, server_id)
    volume_id = str(uuid.uuid4())
    missing = workdir / "volumes" / f"volume-{volume_id}"
    await client.send(
        Target("agent", agent.name),
        m.Spawn(
            server_id=server_id,
            name=f"{PREFIX} bfv",
            flavor=TINY,
            image_id=None,
            volumes=[
                m.BlockDevice(device="/dev/vda", connection=connection(volume_id, missing), boot_index=0)
            ],
        ),
    )
    failed = (await next_reply(box, m.SpawnFailed)).body
    assert "not reachable" in failed.reason  # type: ignore[attr-defined]
    assert await agent.driver.power_state(server_id) is None
    assert not agent.storage.paths(server_id).directory.exists()
    assert not os.path.exists(missing)
