"""What a client fetches beside volumes: snapshots, backups, transfers, groups and group
snapshots (none in this cloud: empty lists, Cinder's 404s, creates answered as Cinder answers what
a deployment lacks), attachments (read from the volumes' rows), the extensions list, and Cinder's
404 for a volume path without an id — through raw HTTP and the real `openstack` CLI."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api import test_volumes
from tests.api.conftest import Cloud, Credentials
from tests.api.test_volumes import assert_error, count_volumes, insert_volume, mv

project = test_volumes.project
admin_project = test_volumes.admin_project


def base(who: Credentials, tail: str) -> str:
    return f"/volume/v3/{who.project_id}/{tail}"


async def test_the_collections_this_cloud_has_none_of_list_empty(cloud: Cloud, project: Credentials) -> None:
    token = await cloud.token(project)
    latest = mv("3.70")
    missing = str(uuid.uuid4())
    for path, key, noun in (
        ("snapshots", "snapshots", "Snapshot"),
        ("backups", "backups", "Backup"),
        ("os-volume-transfer", "transfers", "Transfer"),
        ("volume-transfers", "transfers", "Transfer"),
        ("groups", "groups", "Group"),
        ("group_snapshots", "group_snapshots", "GroupSnapshot"),
    ):
        for tail in (path, f"{path}/detail"):
            status, body, _ = await cloud.request("GET", base(project, tail), token=token, headers=latest)
            assert (status, body) == (200, {key: []}), (tail, body)
        for method in ("GET", "PUT", "DELETE"):
            status, body, _ = await cloud.request(
                method, base(project, f"{path}/{missing}"), token=token, headers=latest, json={}
            )
            assert status == 404, (method, path, body)
            assert_error(body, "itemNotFound", 404, f"{noun} {missing} could not be found.")
    status, body, _ = await cloud.request("GET", base(project, "group_types"), token=token, headers=latest)
    assert (status, body) == (200, {"group_types": []})
    # Each from the microversion that brought it, as Cinder.
    for path, before in (("groups", "3.12"), ("group_snapshots", "3.13"), ("volume-transfers", "3.54")):
        status, body, _ = await cloud.request("GET", base(project, path), token=token, headers=mv(before))
        assert status == 404, (path, body)


async def test_creating_what_this_cloud_lacks_is_answered_as_cinder_does(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    token = await cloud.token(project)
    latest = mv("3.70")
    volume_id = await insert_volume(pool, project)
    missing = str(uuid.uuid4())
    cases: list[tuple[str, Any, int, str]] = [
        ("snapshots", {"snapshot": {"volume_id": missing}}, 404, f"Volume {missing} could not be found."),
        ("snapshots", {"snapshot": {"volume_id": volume_id}}, 400, "Volume snapshots are not supported"),
        ("snapshots", {"snapshot": {}}, 400, "'volume_id' is a required property"),
        ("snapshots", {"snapshot": {"volume_id": "v1"}}, 400, "'v1' is not a 'uuid'"),
        ("backups", {"backup": {"volume_id": volume_id}}, 404, "Service cinder-backup could not be found."),
        (
            "os-volume-transfer",
            {"transfer": {"volume_id": volume_id}},
            400,
            "Volume transfers are not supported",
        ),
        (
            "volume-transfers",
            {"transfer": {"volume_id": missing}},
            404,
            f"Volume {missing} could not be found.",
        ),
        ("os-volume-transfer", [], 400, "'transfer' is a required property"),
        ("groups", {"group": {"group_type": missing, "volume_types": []}}, 404, f"Group type {missing}"),
        (
            "group_snapshots",
            {"group_snapshot": {"group_id": missing}},
            404,
            f"Group {missing} could not be found.",
        ),
        (f"os-volume-transfer/{missing}/accept", {"accept": {"auth_key": "k"}}, 404, f"Transfer {missing}"),
    ]
    for path, document, code, text in cases:
        status, body, _ = await cloud.request(
            "POST", base(project, path), token=token, headers=latest, json=document
        )
        assert status == code, (path, document, body)
        assert_error(body, "itemNotFound" if code == 404 else "badRequest", code, text)
    assert await count_volumes(pool, project) == 1
    assert await pool.fetchval("SELECT status FROM volumes WHERE id = $1", volume_id) == "available"

    reader = await cloud.new_member("reader", role="reader")
    status, body, _ = await cloud.request(
        "POST",
        base(reader, "snapshots"),
        token=await cloud.token(reader),
        json={"snapshot": {"volume_id": missing}},
    )
    assert status == 403, body


async def test_the_cli_lists_snapshots_backups_transfers_and_extensions(
    cloud: Cloud, project: Credentials
) -> None:
    for command in (
        ("volume", "snapshot", "list"),
        ("volume", "snapshot", "list", "--long"),
        ("volume", "backup", "list"),
        ("volume", "transfer", "request", "list"),
        ("volume", "attachment", "list", "--os-volume-api-version", "3.27"),
        ("volume", "group", "list", "--os-volume-api-version", "3.13"),
    ):
        assert cloud.openstack(*command, who=project) == [], command
    missing = str(uuid.uuid4())
    err = cloud.openstack_fails("volume", "backup", "show", missing, who=project)
    assert f"No Backup found for {missing}" in err.stderr
    aliases = {e["Alias"] for e in cloud.openstack("extension", "list", "--volume", who=project)}
    assert {"os-volume-actions", "os-vol-tenant-attr", "os-availability-zone", "os-quota-sets"} <= aliases
    assert not aliases & {"backups", "os-volume-transfer", "consistencygroups", "qos-specs"}


async def test_extensions_are_listed_and_shown_as_cinder_shows_them(
    cloud: Cloud, project: Credentials
) -> None:
    token = await cloud.token(project)
    status, body, _ = await cloud.request("GET", base(project, "extensions"), token=token)
    assert status == 200
    extensions = {e["alias"]: e for e in body["extensions"]}
    assert extensions["os-volume-actions"] == {
        "alias": "os-volume-actions",
        "name": "VolumeActions",
        "description": "Enable volume actions.",
        "updated": "2012-05-31T00:00:00+00:00",
        "links": [],
    }
    status, body, _ = await cloud.request("GET", base(project, "extensions/OS-SCH-HNT"), token=token)
    assert status == 200 and body["extension"]["name"] == "SchedulerHints"
    status, body, _ = await cloud.request("GET", base(project, "extensions/backups"), token=token)
    assert status == 404


async def test_attachments_are_read_from_the_volumes(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    server, booting = str(uuid.uuid4()), str(uuid.uuid4())
    attached = await insert_volume(pool, project, status="in-use", attached_to=server)
    reserved = await insert_volume(pool, project, status="reserved", attached_to=booting)
    await insert_volume(pool, project)  # not attached: no attachment
    ids = {
        v: await pool.fetchval("SELECT attachment->>'id' FROM volumes WHERE id = $1", v)
        for v in (attached, reserved)
    }
    at = mv("3.27")
    status, body, _ = await cloud.request("GET", base(project, "attachments"), token=token, headers=at)
    assert status == 200
    assert sorted(body["attachments"], key=lambda a: a["volume_id"] != attached) == [
        {"id": ids[attached], "status": "attached", "instance": server, "volume_id": attached},
        {"id": ids[reserved], "status": "reserved", "instance": booting, "volume_id": reserved},
    ]
    status, body, _ = await cloud.request(
        "GET", base(project, f"attachments/detail?instance_id={server}"), token=token, headers=at
    )
    assert body["attachments"] == [
        {
            "id": ids[attached],
            "status": "attached",
            "instance": server,
            "volume_id": attached,
            "attached_at": "2026-01-02T03:04:05.678901",
            "detached_at": None,
            "attach_mode": "rw",
            "connection_info": None,
        }
    ]
    status, body, _ = await cloud.request(
        "GET", base(project, "attachments?status=reserved"), token=token, headers=at
    )
    assert [a["volume_id"] for a in body["attachments"]] == [reserved]
    status, body, _ = await cloud.request(
        "GET", base(project, f"attachments/{ids[attached]}"), token=token, headers=at
    )
    assert status == 200 and body["attachment"]["volume_id"] == attached
    status, body, _ = await cloud.request(
        "GET", base(project, "attachments?limit=1"), token=token, headers=at
    )
    assert len(body["attachments"]) == 1
    # Another project's attachment is not seen; below 3.27 there is no such resource.
    other = await cloud.new_member("other")
    status, body, _ = await cloud.request(
        "GET", base(other, f"attachments/{ids[attached]}"), token=await cloud.token(other), headers=at
    )
    assert status == 404
    status, body, _ = await cloud.request(
        "GET", base(project, "attachments"), token=token, headers=mv("3.26")
    )
    assert status == 404
    # Cinder's new attach flow is not offered: refused with the way that is.
    status, body, _ = await cloud.request(
        "POST",
        base(project, "attachments"),
        token=token,
        headers=at,
        json={"attachment": {"volume_uuid": attached}},
    )
    assert status == 400
    assert_error(body, "badRequest", 400, "os-reserve, os-attach and os-detach")
    status, body, _ = await cloud.request(
        "DELETE", base(project, f"attachments/{ids[attached]}"), token=token, headers=at
    )
    assert status == 400
    assert await pool.fetchval("SELECT status FROM volumes WHERE id = $1", attached) == "in-use"


async def test_a_volume_path_without_an_id_is_not_found(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    token = await cloud.token(project)
    await insert_volume(pool, project)
    for method, document in (("GET", None), ("PUT", {"volume": {"name": "n"}}), ("DELETE", None)):
        status, body, _ = await cloud.request(method, base(project, "volumes/"), token=token, json=document)
        assert status == 404, (method, body)
        assert_error(body, "itemNotFound", 404)
    status, body, _ = await cloud.request(
        "POST", base(project, "volumes//action"), token=token, json={"os-extend": {"new_size": 2}}
    )
    assert status == 404


async def test_the_volume_lists_describe_their_parameters_and_take_any_value(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    status, document, _ = await cloud.request("GET", "/openapi.json", who=False)
    paths = document["paths"]

    def query_names(path: str) -> set[str]:
        return {p["name"] for p in paths[path]["get"].get("parameters", []) if p["in"] == "query"}

    assert {
        "name",
        "status",
        "bootable",
        "size",
        "metadata",
        "limit",
        "offset",
        "marker",
        "sort",
        "with_count",
    } <= (query_names("/volume/v3/{project_id}/volumes/detail"))
    assert {"volume_id", "instance_id", "status", "limit"} <= query_names(
        "/volume/v3/{project_id}/attachments"
    )
    assert query_names("/volume/v3/{project_id}/volumes/summary") == {"all_tenants"}
    assert {"limit", "marker"} <= query_names("/volume/v3/{project_id}/snapshots/detail")

    token = await cloud.token(project)
    await insert_volume(pool, project, size=2, metadata={"k": "v"})
    for query, code in (
        (f"size={10**30}", 200),  # past int4: matches nothing
        ("size=-1", 400),
        ("metadata=" + "(" * 5000, 400),  # nested past the parser's depth: bad input, not a 500
        ("metadata=" + "[" * 5000, 400),
        ("limit=" + "9" * 40, 200),
        ("sort=name:sideways", 400),
    ):
        status, body, _ = await cloud.request("GET", base(project, f"volumes/detail?{query}"), token=token)
        assert status == code, (query, body)
    status, body, _ = await cloud.request("GET", base(project, f"volumes?size={10**30}"), token=token)
    assert body["volumes"] == []
