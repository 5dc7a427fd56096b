"""Cinder's volume actions a client drives itself (os-reserve, os-unreserve, os-attach,
os-begin_detaching, os-roll_detaching, os-detach) and os-extend's `extending` set inside the
call, GET /volumes/summary, and a create from a source that does not exist, through raw HTTP
(as tempest and Nova send them) and the real `openstack` CLI. The end-to-end ones need the volume
actor and a storage agent (test_volumes_lifecycle.py's `storage`); the others write rows as the
actor would (test_volumes.py's helpers)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.api import test_volumes, test_volumes_lifecycle
from tests.api.conftest import Cloud, Credentials
from tests.api.test_volumes import (
    LATEST,
    assert_error,
    count_volumes,
    insert_volume,
    mv,
    unique,
    version_of,
    volumes_path,
)
from tests.api.test_volumes_lifecycle import wait_volume

# The fixtures of the volume tests: a project whose volumes go afterwards, the admin's project,
# and a storage agent (skips without one).
project = test_volumes.project
admin_project = test_volumes.admin_project
storage = test_volumes_lifecycle.storage


async def act(
    cloud: Cloud, who: Credentials, token: str, volume_id: str, body: Any, **kw: Any
) -> tuple[int, Any]:
    headers = kw.pop("headers", LATEST)
    status, data, _ = await cloud.request(
        "POST", volumes_path(who, f"/{volume_id}/action"), token=token, headers=headers, json=body
    )
    return status, data


async def show(cloud: Cloud, who: Credentials, token: str, volume_id: str) -> dict[str, Any]:
    status, body, _ = await cloud.request(
        "GET", volumes_path(who, f"/{volume_id}"), token=token, headers=LATEST
    )
    assert status == 200, body
    return body["volume"]


async def until(cloud: Cloud, who: Credentials, token: str, volume_id: str, status: str) -> dict[str, Any]:
    for _ in range(150):
        volume = await show(cloud, who, token, volume_id)
        if volume["status"] == status:
            return volume
        await asyncio.sleep(0.2)
    raise AssertionError(f"volume {volume_id} is {volume['status']}, not {status}")


async def test_a_client_reserves_attaches_and_detaches_a_volume_itself(
    cloud: Cloud,
    project: Credentials,
    storage: None,
    pool: Any,
    admin_project: str,
) -> None:
    token = await cloud.token(project)
    created = cloud.openstack("volume", "create", "--size", "1", unique("att"), who=project)
    volume_id = created["id"]
    wait_volume(cloud, volume_id, project, status="available")

    # os-reserve: attaching at once; a second reserve is refused; os-unreserve undoes it.
    assert (await act(cloud, project, token, volume_id, {"os-reserve": {}}))[0] == 202
    assert (await show(cloud, project, token, volume_id))["status"] == "attaching"
    status, body = await act(cloud, project, token, volume_id, {"os-reserve": None})
    assert status == 400
    assert_error(
        body, "badRequest", 400, "Volume status must be available to reserve, but the status is attaching."
    )
    assert (await act(cloud, project, token, volume_id, {"os-unreserve": {}}))[0] == 202
    assert (await show(cloud, project, token, volume_id))["status"] == "available"
    before = await version_of(pool, volume_id)
    assert (await act(cloud, project, token, volume_id, {"os-unreserve": {}}))[0] == 202  # nothing to undo
    assert await version_of(pool, volume_id) == before

    # Reserved, then attached (the client plugged it in): in-use, with the attachment shown.
    server = str(uuid.uuid4())
    assert (await act(cloud, project, token, volume_id, {"os-reserve": {}}))[0] == 202
    attach = {"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdc", "mode": "rw"}}
    assert (await act(cloud, project, token, volume_id, attach))[0] == 202
    volume = await until(cloud, project, token, volume_id, "in-use")
    [attachment] = volume["attachments"]
    assert (attachment["server_id"], attachment["device"], attachment["volume_id"]) == (
        server,
        "/dev/vdc",
        volume_id,
    )
    assert attachment["id"] == volume_id and attachment["attachment_id"] and attachment["attached_at"]
    assert [v["Attached to"] for v in cloud.openstack("volume", "list", who=project)][0][0][
        "server_id"
    ] == server
    # The same attach again is tracked already; another server is refused (no multiattach).
    assert (await act(cloud, project, token, volume_id, attach))[0] == 202
    other = {"os-attach": {"instance_uuid": str(uuid.uuid4()), "mountpoint": "/dev/vdc"}}
    status, body = await act(cloud, project, token, volume_id, other)
    assert status == 400
    assert_error(
        body, "badRequest", 400, "Error attaching volume - InvalidVolume: Invalid volume: volume is already"
    )
    status, body, _ = await cloud.request("DELETE", volumes_path(project, f"/{volume_id}"), token=token)
    assert status == 400  # attached: not deletable

    # Begin detaching and roll it back: detaching at once, then in-use with the attachment again.
    assert (await act(cloud, project, token, volume_id, {"os-begin_detaching": {}}))[0] == 202
    assert (await show(cloud, project, token, volume_id))["status"] == "detaching"
    status, body = await act(cloud, project, token, volume_id, {"os-begin_detaching": {}})
    assert status == 400
    assert_error(
        body, "badRequest", 400, "Volume status must be 'in-use' and attach_status must be 'attached'"
    )
    assert (await act(cloud, project, token, volume_id, {"os-roll_detaching": {}}))[0] == 202
    volume = await show(cloud, project, token, volume_id)
    assert (
        volume["status"] == "in-use"
        and volume["attachments"][0]["attachment_id"] == attachment["attachment_id"]
    )

    # os-detach: another attachment's id is refused; this one's frees the volume.
    wrong = {"os-detach": {"attachment_id": str(uuid.uuid4())}}
    status, body = await act(cloud, project, token, volume_id, wrong)
    assert status == 400
    assert_error(body, "badRequest", 400, "VolumeAttachmentNotFound")
    right = {"os-detach": {"attachment_id": attachment["attachment_id"]}}
    assert (await act(cloud, project, token, volume_id, right))[0] == 202
    volume = await until(cloud, project, token, volume_id, "available")
    assert volume["attachments"] == []
    assert await pool.fetchval("SELECT attachment FROM volumes WHERE id = $1", volume_id) is None
    assert (await act(cloud, project, token, volume_id, {"os-detach": None}))[0] == 202  # not attached: 202

    # An attach without a reservation, to a host rather than a server, read-only.
    host_attach = {"os-attach": {"host_name": "backup-node", "mountpoint": "/mnt/v", "mode": "ro"}}
    assert (await act(cloud, project, token, volume_id, host_attach))[0] == 202
    volume = await until(cloud, project, token, volume_id, "in-use")
    assert volume["attachments"][0]["server_id"] is None
    status, body, _ = await cloud.request("GET", f"/volume/v3/{admin_project}/volumes/{volume_id}")
    assert status == 200 and body["volume"]["attachments"][0]["host_name"] == "backup-node"  # admins see it
    assert (await act(cloud, project, token, volume_id, {"os-detach": {}}))[0] == 202
    await until(cloud, project, token, volume_id, "available")


async def test_attach_actions_check_their_input_and_the_volume(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    token = await cloud.token(project)
    volume_id = await insert_volume(pool, project, on_backend=True)
    server = str(uuid.uuid4())
    cases: list[tuple[Any, str]] = [
        ({"os-attach": {"instance_uuid": server}}, "'mountpoint' is a required property"),
        ({"os-attach": {"mountpoint": "/dev/vdb"}}, "is not valid under any of the given schemas"),
        ({"os-attach": {"instance_uuid": "vm-1", "mountpoint": "/dev/vdb"}}, "'vm-1' is not a 'uuid'"),
        ({"os-attach": {"instance_uuid": server, "mountpoint": ""}}, "should be 1 to 255 characters long"),
        ({"os-attach": {"instance_uuid": server, "mountpoint": 5}}, "is not of type 'string'"),
        ({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb", "mode": "rwx"}}, "is not one of"),
        ({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb", "x": 1}}, "('x' was unexpected)"),
        ({"os-attach": "now"}, "is not of type 'object'"),
        ({"os-detach": {"attachment_id": 5}}, "is not of type 'string', 'null'"),
        ({"os-detach": {"force": True}}, "('force' was unexpected)"),
        ({"os-reserve": "please"}, "is not of type 'object'"),
    ]
    before = await version_of(pool, volume_id)
    for body, text in cases:
        status, answer = await act(cloud, project, token, volume_id, body)
        assert status == 400, (body, answer)
        assert_error(answer, "badRequest", 400, text)
    # Cinder's read-only flag: only a read-only attach.
    status, _ = await act(cloud, project, token, volume_id, {"os-update_readonly_flag": {"readonly": True}})
    assert status == 202
    status, body = await act(
        cloud, project, token, volume_id, {"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}}
    )
    assert status == 400
    assert_error(body, "badRequest", 400, f"Invalid attaching mode 'rw' for volume {volume_id}.")
    assert await pool.fetchval("SELECT status FROM volumes WHERE id = $1", volume_id) == "available"
    assert await version_of(pool, volume_id) == before + 1  # the flag, nothing else

    # A volume that is not available is not reserved or attached.
    broken = await insert_volume(pool, project, status="error", on_backend=True)
    for body in ({"os-reserve": {}}, {"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}}):
        status, answer = await act(cloud, project, token, broken, body)
        assert status == 400, answer
    assert (await act(cloud, project, token, broken, {"os-roll_detaching": {}}))[0] == 202  # nothing to roll

    # Someone else's volume, or none: 404 for every action.
    for name in ("os-reserve", "os-unreserve", "os-begin_detaching", "os-roll_detaching", "os-detach"):
        status, body = await act(cloud, project, token, str(uuid.uuid4()), {name: {}})
        assert status == 404, (name, body)
        assert_error(body, "itemNotFound", 404, "could not be found")
    status, body = await act(
        cloud,
        project,
        token,
        str(uuid.uuid4()),
        {"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}},
    )
    assert status == 404

    # A reader of the volume's project may look, not reserve, attach or detach.
    reader = await cloud.new_member("reader", role="reader")
    reader_token = await cloud.token(reader)
    readers = await insert_volume(pool, reader, on_backend=True)
    try:
        for body in (
            {"os-reserve": {}},
            {"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}},
            {"os-detach": {}},
            {"os-begin_detaching": {}},
        ):
            status, answer = await act(cloud, reader, reader_token, readers, body)
            assert status == 403, (body, answer)
            assert_error(answer, "forbidden", 403, "Policy doesn't allow")
        assert await pool.fetchval("SELECT status FROM volumes WHERE id = $1", readers) == "available"
    finally:
        await pool.execute("DELETE FROM volumes WHERE project_id = $1", reader.project_id)


async def test_an_attachment_the_compute_service_made_is_undone_only_there(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    """The server actor holds that disk on its host: freeing the volume behind its back would let
    another server take a disk still plugged in."""
    token = await cloud.token(project)
    server = str(uuid.uuid4())
    in_use = await insert_volume(pool, project, status="in-use", attached_to=server, on_backend=True)
    detaching = await insert_volume(pool, project, status="detaching", attached_to=server, on_backend=True)
    versions = {v: await version_of(pool, v) for v in (in_use, detaching)}
    for volume_id, body, text in (
        (in_use, {"os-detach": {}}, f"is attached to server {server} by the compute service"),
        (in_use, {"os-begin_detaching": {}}, f"/servers/{server}/os-volume_attachments/{in_use}"),
        (detaching, {"os-roll_detaching": {}}, "by the compute service"),
        (in_use, {"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}}, "already attached"),
        (in_use, {"os-reserve": {}}, "must be available to reserve"),
    ):
        status, answer = await act(cloud, project, token, volume_id, body)
        assert status == 400, (body, answer)
        assert_error(answer, "badRequest", 400, text)
    assert {v: await version_of(pool, v) for v in (in_use, detaching)} == versions


async def test_extend_sets_extending_in_the_call_and_refuses_an_attached_volume(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    # A row on a backend that answers nothing: the extension stays begun, as the API left it.
    volume_id = await insert_volume(pool, project, size=1, on_backend=True)
    assert (await act(cloud, project, token, volume_id, {"os-extend": {"new_size": 3}}))[0] == 202
    row = await pool.fetchrow("SELECT status, size, target_size FROM volumes WHERE id = $1", volume_id)
    assert tuple(row) == ("extending", 1, 3)
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{admin_project}/os-quota-sets/{project.project_id}?usage=True"
    )
    assert body["quota_set"]["gigabytes"]["in_use"] == 3  # counted at its target from the 202 on
    status, body = await act(cloud, project, token, volume_id, {"os-extend": {"new_size": 4}})
    assert status == 400
    assert_error(
        body,
        "badRequest",
        400,
        f"Volume {volume_id} status must be '{{'status': 'available'}}' to extend, currently extending.",
    )

    attached = await insert_volume(
        pool, project, status="in-use", attached_to=str(uuid.uuid4()), on_backend=True
    )
    status, body = await act(
        cloud, project, token, attached, {"os-extend": {"new_size": 2}}, headers=mv("3.42")
    )
    assert status == 400
    assert_error(body, "badRequest", 400, "this cloud's file backend does not extend an attached volume")
    status, body = await act(
        cloud, project, token, attached, {"os-extend": {"new_size": 2}}, headers=mv("3.41")
    )
    assert status == 400
    assert_error(body, "badRequest", 400, "to extend, currently in-use.")
    never_made = await insert_volume(pool, project)  # reset to available after a failed create
    status, body = await act(cloud, project, token, never_made, {"os-extend": {"new_size": 2}})
    assert status == 400
    assert_error(body, "badRequest", 400, "has no storage on a backend")


async def test_a_real_extension_is_never_seen_available_at_the_old_size(
    cloud: Cloud,
    project: Credentials,
    storage: None,
) -> None:
    """tempest's wait: `available` after the 202 means the new size (Cinder sets extending in the call)."""
    token = await cloud.token(project)
    volume_id = cloud.openstack("volume", "create", "--size", "1", unique("ext"), who=project)["id"]
    wait_volume(cloud, volume_id, project, status="available")
    assert (await act(cloud, project, token, volume_id, {"os-extend": {"new_size": 2}}))[0] == 202
    volume = await show(cloud, project, token, volume_id)
    assert (volume["status"], volume["size"]) in {("extending", 1), ("available", 2)}, volume
    volume = await until(cloud, project, token, volume_id, "available")
    assert volume["size"] == 2


async def test_the_summary_counts_the_projects_volumes(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    await insert_volume(pool, project, size=2, metadata={"tier": "gold", "team": "a"})
    await insert_volume(pool, project, size=3, metadata={"tier": "silver"})
    await insert_volume(pool, project, size=5, status="error", metadata={"tier": "gold"})
    path = volumes_path(project, "/summary")
    status, body, _ = await cloud.request("GET", path, token=token, headers=mv("3.36"))
    assert status == 200
    assert body == {
        "volume-summary": {
            "total_count": 3,
            "total_size": 10,
            "metadata": {"team": ["a"], "tier": ["gold", "silver"]},
        }
    }
    status, body, _ = await cloud.request("GET", path + "?name=ignored", token=token, headers=mv("3.12"))
    assert body == {"volume-summary": {"total_count": 3, "total_size": 10}}  # no metadata before 3.36
    status, body, _ = await cloud.request("GET", path, token=token, headers=mv("3.11"))
    assert status == 404
    summary = cloud.openstack("volume", "summary", "--os-volume-api-version", "3.12", who=project)
    assert (summary["Total Count"], summary["Total Size"]) == (3, 10)
    # An admin sees its own project's, or with all_tenants everyone's.
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{admin_project}/volumes/summary?all_tenants=1", headers=mv("3.12")
    )
    assert body["volume-summary"]["total_count"] >= 3


async def test_a_volume_from_a_source_that_does_not_exist_is_not_found(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    token = await cloud.token(project)
    missing = str(uuid.uuid4())
    other = await cloud.new_member("other")
    theirs = await insert_volume(pool, other)
    for field, text in (
        ("snapshot_id", f"Snapshot {missing} could not be found."),
        ("source_volid", f"Volume {missing} could not be found."),
        ("backup_id", f"Backup {missing} could not be found."),
    ):
        status, body, _ = await cloud.request(
            "POST", volumes_path(project), token=token, json={"volume": {"size": 1, field: missing}}
        )
        assert status == 404, body
        assert_error(body, "itemNotFound", 404, text)
    status, body, _ = await cloud.request(
        "POST", volumes_path(project), token=token, json={"volume": {"size": 1, "source_volid": theirs}}
    )
    assert status == 404  # another project's volume is not seen
    mine = await insert_volume(pool, project)
    status, body, _ = await cloud.request(
        "POST", volumes_path(project), token=token, json={"volume": {"size": 1, "source_volid": mine}}
    )
    assert status == 400
    assert_error(
        body, "badRequest", 400, "Cloning a volume (source_volid) is not supported by this cloud yet."
    )
    err = cloud.openstack_fails(
        "volume", "create", "--size", "1", "--snapshot", missing, unique("v"), who=project
    )
    assert f"No Snapshot found for {missing}" in err.stderr  # the CLI looks the snapshot up first
    assert await count_volumes(pool, project) == 1
    await pool.execute("DELETE FROM volumes WHERE id = $1", theirs)
