"""Block Storage v3 volumes through the real `openstack` CLI and raw HTTP: what the API itself
answers (the view at each microversion, lists and their filters, updates, metadata, actions,
quotas, placement on a backend, visibility, bad input), independent of the volume actor and the
storage agents. Where a test needs a volume in a given state it writes the row itself, as the
actor would; a row such a test writes names no real backend, so nothing outside the database is
ever asked to act on it. Lifecycle tests that need the actor and a storage agent are in
test_volumes_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.api.conftest import Cloud, Credentials

GiB = 1024**3
DEFAULT_TYPE_ID = "5f0b2d2e-4c57-4a43-9f2b-9b1a6c0d3e11"
LATEST = {"OpenStack-API-Version": "volume 3.70"}
DELETE_REFUSED = (
    "Invalid volume: Volume status must be available or error or error_restoring or error_extending "
    "or error_managing and must not be migrating, attached, belong to a group, have snapshots, "
    "awaiting a transfer, or be disassociated from snapshots after volume transfer."
)
# The keys of a volume in a create (or update) answer at 3.70, for a member (Cinder's sample).
CREATE_KEYS = {
    "id",
    "status",
    "size",
    "availability_zone",
    "created_at",
    "updated_at",
    "name",
    "description",
    "volume_type",
    "snapshot_id",
    "source_volid",
    "metadata",
    "links",
    "user_id",
    "bootable",
    "encrypted",
    "replication_status",
    "consistencygroup_id",
    "multiattach",
    "attachments",
    "group_id",
    "shared_targets",
    "service_uuid",
    "volume_type_id",
    "consumes_quota",
}
ADMIN_KEYS = {"migration_status", "provider_id", "cluster_name"}
SHOW_KEYS = {"os-vol-tenant-attr:tenant_id"}
ADMIN_SHOW_KEYS = {
    "os-vol-host-attr:host",
    "os-vol-mig-status-attr:migstat",
    "os-vol-mig-status-attr:name_id",
}


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def mv(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"volume {version}"}


def volumes_path(who: Credentials, tail: str = "") -> str:
    return f"/volume/v3/{who.project_id}/volumes{tail}"


async def create_volume(cloud: Cloud, who: Credentials, token: str, **fields: Any) -> dict[str, Any]:
    status, body, _ = await cloud.request(
        "POST", volumes_path(who), token=token, headers=LATEST, json={"volume": {"size": 1, **fields}}
    )
    assert status == 202, body
    return body["volume"]


def assert_error(body: Any, fault: str, code: int, text: str = "") -> None:
    """Cinder's error body: {fault: {"code", "message"}}, the message containing `text`."""
    assert set(body) == {fault}, body
    assert body[fault]["code"] == code, body
    assert text in body[fault]["message"], body


async def count_volumes(pool: Any, who: Credentials) -> int:
    return await pool.fetchval("SELECT count(*) FROM volumes WHERE project_id = $1", who.project_id)


async def insert_volume(
    pool: Any,
    who: Credentials,
    *,
    status: str = "available",
    size: int = 1,
    name: str | None = None,
    attached_to: str | None = None,
    on_backend: bool = False,
    **columns: Any,
) -> str:
    """A volume row as the actor would leave it. `on_backend`: with a backend and a provider
    location that name nothing real, so a message the actor sends on about it goes nowhere."""
    volume_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": volume_id,
        "project_id": who.project_id,
        "user_id": who.user_id or "someone",
        "name": name or unique("row"),
        "size": size,
        "status": status,
        **columns,
    }
    if attached_to:
        values.update(
            attach_status="attached",
            attachment={
                "id": str(uuid.uuid4()),
                "server_id": attached_to,
                "device": "/dev/vdb",
                "host": "node-1",
                "mode": "rw",
                "delete_on_termination": False,
                "attached_at": "2026-01-02T03:04:05.678901+00:00",
            },
        )
    if on_backend:
        values.update(backend=unique("nowhere"), provider_location="/nonexistent/volume")
    names = ", ".join(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await pool.execute(f"INSERT INTO volumes ({names}) VALUES ({placeholders})", *values.values())
    return volume_id


async def version_of(pool: Any, volume_id: str) -> int:
    return await pool.fetchval("SELECT version FROM volumes WHERE id = $1", volume_id)


@pytest.fixture
async def project(cloud: Cloud, pool: Any) -> AsyncIterator[Credentials]:
    """A fresh project with a member; its volumes are removed afterwards: through the API where
    the storage agent made a real one (its file goes too), as rows where a test wrote the row."""
    who = await cloud.new_member("vol")
    yield who
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await pool.fetchval(
        "SELECT count(*) FROM volumes v JOIN volume_backends b ON b.name = v.backend "
        "WHERE v.project_id = $1 AND v.status = 'creating'",
        who.project_id,
    ):
        assert loop.time() < deadline, "the test's volumes are still being created"
        await asyncio.sleep(0.2)  # a volume being made: its file must be deleted with it
    real = await pool.fetch(
        "SELECT id FROM volumes WHERE project_id = $1 AND provider_location LIKE $2",
        who.project_id,
        f"{cloud.state_dir}/%",
    )
    token = await cloud.token(who)
    for row in real:
        await pool.execute(
            "UPDATE volumes SET status = 'available', attachment = NULL, attach_status = 'detached', "
            "version = version + 1 WHERE id = $1 AND status NOT IN ('deleting', 'creating')",
            row["id"],
        )
        await cloud.request("DELETE", f"/volume/v3/{who.project_id}/volumes/{row['id']}", token=token)
    deadline = loop.time() + 30
    while real and await pool.fetchval(
        "SELECT count(*) FROM volumes WHERE id = ANY($1::text[])", [r["id"] for r in real]
    ):
        assert loop.time() < deadline, "the test's volumes were not deleted"
        await asyncio.sleep(0.2)
    await pool.execute("DELETE FROM volumes WHERE project_id = $1", who.project_id)


@pytest.fixture(scope="module")
def admin_project(cloud: Cloud) -> str:
    return cloud.openstack("project", "show", cloud.admin.project)["id"]


@pytest.fixture
async def backends(pool: Any) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Make storage backend rows (as storage agents keep them); removed afterwards, with the
    volume rows placed on them."""
    made: list[str] = []

    async def add(
        zone: str,
        *,
        name: str | None = None,
        total: int = 100,
        allocated: int = 0,
        enabled: bool = True,
        silent_for: float = 0,
    ) -> str:
        name = name or unique("backend")
        await pool.execute(
            "INSERT INTO volume_backends (name, driver, availability_zone, total_gb, allocated_gb, enabled, "
            "heartbeat_at) VALUES ($1, 'file', $2, $3, $4, $5, now() - make_interval(secs => $6))",
            name,
            zone,
            total,
            allocated,
            enabled,
            silent_for,
        )
        made.append(name)
        return name

    yield add
    await pool.execute("DELETE FROM volumes WHERE backend = ANY($1::text[])", made)
    await pool.execute("DELETE FROM volume_backends WHERE name = ANY($1::text[])", made)


# --- the view --------------------------------------------------------------------------------------


async def test_create_answers_202_with_cinders_view_at_each_microversion(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    status, body, headers = await cloud.request(
        "POST",
        volumes_path(project),
        token=token,
        headers=LATEST,
        json={
            "volume": {
                "size": 1,
                "name": "  first  ",
                "description": "the first",
                "metadata": {"tier": "gold"},
                "volume_type": "__DEFAULT__",
            },
            "OS-SCH-HNT:scheduler_hints": {},
        },
    )
    assert status == 202, body
    assert headers["OpenStack-API-Version"] == "volume 3.70"
    volume = body["volume"]
    assert set(volume) == CREATE_KEYS
    assert volume["status"] == "creating" and volume["size"] == 1 and volume["name"] == "first"
    assert volume["description"] == "the first" and volume["metadata"] == {"tier": "gold"}
    assert volume["volume_type"] == "__DEFAULT__" and volume["volume_type_id"] == DEFAULT_TYPE_ID
    assert volume["bootable"] == "false" and volume["encrypted"] is False and volume["multiattach"] is False
    assert volume["attachments"] == [] and volume["user_id"] == project.user_id
    assert (
        volume["consumes_quota"] is True and volume["group_id"] is None and volume["shared_targets"] is False
    )
    assert volume["snapshot_id"] is None and volume["source_volid"] is None
    assert volume["links"][0]["href"].endswith(f"/volume/v3/{project.project_id}/volumes/{volume['id']}")
    assert volume["links"][1]["href"].endswith(f"/volume/{project.project_id}/volumes/{volume['id']}")
    row = await pool.fetchrow("SELECT * FROM volumes WHERE id = $1", volume["id"])
    assert row["project_id"] == project.project_id and row["user_id"] == project.user_id
    assert row["size"] == 1 and row["metadata"] == {"tier": "gold"} and row["bootable"] is False

    status, body, _ = await cloud.request(
        "GET", volumes_path(project, f"/{volume['id']}"), token=token, headers=LATEST
    )
    shown = body["volume"]
    assert status == 200 and set(shown) == CREATE_KEYS | SHOW_KEYS
    assert shown["os-vol-tenant-attr:tenant_id"] == project.project_id
    assert shown["status"] in ("creating", "available", "error")  # the actor may have moved on

    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{admin_project}/volumes/{volume['id']}", headers=LATEST
    )
    assert status == 200 and set(body["volume"]) == CREATE_KEYS | SHOW_KEYS | ADMIN_KEYS | ADMIN_SHOW_KEYS

    status, body, headers = await cloud.request("GET", volumes_path(project, f"/{volume['id']}"), token=token)
    assert headers["OpenStack-API-Version"] == "volume 3.0"
    assert not {"group_id", "volume_type_id", "consumes_quota", "shared_targets"} & set(body["volume"])
    status, body, _ = await cloud.request(
        "GET",
        volumes_path(project, f"/{volume['id']}"),
        token=token,
        headers={"OpenStack-API-Version": "compute 2.1, volume 3.13"},
    )
    assert "group_id" in body["volume"] and "volume_type_id" not in body["volume"]

    status, body, _ = await cloud.request("GET", volumes_path(project), token=token, headers=mv("3.x"))
    assert status == 400 and "is of invalid format" in body["badRequest"]["message"]
    status, body, headers = await cloud.request("GET", volumes_path(project), token=token, headers=mv("3.71"))
    assert status == 406 and headers["OpenStack-API-Version"] == "volume 3.71"
    assert "Minimum is 3.0 and maximum is 3.70" in body[next(iter(body))]["message"]
    status, _, headers = await cloud.request("GET", volumes_path(project), token=token, headers=mv("latest"))
    assert status == 200 and headers["OpenStack-API-Version"] == "volume 3.70"


async def test_the_cli_creates_shows_lists_and_updates_volumes(cloud: Cloud, project: Credentials) -> None:
    name = unique("vol")
    created = cloud.openstack(
        "volume",
        "create",
        "--size",
        "1",
        "--description",
        "made by the CLI",
        "--property",
        "tier=gold",
        "--type",
        "__DEFAULT__",
        "--availability-zone",
        "nova",
        name,
        who=project,
    )
    assert created["name"] == name and created["size"] == 1 and created["status"] == "creating"
    assert created["type"] == "__DEFAULT__" and created["properties"] == {"tier": "gold"}
    assert created["availability_zone"] == "nova" and created["bootable"] is False

    shown = cloud.openstack("volume", "show", name, who=project)  # found by name through the list
    assert shown["id"] == created["id"] and shown["description"] == "made by the CLI"
    assert shown["os-vol-tenant-attr:tenant_id"] == project.project_id
    listed = cloud.openstack("volume", "list", who=project)
    assert [(v["ID"], v["Name"], v["Size"]) for v in listed] == [(created["id"], name, 1)]
    long = cloud.openstack("volume", "list", "--long", who=project)
    assert long[0]["Type"] == "__DEFAULT__" and long[0]["Bootable"] is False
    assert long[0]["Properties"] == {"tier": "gold"}

    cloud.openstack(
        "volume",
        "set",
        "--name",
        f"{name}-2",
        "--description",
        "renamed",
        "--property",
        "owner=me",
        "--bootable",
        name,
        who=project,
        fmt=None,
    )
    shown = cloud.openstack("volume", "show", created["id"], who=project)
    assert shown["name"] == f"{name}-2" and shown["description"] == "renamed" and shown["bootable"] is True
    assert shown["properties"] == {"tier": "gold", "owner": "me"}
    cloud.openstack("volume", "unset", "--property", "tier", created["id"], who=project, fmt=None)
    cloud.openstack("volume", "set", "--non-bootable", created["id"], who=project, fmt=None)
    shown = cloud.openstack("volume", "show", created["id"], who=project)
    assert shown["properties"] == {"owner": "me"} and shown["bootable"] is False


# --- lists ---------------------------------------------------------------------------------------------


async def test_lists_filter_sort_and_page_like_cinder(cloud: Cloud, project: Credentials, pool: Any) -> None:
    token = await cloud.token(project)
    made = {}
    for index, (label, status, size, bootable, metadata) in enumerate(
        (
            ("alpha", "available", 1, False, {"tier": "gold"}),
            ("beta", "in-use", 2, True, {"tier": "gold", "env": "prod"}),
            ("gamma", "error", 3, False, {}),
            ("alphabet", "available", 1, True, {"env": "prod"}),
        )
    ):
        made[label] = await insert_volume(
            pool, project, name=label, status=status, size=size, bootable=bootable, metadata=metadata
        )
        await pool.execute(
            "UPDATE volumes SET created_at = '2026-01-01'::timestamptz + make_interval(secs => $2) "
            "WHERE id = $1",
            made[label],
            index,
        )

    async def names(query: str = "", version: str = "3.70") -> list[str]:
        status, body, _ = await cloud.request(
            "GET", volumes_path(project, f"/detail{query}"), token=token, headers=mv(version)
        )
        assert status == 200, body
        return [v["name"] for v in body["volumes"]]

    assert await names() == ["alphabet", "gamma", "beta", "alpha"]  # newest first
    assert await names("?name=alpha") == ["alpha"]
    assert await names("?name~=alpha") == ["alphabet", "alpha"]
    assert await names("?status=available") == ["alphabet", "alpha"]
    assert await names("?bootable=true") == ["alphabet", "beta"]
    assert await names("?size=1") == ["alphabet", "alpha"]
    assert await names("?metadata=" + "{'tier': 'gold'}") == ["beta", "alpha"]
    assert await names("?metadata=" + json.dumps({"tier": "gold", "env": "prod"})) == ["beta"]
    assert await names("?availability_zone=nova&status=error") == ["gamma"]
    assert await names("?sort=size:asc,name:desc") == ["alphabet", "alpha", "beta", "gamma"]
    assert await names("?sort_key=name&sort_dir=asc") == ["alpha", "alphabet", "beta", "gamma"]
    assert await names("?sort=name") == ["gamma", "beta", "alphabet", "alpha"]  # desc by default
    assert await names("?created_at=gte:2026-01-01T00:00:02Z") == ["alphabet", "gamma"]
    assert await names("?created_at=lt:2026-01-01T00:00:01&status=available") == ["alpha"]
    assert await names("?migration_status=migrating") == [] and await names("?group_id=g1") == []
    # A filter Cinder does not take: before 3.33 dropped, as Cinder drops it; from 3.33 refused;
    # a member's all_tenants is dropped in both (clients send it).
    assert await names("?not_a_filter=1", version="3.32") == ["alphabet", "gamma", "beta", "alpha"]
    assert await names("?all_tenants=1") == ["alphabet", "gamma", "beta", "alpha"]
    for refused in ("not_a_filter=1", "user_id=u", "project_id=p"):
        status, body, _ = await cloud.request(
            "GET", volumes_path(project, f"/detail?{refused}"), token=token, headers=mv("3.33")
        )
        assert status == 400, (refused, body)
        assert_error(
            body, "badRequest", 400, f"Invalid filters {refused.split('=')[0]} are found in query options."
        )
    # An admin may filter on any of Cinder's columns; a name that is none of them finds nothing.
    admin = await cloud.token(cloud.admin)
    status, body, _ = await cloud.request(
        "GET", "/identity/v3/auth/tokens", token=admin, headers={"X-Subject-Token": admin}
    )
    admin_project = body["token"]["project"]["id"]
    for query, expected in (
        ("not_a_column=1", []),
        ("display_name=beta", ["beta"]),
        ("attach_status=detached&name~=alpha", ["alphabet", "alpha"]),
        ("multiattach=true", []),
    ):
        status, body, _ = await cloud.request(
            "GET",
            f"/volume/v3/{admin_project}/volumes/detail?project_id={project.project_id}&{query}",
            token=admin,
            headers=mv("3.70"),
        )
        assert status == 200 and [v["name"] for v in body["volumes"]] == expected, (query, body)

    status, body, _ = await cloud.request("GET", volumes_path(project, "/detail?limit=2"), token=token)
    assert [v["name"] for v in body["volumes"]] == ["alphabet", "gamma"]
    (link,) = body["volumes_links"]
    assert link["rel"] == "next" and f"marker={made['gamma']}" in link["href"]
    status, body, _ = await cloud.request("GET", link["href"].split(cloud.url, 1)[1], token=token)
    assert [v["name"] for v in body["volumes"]] == ["beta", "alpha"] and "volumes_links" in body
    assert await names(f"?marker={made['beta']}") == ["alpha"]
    assert await names("?offset=1&limit=2") == ["gamma", "beta"]
    # a marker the filters leave out still marks its place in the order
    assert await names(f"?status=available&marker={made['gamma']}") == ["alpha"]

    status, body, _ = await cloud.request(
        "GET", volumes_path(project, "?with_count=true"), token=token, headers=mv("3.45")
    )
    assert body["count"] == 4 and set(body["volumes"][0]) == {"id", "name", "links"}
    status, body, _ = await cloud.request(
        "GET", volumes_path(project, "?with_count=true&limit=1"), token=token, headers=mv("3.44")
    )
    assert "count" not in body and len(body["volumes"]) == 1

    for query, fault, code, text in (
        ("?sort=colour:asc", "badRequest", 400, "Invalid sort key"),
        ("?sort=name:sideways", "badRequest", 400, 'Unknown sort direction, must be "desc" or "asc"'),
        ("?sort=name&sort_key=size", "badRequest", 400, "cannot be used with the 'sort' parameter"),
        ("?limit=many", "badRequest", 400, "limit param must be an integer"),
        ("?limit=-1", "badRequest", 400, "limit param must be positive"),
        ("?bootable=maybe", "badRequest", 400, "Invalid value 'maybe' for bootable"),
        ("?metadata=tier", "badRequest", 400, "Invalid metadata filter"),
        ("?created_at=gt:yesterday", "badRequest", 400, "Invalid created_at filter"),
        (f"?marker={uuid.uuid4()}", "itemNotFound", 404, "could not be found"),
    ):
        status, body, _ = await cloud.request("GET", volumes_path(project, f"/detail{query}"), token=token)
        assert status == code, (query, body)
        assert_error(body, fault, code, text)

    # The CLI's filters, and its paging through openstacksdk (a marker per page).
    listed = cloud.openstack("volume", "list", "--status", "available", who=project)
    assert [v["Name"] for v in listed] == ["alphabet", "alpha"]
    listed = cloud.openstack("volume", "list", "--property", "env=prod", "--long", who=project)
    assert {v["Name"] for v in listed} == {"alphabet", "beta"}
    listed = cloud.openstack("volume", "list", "--name", "gamma", who=project)
    assert [v["Status"] for v in listed] == ["error"]
    # openstacksdk follows the next links page by page (a marker each time) to the end
    listed = cloud.openstack("volume", "list", "--limit", "1", who=project)
    assert [v["Name"] for v in listed] == ["alphabet", "gamma", "beta", "alpha"]


# --- updates and metadata -------------------------------------------------------------------------------


async def test_updates_and_metadata_bump_the_version(cloud: Cloud, project: Credentials, pool: Any) -> None:
    token = await cloud.token(project)
    volume_id = await insert_volume(pool, project, name="before", metadata={"a": "1"})
    path = volumes_path(project, f"/{volume_id}")
    version = await version_of(pool, volume_id)

    status, body, _ = await cloud.request(
        "PUT",
        path,
        token=token,
        headers=LATEST,
        json={"volume": {"name": "after", "description": "described"}},
    )
    assert status == 200 and set(body["volume"]) == CREATE_KEYS
    assert body["volume"]["name"] == "after" and body["volume"]["description"] == "described"
    assert body["volume"]["metadata"] == {"a": "1"} and body["volume"]["updated_at"] is not None
    assert await version_of(pool, volume_id) == version + 1
    status, body, _ = await cloud.request(
        "PUT", path, token=token, json={"volume": {"display_description": "", "metadata": {"b": "2"}}}
    )
    assert (
        status == 200 and body["volume"]["description"] is None and body["volume"]["metadata"] == {"b": "2"}
    )
    assert body["volume"]["name"] == "after"

    for update, text in (
        ({"volume": {"size": 5}}, "Additional properties are not allowed ('size' unexpected)"),
        ({"volume": {}}, "does not have enough properties"),
        ({"volume": {"name": "x" * 256}}, "is too long"),
        ({"volume": {"name": 7}}, "is not of type 'string'"),
        ({"volume": {"metadata": {"a b*": "c"}}}, "Additional properties are not allowed"),
        ({"volume": {"metadata": {"k": 1}}}, "is not of type 'string'"),
        ({"server": {"name": "x"}}, "'volume' is a required property"),
    ):
        status, body, _ = await cloud.request("PUT", path, token=token, json=update)
        assert status == 400, (update, body)
        assert_error(body, "badRequest", 400, text)
    assert await version_of(pool, volume_id) == version + 2  # nothing changed by those

    meta = f"{path}/metadata"
    status, body, _ = await cloud.request("GET", meta, token=token)
    assert status == 200 and body == {"metadata": {"b": "2"}}
    status, body, _ = await cloud.request("POST", meta, token=token, json={"metadata": {"c": "3"}})
    assert status == 200 and body == {"metadata": {"b": "2", "c": "3"}}
    status, body, _ = await cloud.request("PUT", meta, token=token, json={"metadata": {"d": "4"}})
    assert status == 200 and body == {"metadata": {"d": "4"}}
    status, body, _ = await cloud.request("PUT", f"{meta}/e", token=token, json={"meta": {"e": "5"}})
    assert status == 200 and body == {"meta": {"e": "5"}}
    status, body, _ = await cloud.request("GET", f"{meta}/e", token=token)
    assert status == 200 and body == {"meta": {"e": "5"}}
    status, body, _ = await cloud.request("DELETE", f"{meta}/d", token=token)
    assert status == 200
    status, body, _ = await cloud.request("GET", meta, token=token)
    assert body == {"metadata": {"e": "5"}}
    assert await version_of(pool, volume_id) == version + 6
    for method, tail, document, code, text in (
        ("GET", "/nope", None, 404, f"Volume {volume_id} has no metadata with key nope."),
        ("DELETE", "/nope", None, 404, "has no metadata with key nope"),
        ("PUT", "/e", {"meta": {"f": "6"}}, 400, "Request body and URI mismatch"),
        ("PUT", "/e", {"meta": {"e": "5", "f": "6"}}, 400, "Request body contains too many items"),
        ("POST", "", {"meta": {"e": "5"}}, 400, "'metadata' is a required property"),
        ("POST", "", {"metadata": ["e"]}, 400, "is not of type 'object'"),
        ("PUT", "", {"metadata": {"": "x"}}, 400, "Additional properties are not allowed"),
    ):
        status, body, _ = await cloud.request(method, meta + tail, token=token, json=document)
        assert status == code, (method, tail, body)
        assert_error(body, "itemNotFound" if code == 404 else "badRequest", code, text)
    assert await version_of(pool, volume_id) == version + 6

    cloud.openstack("volume", "set", "--property", "f=6", volume_id, who=project, fmt=None)
    cloud.openstack("volume", "unset", "--property", "e", volume_id, who=project, fmt=None)
    assert cloud.openstack("volume", "show", volume_id, who=project)["properties"] == {"f": "6"}


# --- quotas --------------------------------------------------------------------------------------------


async def test_quotas_refuse_with_cinders_413_and_change_nothing(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    quota_path = f"/volume/v3/{admin_project}/os-quota-sets/{project.project_id}"

    async def set_quota(**values: int) -> None:
        status, body, _ = await cloud.request("PUT", quota_path, json={"quota_set": values})
        assert status == 200, body

    async def refused(size: int, text: str) -> None:
        before = await count_volumes(pool, project)
        status, body, _ = await cloud.request(
            "POST", volumes_path(project), token=token, json={"volume": {"size": size}}
        )
        assert status == 413, body
        assert_error(body, "overLimit", 413, text)
        assert await count_volumes(pool, project) == before

    await set_quota(volumes=2, gigabytes=5)
    await create_volume(cloud, project, token, size=3)
    await refused(
        3,
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes "
        "quota. Requested 3G, quota is 5G and 3G has been consumed.",
    )
    await create_volume(cloud, project, token, size=2)
    await set_quota(gigabytes=100)
    await refused(
        1, "VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota 'volumes'."
    )
    err = cloud.openstack_fails("volume", "create", "--size", "1", unique("over"), who=project)
    assert "413" in err.stderr and "VolumeLimitExceeded: Maximum number of volumes allowed (2)" in err.stderr

    await set_quota(volumes=10, per_volume_gigabytes=4)
    await refused(
        5, "VolumeSizeExceedsLimit: Requested volume size 5G is larger than maximum allowed limit 4G."
    )

    status, body, _ = await cloud.request("GET", f"/volume/v3/{project.project_id}/limits", token=token)
    absolute = body["limits"]["absolute"]
    assert (absolute["totalVolumesUsed"], absolute["totalGigabytesUsed"], absolute["maxTotalVolumes"]) == (
        2,
        5,
        10,
    )
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{project.project_id}/os-quota-sets/{project.project_id}?usage=True", token=token
    )
    assert body["quota_set"]["gigabytes"] == {"limit": 100, "in_use": 5, "reserved": 0}
    status, body, _ = await cloud.request("PUT", quota_path, json={"quota_set": {"gigabytes": 4}})
    assert (
        status == 400 and "must be equal or greater than existing resources" in body["badRequest"]["message"]
    )

    # Concurrent creates are counted one after the other: exactly the quota's worth succeed.
    await set_quota(volumes=5)
    answers = await asyncio.gather(
        *(
            cloud.request("POST", volumes_path(project), token=token, json={"volume": {"size": 1}})
            for _ in range(6)
        )
    )
    assert sorted(status for status, _, _ in answers) == [202, 202, 202, 413, 413, 413]
    assert await count_volumes(pool, project) == 5
    status, _, _ = await cloud.request("DELETE", quota_path)
    assert status == 200


# --- bad input -------------------------------------------------------------------------------------------


async def test_bad_create_requests_are_refused_in_cinders_shape_and_change_nothing(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    token = await cloud.token(project)
    missing_type = str(uuid.uuid4())
    missing_image = str(uuid.uuid4())
    for document, fault, code, text in (
        ({}, "badRequest", 400, "'volume' is a required property"),
        ({"volume": {"size": 1}, "extra": 1}, "badRequest", 400, "Additional properties are not allowed"),
        ({"volume": {}}, "badRequest", 400, "Volume size 'None' must be an integer and greater than 0"),
        ({"volume": {"size": 0}}, "badRequest", 400, "0 is less than the minimum of 1"),
        ({"volume": {"size": -1}}, "badRequest", 400, "is less than the minimum of 1"),
        ({"volume": {"size": "big"}}, "badRequest", 400, "Invalid input for field/attribute size"),
        ({"volume": {"size": 1.5}}, "badRequest", 400, "Invalid input for field/attribute size"),
        ({"volume": {"size": True}}, "badRequest", 400, "Invalid input for field/attribute size"),
        ({"volume": {"size": 1, "name": "n" * 256}}, "badRequest", 400, "is too long"),
        ({"volume": {"size": 1, "description": ["d"]}}, "badRequest", 400, "is not of type 'string'"),
        ({"volume": {"size": 1, "metadata": "a=b"}}, "badRequest", 400, "is not of type 'object'"),
        ({"volume": {"size": 1, "metadata": {"a*b": "c"}}}, "badRequest", 400, "Additional properties"),
        ({"volume": {"size": 1, "metadata": {"a": "c" * 256}}}, "badRequest", 400, "is too long"),
        ({"volume": {"size": 1, "colour": "red"}}, "badRequest", 400, "('colour' unexpected)"),
        (
            {"volume": {"size": 1, "volume_type": "gold"}},
            "itemNotFound",
            404,
            "Volume type with name gold could not be found.",
        ),
        (
            {"volume": {"size": 1, "volume_type": missing_type}},
            "itemNotFound",
            404,
            f"Volume type {missing_type} could not be found.",
        ),
        (
            {"volume": {"size": 1, "availability_zone": "atlantis"}},
            "badRequest",
            400,
            "Availability zone 'atlantis' is invalid.",
        ),
        (
            {"volume": {"size": 1, "imageRef": missing_image}},
            "itemNotFound",
            404,
            f"Image {missing_image} could not be found.",
        ),
        (
            {"volume": {"size": 1, "snapshot_id": missing_type}},
            "itemNotFound",
            404,
            f"Snapshot {missing_type}",
        ),
        (
            {"volume": {"size": 1, "source_volid": missing_type}},
            "itemNotFound",
            404,
            f"Volume {missing_type}",
        ),
        ({"volume": {"size": 1, "backup_id": missing_type}}, "itemNotFound", 404, f"Backup {missing_type}"),
        ({"volume": {"size": 1, "group_id": missing_type}}, "itemNotFound", 404, f"Group {missing_type}"),
        ({"volume": {"size": 1, "snapshot_id": "snap"}}, "badRequest", 400, "'snap' is not a 'uuid'"),
        (
            {"volume": {"size": 1, "multiattach": True}},
            "badRequest",
            400,
            "Multiattach volumes are not supported",
        ),
        ({"volume": {"size": 1, "multiattach": "perhaps"}}, "badRequest", 400, "multiattach"),
    ):
        status, body, _ = await cloud.request(
            "POST", volumes_path(project), token=token, headers=LATEST, json=document
        )
        assert status == code, (document, body)
        assert_error(body, fault, code, text)
    status, body, _ = await cloud.request(
        "POST",
        volumes_path(project),
        token=token,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and "badRequest" in body
    status, body, _ = await cloud.request(
        "POST", f"/volume/v3/{uuid.uuid4().hex}/volumes", token=token, json={"volume": {"size": 1}}
    )
    assert status == 400 and body["badRequest"]["message"] == "Malformed request url"
    assert await count_volumes(pool, project) == 0

    err = cloud.openstack_fails("volume", "create", "--size", "1", "--type", "gold", unique("v"), who=project)
    assert "Volume type with name gold could not be found." in err.stderr
    assert await count_volumes(pool, project) == 0


# --- images ------------------------------------------------------------------------------------------------


async def test_a_volume_from_an_image_is_bootable_and_carries_its_metadata(
    cloud: Cloud, project: Credentials, pool: Any, tmp_path: Any
) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\1" * (1024 * 1024))
    image = cloud.openstack(
        "image",
        "create",
        "--file",
        str(path),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--min-disk",
        "2",
        "--property",
        "hw_disk_bus=virtio",
        "--public",
        unique("img"),
    )
    status, queued, _ = await cloud.request(
        "POST",
        "/image/v2/images",
        json={
            "name": unique("queued"),
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
        },
    )
    assert status == 201 and queued["status"] == "queued"
    private = cloud.openstack(
        "image",
        "create",
        "--file",
        str(path),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--private",
        unique("private"),
    )
    token = await cloud.token(project)
    try:
        for ref, size, fault, code, text in (
            (
                image["id"],
                1,
                "badRequest",
                400,
                "Volume size 1GB cannot be smaller than the image minDisk size 2GB.",
            ),
            (queued["id"], 2, "badRequest", 400, f"Image {queued['id']} is not active."),
            (private["id"], 2, "itemNotFound", 404, f"Image {private['id']} could not be found."),
        ):
            status, body, _ = await cloud.request(
                "POST", volumes_path(project), token=token, json={"volume": {"size": size, "imageRef": ref}}
            )
            assert status == code, body
            assert_error(body, fault, code, text)
        await pool.execute("UPDATE images SET virtual_size = $2 WHERE id = $1", image["id"], 5 * GiB)
        status, body, _ = await cloud.request(
            "POST", volumes_path(project), token=token, json={"volume": {"size": 2, "imageRef": image["id"]}}
        )
        assert_error(
            body, "badRequest", 400, "Image virtual size is 5GB and doesn't fit in a volume of size 2GB."
        )
        await pool.execute("UPDATE images SET virtual_size = NULL WHERE id = $1", image["id"])
        assert await count_volumes(pool, project) == 0

        created = cloud.openstack(
            "volume", "create", "--image", image["name"], "--size", "2", unique("boot"), who=project
        )
        assert created["bootable"] is True and created["size"] == 2
        shown = cloud.openstack("volume", "show", created["id"], who=project)
        metadata = shown["volume_image_metadata"]
        assert metadata["image_id"] == image["id"] and metadata["image_name"] == image["name"]
        assert metadata["min_disk"] == "2" and metadata["size"] == str(1024 * 1024)
        assert metadata["disk_format"] == "raw" and metadata["container_format"] == "bare"
        assert metadata["hw_disk_bus"] == "virtio" and metadata["checksum"]
        row = await pool.fetchrow("SELECT image_id, bootable FROM volumes WHERE id = $1", created["id"])
        assert row["image_id"] == image["id"] and row["bootable"] is True

        cloud.openstack(
            "volume", "set", "--image-property", "os_distro=cirros", created["id"], who=project, fmt=None
        )
        cloud.openstack(
            "volume", "unset", "--image-property", "hw_disk_bus", created["id"], who=project, fmt=None
        )
        action = volumes_path(project, f"/{created['id']}/action")
        status, body, _ = await cloud.request(
            "POST", action, token=token, json={"os-show_image_metadata": None}
        )
        assert (
            status == 200
            and body["metadata"]["os_distro"] == "cirros"
            and "hw_disk_bus" not in body["metadata"]
        )
        status, body, _ = await cloud.request(
            "POST", action, token=token, json={"os-unset_image_metadata": {"key": "hw_disk_bus"}}
        )
        assert_error(body, "itemNotFound", 404, "Metadata item was not found.")
    finally:
        for made in (image, queued, private):
            cloud.openstack("image", "delete", made["id"], fmt=None)


# --- actions --------------------------------------------------------------------------------------


async def test_extend_is_checked_then_sent_to_the_actor(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    available = await insert_volume(pool, project, size=1, on_backend=True)
    busy = await insert_volume(
        pool, project, status="in-use", size=1, attached_to=str(uuid.uuid4()), on_backend=True
    )

    async def extend(volume_id: str, args: Any) -> tuple[int, Any]:
        status, body, _ = await cloud.request(
            "POST",
            volumes_path(project, f"/{volume_id}/action"),
            token=token,
            headers=LATEST,
            json={"os-extend": args},
        )
        return status, body

    versions = {v: await version_of(pool, v) for v in (available, busy)}
    for volume_id, args, text in (
        (
            available,
            {"new_size": 1},
            (
                "Invalid input received: New size for extend must be greater than current "
                "size. (current: 1, extended: 1)."
            ),
        ),
        (available, {"new_size": 0}, "0 is less than the minimum of 1"),
        (available, {"new_size": "two"}, "Invalid input for field/attribute new_size"),
        (available, {}, "'new_size' is a required property"),
        (available, {"new_size": 2, "force": True}, "Additional properties are not allowed"),
        (available, None, "is not of type 'object'"),
        (busy, {"new_size": 2}, f"Invalid volume: Volume {busy} is attached (in-use)"),
    ):
        status, body = await extend(volume_id, args)
        assert status == 400, (args, body)
        assert_error(body, "badRequest", 400, text)
    status, _, _ = await cloud.request(
        "PUT",
        f"/volume/v3/{admin_project}/os-quota-sets/{project.project_id}",
        json={"quota_set": {"gigabytes": 3}},
    )
    status, body = await extend(available, {"new_size": 5})
    assert status == 413
    assert_error(body, "overLimit", 413, "Requested 4G, quota is 3G and 2G has been consumed.")
    await cloud.request("DELETE", f"/volume/v3/{admin_project}/os-quota-sets/{project.project_id}")
    assert {v: await version_of(pool, v) for v in (available, busy)} == versions

    err = cloud.openstack_fails("volume", "set", "--size", "1", available, who=project)
    assert "New size must be greater than 1 GB" in err.stderr  # the CLI's own check
    cloud.openstack("volume", "set", "--size", "2", available, who=project, fmt=None)  # os-extend, 202


async def test_an_attachment_is_shown_as_cinder_shows_it(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    server = str(uuid.uuid4())
    volume_id = await insert_volume(pool, project, status="in-use", attached_to=server)
    attachment_id = await pool.fetchval("SELECT attachment->>'id' FROM volumes WHERE id = $1", volume_id)
    expected = {
        "id": volume_id,
        "attachment_id": attachment_id,
        "volume_id": volume_id,
        "server_id": server,
        "host_name": None,
        "device": "/dev/vdb",
        "attached_at": "2026-01-02T03:04:05.678901",
    }
    status, body, _ = await cloud.request("GET", volumes_path(project, f"/{volume_id}"), token=token)
    assert status == 200 and body["volume"]["attachments"] == [expected]
    status, body, _ = await cloud.request("GET", f"/volume/v3/{admin_project}/volumes/{volume_id}")
    assert body["volume"]["attachments"] == [{**expected, "host_name": "node-1"}]  # the host: admins only
    listed = cloud.openstack("volume", "list", who=project)
    assert [(v["Status"], v["Attached to"]) for v in listed] == [("in-use", [expected])]
    assert f"Attached to {server} on /dev/vdb" in cloud.openstack("volume", "list", who=project, fmt="table")
    # a detached row shows no attachment, whatever is left in it
    await pool.execute(
        "UPDATE volumes SET attach_status = 'detached', status = 'available' WHERE id = $1", volume_id
    )
    status, body, _ = await cloud.request("GET", volumes_path(project, f"/{volume_id}"), token=token)
    assert body["volume"]["attachments"] == []


async def test_reset_status_is_for_admins_and_validated(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    volume_id = await insert_volume(
        pool, project, status="in-use", attached_to=str(uuid.uuid4()), on_backend=True
    )
    admin_path = f"/volume/v3/{admin_project}/volumes/{volume_id}/action"
    status, body, _ = await cloud.request(
        "POST",
        volumes_path(project, f"/{volume_id}/action"),
        token=token,
        json={"os-reset_status": {"status": "error"}},
    )
    assert status == 403 and "reset_status" in body["forbidden"]["message"]
    for args, text in (
        ({"status": "sleeping"}, "Volume status: sleeping is invalid, valid statuses are:"),
        ({"attach_status": "half"}, "Volume attach status: half is invalid"),
        ({"migration_status": "migrating"}, "the only migration status is 'none'"),
        ({"migration_status": "elsewhere"}, "Volume migration status: elsewhere is invalid"),
        ({}, "Must specify 'status', 'attach_status' or 'migration_status' for update."),
        ({"status": "error", "colour": "red"}, "Additional properties are not allowed"),
        ({"status": 5}, "is not of type 'string'"),
    ):
        status, body, _ = await cloud.request("POST", admin_path, json={"os-reset_status": args})
        assert status == 400, (args, body)
        assert_error(body, "badRequest", 400, text)
    status, _, _ = await cloud.request(
        "POST", admin_path, json={"os-reset_status": {"status": "ERROR", "attach_status": "detached"}}
    )
    assert status == 202
    cloud.openstack("volume", "set", "--state", "error", volume_id, fmt=None)  # the admin's CLI
    err = cloud.openstack_fails("volume", "set", "--state", "available", volume_id, who=project)
    assert "Failed to set volume state" in err.stderr


async def test_bootable_and_readonly_flags(cloud: Cloud, project: Credentials, pool: Any) -> None:
    token = await cloud.token(project)
    available = await insert_volume(pool, project)
    busy = await insert_volume(pool, project, status="in-use", attached_to=str(uuid.uuid4()))

    async def act(volume_id: str, document: Any) -> tuple[int, Any]:
        status, body, _ = await cloud.request(
            "POST", volumes_path(project, f"/{volume_id}/action"), token=token, json=document
        )
        return status, body

    version = await version_of(pool, available)
    assert (await act(available, {"os-set_bootable": {"bootable": "True"}}))[0] == 200
    assert await pool.fetchval("SELECT bootable FROM volumes WHERE id = $1", available) is True
    assert await version_of(pool, available) == version + 1
    assert (await act(available, {"os-update_readonly_flag": {"readonly": True}}))[0] == 202
    assert await pool.fetchval("SELECT metadata FROM volumes WHERE id = $1", available) == {
        "readonly": "True"
    }
    for volume_id, document, text in (
        (available, {"os-set_bootable": {"bootable": "perhaps"}}, "is not one of"),
        (available, {"os-set_bootable": {}}, "'bootable' is a required property"),
        (available, {"os-update_readonly_flag": {"readonly": "x"}}, "is not one of"),
        (
            busy,
            {"os-update_readonly_flag": {"readonly": False}},
            "status must be available to update readonly flag",
        ),
        (available, {"os-frobnicate": {}}, "There is no such action: os-frobnicate"),
        (
            available,
            {"os-extend": {"new_size": 2}, "os-set_bootable": {"bootable": True}},
            "There is no such action",
        ),
        (available, ["os-extend"], "There is no such action"),
    ):
        status, body = await act(volume_id, document)
        assert status == 400, (document, body)
        assert_error(body, "badRequest", 400, text)
    assert await version_of(pool, available) == version + 2

    cloud.openstack("volume", "set", "--read-write", "--non-bootable", available, who=project, fmt=None)
    shown = cloud.openstack("volume", "show", available, who=project)
    assert shown["bootable"] is False and shown["properties"] == {"readonly": "False"}


# --- delete ---------------------------------------------------------------------------------------


async def test_delete_is_refused_unless_the_volume_is_deletable(
    cloud: Cloud, project: Credentials, pool: Any
) -> None:
    token = await cloud.token(project)
    refused = {
        status: await insert_volume(pool, project, status=status, on_backend=True)
        for status in ("creating", "reserved", "attaching", "detaching", "deleting", "extending")
    }
    refused["in-use"] = await insert_volume(
        pool, project, status="in-use", attached_to=str(uuid.uuid4()), on_backend=True
    )
    refused["attached-but-available"] = await insert_volume(
        pool, project, status="available", attached_to=str(uuid.uuid4()), on_backend=True
    )
    versions = {label: await version_of(pool, volume_id) for label, volume_id in refused.items()}
    for label, volume_id in refused.items():
        status, body, _ = await cloud.request("DELETE", volumes_path(project, f"/{volume_id}"), token=token)
        assert status == 400, (label, body)
        assert_error(body, "badRequest", 400, DELETE_REFUSED)
    assert {label: await version_of(pool, v) for label, v in refused.items()} == versions

    err = cloud.openstack_fails("volume", "delete", refused["in-use"], who=project)
    assert "Invalid volume: Volume status must be available or error" in err.stderr

    deletable = await insert_volume(pool, project, status="error")
    status, body, _ = await cloud.request(
        "DELETE", volumes_path(project, f"/{deletable}?force=true"), token=token, headers=LATEST
    )
    assert status == 403, body
    status, body, _ = await cloud.request(
        "DELETE", volumes_path(project, f"/{deletable}?cascade=true"), token=token, headers=LATEST
    )
    assert status == 202, body  # sent to the actor, which removes the row once its backend confirms


# --- who sees what --------------------------------------------------------------------------------


async def test_projects_see_only_their_own_volumes(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str
) -> None:
    token = await cloud.token(project)
    mine = await create_volume(cloud, project, token, name=unique("mine"))
    other = await cloud.new_member("other")
    other_token = await cloud.token(other)
    try:
        path = volumes_path(other, f"/{mine['id']}")
        for method, tail, document in (
            ("GET", "", None),
            ("PUT", "", {"volume": {"name": "stolen"}}),
            ("DELETE", "", None),
            ("POST", "/action", {"os-extend": {"new_size": 2}}),
            ("POST", "/action", {"os-set_bootable": {"bootable": True}}),
            ("GET", "/metadata", None),
            ("POST", "/metadata", {"metadata": {"a": "b"}}),
            ("DELETE", "/metadata/a", None),
        ):
            status, body, _ = await cloud.request(method, path + tail, token=other_token, json=document)
            assert status == 404, (method, tail, body)
            assert_error(body, "itemNotFound", 404, f"Volume {mine['id']} could not be found.")
        for query in ("", "?all_tenants=1", f"?project_id={project.project_id}&all_tenants=1"):
            status, body, _ = await cloud.request(
                "GET", volumes_path(other, f"/detail{query}"), token=other_token
            )
            assert status == 200 and body["volumes"] == [], query
        status, body, _ = await cloud.request(
            "GET", volumes_path(project, f"/{mine['id']}"), token=other_token
        )
        assert status == 400 and body["badRequest"]["message"] == "Malformed request url"
        err = cloud.openstack_fails("volume", "show", mine["id"], who=other)
        assert f"No Volume found for {mine['id']}" in err.stderr

        admin = f"/volume/v3/{admin_project}/volumes/detail"
        status, body, _ = await cloud.request("GET", admin)
        assert mine["id"] not in {v["id"] for v in body["volumes"]}  # the admin's own project by default
        for query in ("?all_tenants=true", f"?project_id={project.project_id}"):
            status, body, _ = await cloud.request("GET", admin + query)
            found = {v["id"]: v for v in body["volumes"]}
            assert found[mine["id"]]["os-vol-tenant-attr:tenant_id"] == project.project_id, query
        listed = cloud.openstack("volume", "list", "--project", project.project_id)
        assert [v["ID"] for v in listed] == [mine["id"]]
        assert mine["id"] in {v["ID"] for v in cloud.openstack("volume", "list", "--all-projects")}
        assert await pool.fetchval("SELECT name FROM volumes WHERE id = $1", mine["id"]) == mine["name"]
    finally:
        await pool.execute("DELETE FROM volumes WHERE project_id = $1", other.project_id)


async def test_readers_cannot_create_or_change_volumes(cloud: Cloud, pool: Any) -> None:
    reader = await cloud.new_member("reader", role="reader")
    token = await cloud.token(reader)
    volume_id = await insert_volume(pool, reader, name="kept")
    try:
        status, body, _ = await cloud.request("GET", volumes_path(reader, "/detail"), token=token)
        assert status == 200 and [v["id"] for v in body["volumes"]] == [volume_id]
        version = await version_of(pool, volume_id)
        for method, tail, document in (
            ("POST", "", {"volume": {"size": 1}}),
            ("PUT", f"/{volume_id}", {"volume": {"name": "changed"}}),
            ("DELETE", f"/{volume_id}", None),
            ("POST", f"/{volume_id}/action", {"os-extend": {"new_size": 2}}),
            ("POST", f"/{volume_id}/metadata", {"metadata": {"a": "b"}}),
        ):
            status, body, _ = await cloud.request(
                method, volumes_path(reader, tail), token=token, json=document
            )
            assert status == 403, (method, tail, body)
            assert_error(body, "forbidden", 403, "Policy doesn't allow")
        assert await version_of(pool, volume_id) == version and await count_volumes(pool, reader) == 1
    finally:
        await pool.execute("DELETE FROM volumes WHERE project_id = $1", reader.project_id)


# --- backends, zones, types, services -----------------------------------------------------------------------


async def test_volumes_go_to_the_up_backend_with_the_most_free_space(
    cloud: Cloud, project: Credentials, pool: Any, admin_project: str, backends: Callable[..., Awaitable[str]]
) -> None:
    token = await cloud.token(project)
    zone = unique("zone")
    roomy = await backends(zone, total=100, allocated=70)  # what it holds is counted from the rows
    modest = await backends(zone, total=50)
    silent = await backends(zone, total=1000, silent_for=3600)
    disabled = await backends(zone, total=1000, enabled=False)
    agent_named = await backends(
        zone, name=f"{unique('node')}@file", total=1
    )  # as a storage agent names itself

    async def host_of(volume_id: str) -> str | None:
        _status, body, _ = await cloud.request("GET", f"/volume/v3/{admin_project}/volumes/{volume_id}")
        return body["volume"]["os-vol-host-attr:host"]

    async def allocated(backend: str) -> int:
        return await pool.fetchval("SELECT allocated_gb FROM volume_backends WHERE name = $1", backend)

    placed = await create_volume(cloud, project, token, size=5, availability_zone=zone)
    assert placed["availability_zone"] == zone and await host_of(placed["id"]) == f"{roomy}@file#file"
    assert await pool.fetchval("SELECT backend FROM volumes WHERE id = $1", placed["id"]) == roomy
    assert await allocated(roomy) == 5
    big = await insert_volume(pool, project, size=60, backend=roomy)  # roomy holds 65 now: modest is freer
    second = await create_volume(cloud, project, token, size=5, availability_zone=zone)
    assert await host_of(second["id"]) == f"{modest}@file#file" and await allocated(modest) == 5
    await pool.execute("DELETE FROM volumes WHERE id = $1", big)  # as the actor does once it is gone
    third = await create_volume(cloud, project, token, size=5, availability_zone=zone)
    assert await host_of(third["id"]) == f"{roomy}@file#file" and await allocated(roomy) == 10
    unplaced = await create_volume(cloud, project, token, size=91, availability_zone=zone)  # fits nowhere
    assert await pool.fetchval("SELECT backend FROM volumes WHERE id = $1", unplaced["id"]) is None
    assert await host_of(unplaced["id"]) is None

    zones = {
        z["Zone Name"]: z["Zone Status"]
        for z in cloud.openstack("availability", "zone", "list", "--volume", who=project)
    }
    assert zones[zone] == "available"
    services = {s["Host"]: s for s in cloud.openstack("volume", "service", "list")}
    assert (
        services[f"{roomy}@file"]["Binary"] == "cinder-volume" and services[f"{roomy}@file"]["Zone"] == zone
    )
    assert services[f"{roomy}@file"]["State"] == "up" and services[f"{roomy}@file"]["Status"] == "enabled"
    assert services[f"{silent}@file"]["State"] == "down"
    assert services[f"{disabled}@file"]["Status"] == "disabled"
    assert services[agent_named]["State"] == "up"
    only = cloud.openstack("volume", "service", "list", "--host", f"{roomy}@file")
    assert [s["Host"] for s in only] == [f"{roomy}@file"]
    err = cloud.openstack_fails("volume", "service", "list", who=project)
    assert "403" in err.stderr and "Policy doesn't allow volume_extension:services:index" in err.stderr
    pools = {p["Name"]: p for p in cloud.openstack("volume", "backend", "pool", "list", "--long")}
    capabilities = pools[f"{roomy}@file#file"]["Capabilities"]
    assert capabilities["total_capacity_gb"] == 100 and capabilities["free_capacity_gb"] == 90
    assert f"{agent_named}#file" in pools

    # Concurrent creates can never over-commit a backend: one backend of 30 GiB takes three of six.
    crowded = unique("zone")
    small = await backends(crowded, total=30)
    answers = await asyncio.gather(
        *(
            cloud.request(
                "POST",
                volumes_path(project),
                token=token,
                json={"volume": {"size": 10, "availability_zone": crowded}},
            )
            for _ in range(6)
        )
    )
    assert [status for status, _, _ in answers] == [202] * 6, answers
    ids = [body["volume"]["id"] for _, body, _ in answers]
    placed_on = await pool.fetch("SELECT backend FROM volumes WHERE id = ANY($1::text[])", ids)
    assert sorted(r["backend"] or "" for r in placed_on) == [""] * 3 + [small] * 3
    assert await allocated(small) == 30


async def test_the_default_type_zones_and_admin_views(
    cloud: Cloud, project: Credentials, admin_project: str
) -> None:
    types = cloud.openstack("volume", "type", "list", who=project)
    assert [(t["ID"], t["Name"]) for t in types] == [(DEFAULT_TYPE_ID, "__DEFAULT__")]
    shown = cloud.openstack("volume", "type", "show", "__DEFAULT__", who=project)
    assert shown["id"] == DEFAULT_TYPE_ID and shown["is_public"] is True
    assert cloud.openstack("volume", "type", "show", DEFAULT_TYPE_ID)["name"] == "__DEFAULT__"
    token = await cloud.token(project)
    base = f"/volume/v3/{project.project_id}"
    status, body, _ = await cloud.request("GET", f"{base}/types/default", token=token)
    assert (
        status == 200
        and body["volume_type"]["id"] == DEFAULT_TYPE_ID
        and "extra_specs" not in body["volume_type"]
    )
    status, body, _ = await cloud.request("GET", f"/volume/v3/{admin_project}/types/{DEFAULT_TYPE_ID}")
    assert body["volume_type"]["extra_specs"] == {}
    status, body, _ = await cloud.request("GET", f"{base}/types/gold", token=token)
    assert_error(body, "itemNotFound", 404, "Volume type with name gold could not be found.")
    status, body, _ = await cloud.request("GET", f"{base}/os-availability-zone", token=token)
    assert status == 200 and all(
        z["zoneState"] == {"available": True} or z["zoneState"] == {"available": False}
        for z in body["availabilityZoneInfo"]
    )
    assert body["availabilityZoneInfo"]
    status, body, _ = await cloud.request("GET", f"{base}/os-services", token=token)
    assert status == 403 and "forbidden" in body
    status, body, _ = await cloud.request("GET", f"{base}/no-such-resource", token=token)
    assert status == 404 and body["itemNotFound"]["code"] == 404
