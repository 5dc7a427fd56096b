"""Tenant isolation, as a matrix: every route that names a project-owned resource, every verb.

Project A (a member) owns one of each resource; project B (another member) must get a 404 in its
service's error shape for each of them (an admin-only verb: the same refusal as for an id that
does not exist), so an id reveals nothing; the answer for A's id must look exactly like the
answer for an unknown id, must never carry A's data, and A's resources must be unchanged
afterwards. A user with only the `reader` role on A reads what A reads and is refused (403)
every write. Forged, expired, revoked and other-project tokens are refused, lists never show
another project's resources, and the event stream never carries them.

The matrix is data (`PROBES`): one line per route and verb, filled in from `Ids`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.auth import TokenCodec
from tests.api.conftest import Cloud, Credentials
from tests.conftest import wait_until

NOVA = "/compute/v2.1"
CINDER = "/volume/v3/{project}"
NEUTRON = "/networking/v2.0"
GLANCE = "/image/v2"
JSON_PATCH = "application/openstack-images-v2.1-json-patch"
NOVA_237 = {"OpenStack-API-Version": "compute 2.37"}  # "networks": "none"
MARK = f"iso-a-{uuid.uuid4().hex[:8]}"  # in every name of A's: must never appear in B's answers

# A's resources, by the names the probes use in their paths.
RESOURCES = ("server", "volume", "network", "subnet", "port", "image", "keypair", "group", "action")


@dataclasses.dataclass(frozen=True)
class Probe:
    """One route and verb on one of A's resources.

    `read`: changes nothing (a reader gets what A gets). `as_b`/`as_reader`: the status expected
    when it is not the default (404 for B; for a reader, A's own status on a read and 403 on a
    write), e.g. a verb that policy refuses to everyone but admins before any lookup, or a read
    Nova keeps from readers (the console)."""

    method: str
    path: str
    body: Any = None
    read: bool = False
    as_b: int = 404
    as_reader: int | None = None
    per_user: bool = False  # keypairs belong to a user, not a project: a reader of A has none
    owner: int | None = None  # what A itself gets for a read when not a 2xx (proves the route is real)
    raw: bytes | None = None
    content_type: str | None = None

    @property
    def service(self) -> str:
        return self.path.split("/")[1].replace("networking", "network")

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _reads(*paths: str, **kw: Any) -> list[Probe]:
    return [Probe("GET", p, read=True, **kw) for p in paths]


S = NOVA + "/servers/{server}"
V = CINDER + "/volumes/{volume}"
IMG = GLANCE + "/images/{image}"

PROBES: list[Probe] = [
    # Compute: the server, its metadata, addresses, volume attachments, instance actions, console.
    Probe("GET", S + "/ips/{network_name}", read=True, owner=404),  # the server has no ports
    *_reads(
        S,
        S + "/metadata",
        S + "/metadata/iso",
        S + "/ips",
        S + "/os-volume_attachments",
        S + "/os-volume_attachments/{volume}",
        S + "/os-instance-actions",
        S + "/os-instance-actions/{action}",
    ),
    # Nova lets only members (not readers) see the console: it may hold secrets.
    Probe("POST", S + "/action", {"os-getConsoleOutput": {"length": 10}}, read=True, as_reader=403),
    Probe("PUT", S, {"server": {"name": "hacked"}}),
    Probe("POST", S + "/metadata", {"metadata": {"hacked": "1"}}),
    Probe("PUT", S + "/metadata", {"metadata": {}}),
    Probe("PUT", S + "/metadata/iso", {"meta": {"iso": "hacked"}}),
    Probe("DELETE", S + "/metadata/iso"),
    *(
        Probe("POST", S + "/action", {name: None})
        for name in ("os-stop", "os-start", "pause", "unpause", "suspend", "resume")
    ),
    Probe("POST", S + "/action", {"reboot": {"type": "HARD"}}),
    Probe("POST", S + "/os-volume_attachments", {"volumeAttachment": {"volumeId": "{volume}"}}),
    Probe(
        "PUT",
        S + "/os-volume_attachments/{volume}",
        {"volumeAttachment": {"volumeId": "{volume}"}},
        as_b=400,
        as_reader=400,
    ),  # swap: refused to everyone in this cloud
    Probe("DELETE", S + "/os-volume_attachments/{volume}"),
    Probe("DELETE", S),
    *_reads(NOVA + "/os-keypairs/{keypair}", per_user=True),
    Probe("DELETE", NOVA + "/os-keypairs/{keypair}", per_user=True),
    *_reads(NOVA + "/os-server-groups/{group}"),
    Probe("DELETE", NOVA + "/os-server-groups/{group}"),
    # Block Storage: the volume, its metadata and actions (paths carry the caller's own project).
    *_reads(V, V + "/metadata", V + "/metadata/iso"),
    Probe("POST", V + "/action", {"os-show_image_metadata": None}, read=True),
    Probe("PUT", V, {"volume": {"name": "hacked"}}),
    Probe("POST", V + "/metadata", {"metadata": {"hacked": "1"}}),
    Probe("PUT", V + "/metadata", {"metadata": {}}),
    Probe("PUT", V + "/metadata/iso", {"meta": {"iso": "hacked"}}),
    Probe("DELETE", V + "/metadata/iso"),
    Probe("POST", V + "/action", {"os-extend": {"new_size": 2}}),
    Probe("POST", V + "/action", {"os-set_bootable": {"bootable": True}}),
    Probe("POST", V + "/action", {"os-update_readonly_flag": {"readonly": True}}),
    Probe("POST", V + "/action", {"os-set_image_metadata": {"metadata": {"hacked": "1"}}}),
    Probe("POST", V + "/action", {"os-unset_image_metadata": {"key": "iso"}}),
    Probe("POST", V + "/action", {"os-reset_status": {"status": "error"}}, as_b=403),  # admin only
    Probe("DELETE", V),
    # Networking: networks, subnets, ports and their tags.
    *(
        p
        for kind in ("network", "subnet", "port")
        for p in (
            *_reads(
                f"{NEUTRON}/{kind}s/{{{kind}}}",
                f"{NEUTRON}/{kind}s/{{{kind}}}/tags",
                f"{NEUTRON}/{kind}s/{{{kind}}}/tags/iso-tag",
            ),
            Probe("PUT", f"{NEUTRON}/{kind}s/{{{kind}}}", {kind: {"name": "hacked"}}),
            Probe("PUT", f"{NEUTRON}/{kind}s/{{{kind}}}/tags", {"tags": ["hacked"]}),
            Probe("PUT", f"{NEUTRON}/{kind}s/{{{kind}}}/tags/hacked"),
            Probe("DELETE", f"{NEUTRON}/{kind}s/{{{kind}}}/tags/iso-tag"),
            Probe("DELETE", f"{NEUTRON}/{kind}s/{{{kind}}}/tags"),
        )
    ),
    Probe("DELETE", NEUTRON + "/ports/{port}"),
    Probe("DELETE", NEUTRON + "/subnets/{subnet}"),
    Probe("DELETE", NEUTRON + "/networks/{network}"),
    # Image: the record, its data, tags, actions and members.
    *_reads(IMG, IMG + "/file"),
    *_reads(IMG + "/members", IMG + "/members/{b_project}", owner=403),  # a private image has no members
    Probe("PATCH", IMG, [{"op": "replace", "path": "/name", "value": "hacked"}], content_type=JSON_PATCH),
    Probe("PUT", IMG + "/tags/hacked"),
    Probe("DELETE", IMG + "/tags/iso-tag"),
    Probe("POST", IMG + "/actions/deactivate"),
    Probe("POST", IMG + "/actions/reactivate"),
    Probe("PUT", IMG + "/file", raw=b"hacked", content_type="application/octet-stream"),
    Probe("POST", IMG + "/members", {"member": "{b_project}"}),
    Probe("PUT", IMG + "/members/{b_project}", {"status": "accepted"}),
    Probe("DELETE", IMG + "/members/{b_project}"),
    Probe("DELETE", IMG),
]

# What A reads to tell whether anything changed (the data, not the clock).
SNAPSHOT = (
    S,
    S + "/metadata",
    S + "/os-volume_attachments",
    S + "/os-instance-actions",
    NOVA + "/os-keypairs/{keypair}",
    NOVA + "/os-server-groups/{group}",
    V,
    V + "/metadata",
    NEUTRON + "/networks/{network}",
    NEUTRON + "/subnets/{subnet}",
    NEUTRON + "/ports/{port}",
    IMG,
    IMG + "/file",
    NOVA + "/servers",
    CINDER + "/volumes",
    NEUTRON + "/networks",
    GLANCE + "/images?owner={a_project}",
)
VOLATILE = {"updated", "updated_at"}

# Nova and Cinder wrap an error in an object named after the fault.
FAULTS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound"}


# --- talking to the cloud -------------------------------------------------------------------------


@dataclasses.dataclass
class Actor:
    """A principal and its token (issued once: scrypt is slow, and a token lasts an hour)."""

    creds: Credentials
    token: str


@dataclasses.dataclass
class World:
    cloud: Cloud
    a: Actor
    b: Actor
    reader: Actor
    admin: Actor
    ids: dict[str, str]
    b_server: str
    # Things a leak made, for the teardown: (who may delete it, its path).
    strays: list[tuple[Actor, str]] = dataclasses.field(default_factory=list)

    def made(self, owner: Actor, collection: str, data: Any) -> None:
        """Remember something a request should not have made, for the teardown."""
        made_id = _created_id(data)
        if made_id:
            self.strays.append((owner, f"{collection.split('?')[0]}/{made_id}"))

    async def call(
        self,
        who: Actor | str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        project: str | None = None,
    ) -> tuple[int, Any, str]:
        """(status, parsed body, body text); `{project}` in the path is the caller's project."""
        token = who.token if isinstance(who, Actor) else who
        proj = project or (who.creds.project_id if isinstance(who, Actor) else self.ids["a_project"])
        url = self.cloud.url + path.format(**self.ids, project=proj)
        # As the clients of the JSON APIs ask (Glance answers */* with webob's HTML error pages).
        hdrs = {"X-Auth-Token": token, "Accept": "application/json", **(headers or {})}
        kwargs: dict[str, Any] = {}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["data"] = json.dumps(_fill(body, self.ids)).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if content_type:
            hdrs["Content-Type"] = content_type
        async with aiohttp.ClientSession() as s, s.request(method, url, headers=hdrs, **kwargs) as r:
            text = await r.text(errors="replace")
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return r.status, data, text

    async def probe(
        self, who: Actor, probe: Probe, ids: dict[str, str] | None = None
    ) -> tuple[int, Any, str]:
        saved = self.ids
        self.ids = ids or saved
        try:
            return await self.call(
                who, probe.method, probe.path, probe.body, raw=probe.raw, content_type=probe.content_type
            )
        finally:
            self.ids = saved

    async def ok(
        self,
        who: Actor,
        method: str,
        path: str,
        body: Any = None,
        status: int | tuple[int, ...] = 200,
        **kw: Any,
    ) -> Any:
        got, data, text = await self.call(who, method, path, body, **kw)
        expected = status if isinstance(status, tuple) else (status,)
        assert got in expected, f"{method} {path}: {got} {text[:500]}"
        return data

    async def snapshot(self) -> dict[str, Any]:
        return {path: _stable((await self.call(self.a, "GET", path))[1]) for path in SNAPSHOT}


def _fill(body: Any, ids: dict[str, str]) -> Any:
    if isinstance(body, str):
        return body.format(**ids) if "{" in body else body
    if isinstance(body, list):
        return [_fill(x, ids) for x in body]
    if isinstance(body, dict):
        return {k: _fill(v, ids) for k, v in body.items()}
    return body


def _stable(data: Any) -> Any:
    """The data without the keys a clock (not a change) moves."""
    if isinstance(data, dict):
        return {k: _stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [_stable(x) for x in data]
    return data


def assert_error_shape(service: str, status: int, data: Any, where: str) -> None:
    """The error body as that service's clients parse it (api/errors.py renders them)."""
    if service in ("compute", "volume"):
        fault = FAULTS[status]
        assert isinstance(data, dict) and set(data) == {fault}, (where, data)
        assert data[fault]["code"] == status and isinstance(data[fault]["message"], str), (where, data)
    elif service == "network":
        assert isinstance(data, dict) and set(data) == {"NeutronError"}, (where, data)
        assert set(data["NeutronError"]) == {"type", "message", "detail"}, (where, data)
    elif service == "image":
        assert isinstance(data, dict) and data["code"].startswith(str(status)), (where, data)
        assert isinstance(data["message"], str) and isinstance(data["title"], str), (where, data)
    else:
        assert isinstance(data, dict) and data["error"]["code"] == status, (where, data)


def shape_of(data: Any) -> Any:
    """What an error body says apart from its message (which may quote the id asked for)."""
    if isinstance(data, dict) and "NeutronError" in data:
        return ("NeutronError", data["NeutronError"]["type"])
    if isinstance(data, dict):
        return tuple(sorted(data))
    return type(data).__name__


async def wait_for(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 90) -> Any:
    return await wait_until(check, timeout=timeout, what=what)


# --- the world: A's resources, B, a reader of A ---------------------------------------------------------


async def _actor(cloud: Cloud, creds: Credentials) -> Actor:
    return Actor(creds, await cloud.token(creds))


async def _reader_of(cloud: Cloud, admin: str, a: Credentials) -> Credentials:
    """A second user of project A holding only the `reader` role."""
    creds = Credentials(f"{MARK}-reader", uuid.uuid4().hex, a.project, project_id=a.project_id)
    status, roles, _ = await cloud.request("GET", "/identity/v3/roles?name=reader", token=admin)
    assert status == 200 and roles["roles"], roles
    status, user, _ = await cloud.request(
        "POST",
        "/identity/v3/users",
        token=admin,
        json={"user": {"name": creds.user, "password": creds.password, "default_project_id": a.project_id}},
    )
    assert status == 201, user
    creds.user_id = user["user"]["id"]
    status, _, _ = await cloud.request(
        "PUT",
        f"/identity/v3/projects/{a.project_id}/users/{creds.user_id}/roles/{roles['roles'][0]['id']}",
        token=admin,
    )
    assert status == 204
    return creds


async def _server_status(w: World, who: Actor, server: str) -> str | None:
    status, data, _ = await w.call(who, "GET", f"{NOVA}/servers/{server}")
    return "GONE" if status == 404 else data["server"]["status"]


async def _volume_status(w: World, who: Actor, volume: str) -> str:
    status, data, _ = await w.call(who, "GET", f"{CINDER}/volumes/{volume}")
    return "GONE" if status == 404 else data["volume"]["status"]


async def _boot(w: World, who: Actor, name: str, **extra: Any) -> tuple[int, Any]:
    body = {
        "server": {
            "name": name,
            "imageRef": w.ids["public_image"],
            "flavorRef": "42",
            "networks": "none",
            **extra,
        }
    }
    status, data, _ = await w.call(who, "POST", f"{NOVA}/servers", body, headers=NOVA_237)
    return status, data


async def _build_a(w: World) -> None:
    """One of each of A's resources, with a metadata item and a tag where they take them."""
    a, ids = w.a, w.ids
    status, data = await _boot(w, a, f"{MARK}-server", metadata={"iso": "a"}, key_name=ids["keypair"])
    assert status == 202, data
    ids["server"] = data["server"]["id"]
    volume = await w.ok(
        a,
        "POST",
        f"{CINDER}/volumes",
        {"volume": {"size": 1, "name": f"{MARK}-volume", "metadata": {"iso": "a"}}},
        status=202,
    )
    ids["volume"] = volume["volume"]["id"]
    network = await w.ok(a, "POST", f"{NEUTRON}/networks", {"network": {"name": f"{MARK}-net"}}, status=201)
    ids["network"], ids["network_name"] = network["network"]["id"], f"{MARK}-net"
    subnet = await w.ok(
        a,
        "POST",
        f"{NEUTRON}/subnets",
        {
            "subnet": {
                "network_id": ids["network"],
                "cidr": "10.197.0.0/24",
                "ip_version": 4,
                "name": f"{MARK}-sub",
            }
        },
        status=201,
    )
    ids["subnet"] = subnet["subnet"]["id"]
    port = await w.ok(
        a,
        "POST",
        f"{NEUTRON}/ports",
        {"port": {"network_id": ids["network"], "name": f"{MARK}-port"}},
        status=201,
    )
    ids["port"] = port["port"]["id"]
    for kind in ("network", "subnet", "port"):
        await w.ok(a, "PUT", f"{NEUTRON}/{kind}s/{ids[kind]}/tags/iso-tag", status=(201, 204))
    group = await w.ok(
        a,
        "POST",
        f"{NOVA}/os-server-groups",
        {"server_group": {"name": f"{MARK}-group", "policies": ["anti-affinity"]}},
    )
    ids["group"] = group["server_group"]["id"]
    image = await w.ok(
        a,
        "POST",
        f"{GLANCE}/images",
        {
            "name": f"{MARK}-image",
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "private",
            "tags": ["iso-tag"],
        },
        status=201,
    )
    ids["image"] = image["id"]
    await w.ok(
        a,
        "PUT",
        f"{GLANCE}/images/{ids['image']}/file",
        raw=f"{MARK} data".encode(),
        status=204,
        content_type="application/octet-stream",
    )

    async def image_active() -> bool:
        return (await w.call(a, "GET", f"{GLANCE}/images/{ids['image']}"))[1]["status"] == "active"

    await wait_for("A's image to be active", image_active)

    async def active() -> bool:
        shown = await w.ok(a, "GET", f"{NOVA}/servers/{ids['server']}")
        assert shown["server"]["status"] != "ERROR", f"A's server went to ERROR: {shown}"
        return shown["server"]["status"] == "ACTIVE"

    await wait_for("A's server to be ACTIVE", active)

    async def available() -> bool:
        status = await _volume_status(w, a, ids["volume"])
        assert status not in ("error", "GONE"), f"A's volume is {status}"
        return status == "available"

    await wait_for("A's volume to be available", available)
    await w.ok(
        a,
        "POST",
        f"{NOVA}/servers/{ids['server']}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": ids["volume"]}},
    )

    async def in_use() -> bool:
        return await _volume_status(w, a, ids["volume"]) == "in-use"

    await wait_for("A's volume to be in-use", in_use)
    actions = await w.ok(a, "GET", f"{NOVA}/servers/{ids['server']}/os-instance-actions")
    ids["action"] = actions["instanceActions"][-1]["request_id"]


async def _teardown(w: World) -> None:
    """Everything the module made, whatever state the tests left it in (as admin: a test that
    failed may have left something half-made). Servers go first: a deleted server's volume is
    detached, and only then can the volume go."""
    ids, a = w.ids, w.a
    paths = [(a, f"{NOVA}/servers/{ids['server']}")] if "server" in ids else []
    paths += [(w.b, f"{NOVA}/servers/{w.b_server}")] if w.b_server else []
    paths += [(who, p) for who, p in w.strays if "/servers/" in p]
    paths += [(a, f"{CINDER}/volumes/{ids['volume']}")] if "volume" in ids else []
    paths += [(who, p) for who, p in w.strays if "/servers/" not in p]
    paths += [
        (a, path)
        for path, key in (
            (f"{NEUTRON}/ports/{{port}}", "port"),
            (f"{NEUTRON}/subnets/{{subnet}}", "subnet"),
            (f"{NEUTRON}/networks/{{network}}", "network"),
            (f"{GLANCE}/images/{{image}}", "image"),
            (f"{GLANCE}/images/{{shared_image}}", "shared_image"),
            (f"{NOVA}/os-server-groups/{{group}}", "group"),
        )
        if key in ids
    ]
    left = []
    for who, path in paths:
        if not await _delete_until_gone(w, who, path):
            left.append(path)
    await w.call(w.a, "DELETE", f"{NOVA}/os-keypairs/{ids['keypair']}")
    assert not left, f"could not delete {left}"


async def _delete_until_gone(w: World, who: Actor, path: str, timeout: float = 120) -> bool:
    """DELETE (again, while the resource is busy) until a GET says 404; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, _ = await w.call(who, "GET", path)
        if status == 404:
            return True
        await w.call(who, "DELETE", path)
        await asyncio.sleep(0.5)
    return False


@pytest.fixture(scope="module")
async def world(cloud: Cloud, image: str) -> AsyncIterator[World]:
    admin_token = await cloud.token()
    status, admin_project, _ = await cloud.request(
        "GET", "/identity/v3/projects?name=admin", token=admin_token
    )
    assert status == 200, admin_project
    admin = dataclasses.replace(cloud.admin, project_id=admin_project["projects"][0]["id"])
    a = await cloud.new_member("isoa")
    b = await cloud.new_member("isob")
    reader = await _reader_of(cloud, admin_token, a)
    w = World(
        cloud,
        await _actor(cloud, a),
        await _actor(cloud, b),
        await _actor(cloud, reader),
        Actor(admin, admin_token),
        {
            "a_project": a.project_id,
            "b_project": b.project_id,
            "public_image": image,
            "keypair": f"isokey-{uuid.uuid4().hex[:8]}",
        },
        "",
    )
    try:
        await wait_for("the cloud's hosts to be up", lambda: _hosts_up(w))
        await w.ok(w.a, "POST", f"{NOVA}/os-keypairs", {"keypair": {"name": w.ids["keypair"]}})
        await _build_a(w)
        status, data = await _boot(w, w.b, "isob-server")
        assert status == 202, data
        w.b_server = data["server"]["id"]
        await wait_for("B's server to be ACTIVE", lambda: _is(w, w.b, w.b_server, "ACTIVE"))
        yield w
    finally:
        await _teardown(w)


async def _hosts_up(w: World) -> bool:
    """When this module runs first, the hosts (compute and volume) may not be up yet."""
    found = await w.ok(w.admin, "GET", f"{NOVA}/os-hypervisors/detail")
    volume = await w.ok(w.admin, "GET", "/volume/v3/{project}/os-services?binary=cinder-volume")
    return any(h["state"] == "up" for h in found["hypervisors"]) and any(
        s["state"] == "up" for s in volume["services"]
    )


async def _is(w: World, who: Actor, server: str, status: str) -> bool:
    return await _server_status(w, who, server) == status


def _unknown_ids(ids: dict[str, str]) -> dict[str, str]:
    """The same ids in the same forms, naming nothing."""
    fake = dict(ids)
    for key in RESOURCES:
        value = ids[key]
        if key == "keypair":
            fake[key] = f"nokey-{uuid.uuid4().hex[:8]}"
        elif key == "action":
            fake[key] = f"req-{uuid.uuid4()}"
        elif "-" in value:
            fake[key] = str(uuid.uuid4())
        else:
            fake[key] = uuid.uuid4().hex
    return fake


# --- the matrix -----------------------------------------------------------------------------------------


async def test_another_project_gets_404_for_every_route_and_verb_and_changes_nothing(world: World) -> None:
    before = await world.snapshot()
    unknown = _unknown_ids(world.ids)
    failures: list[str] = []
    for probe in PROBES:
        status, data, text = await world.probe(world.b, probe)
        fake_status, fake_data, _ = await world.probe(world.b, probe, unknown)
        where = f"B: {probe} -> {status} {text[:300]}"
        if status != probe.as_b:
            failures.append(where)
            continue
        assert_error_shape(probe.service, status, data, where)
        if (fake_status, shape_of(fake_data)) != (status, shape_of(data)):
            failures.append(f"{where}; but for an unknown id: {fake_status} {fake_data}")
        if MARK in text:
            failures.append(f"{where}: carries A's data")
    assert not failures, "\n".join(failures)
    assert await world.snapshot() == before


async def test_a_reader_reads_what_the_owner_reads_and_is_refused_every_write(world: World) -> None:
    before = await world.snapshot()
    failures: list[str] = []
    for probe in PROBES:
        status, data, text = await world.probe(world.reader, probe)
        where = f"reader: {probe} -> {status} {text[:300]}"
        if probe.read:
            owner_status = (await world.probe(world.a, probe))[0]
            if owner_status != probe.owner and not (probe.owner is None and 200 <= owner_status < 300):
                failures.append(f"owner: {probe} -> {owner_status}")
            owner_status = probe.as_reader or (404 if probe.per_user else owner_status)
            if status != owner_status:
                failures.append(f"{where}; the owner got {owner_status}")
        elif status != (probe.as_reader or 403):
            failures.append(where)
        elif status >= 400:
            assert_error_shape(probe.service, status, data, where)
    assert not failures, "\n".join(failures)
    assert await world.snapshot() == before


# Creating in project A: a reader may not, whatever the service.
CREATES = (
    (
        f"{NOVA}/servers",
        {"server": {"name": "r", "imageRef": "{public_image}", "flavorRef": "42", "networks": "none"}},
    ),
    (f"{NOVA}/os-server-groups", {"server_group": {"name": "r", "policies": ["affinity"]}}),
    (f"{CINDER}/volumes", {"volume": {"size": 1, "name": "r"}}),
    (f"{NEUTRON}/networks", {"network": {"name": "r"}}),
    (f"{NEUTRON}/subnets", {"subnet": {"network_id": "{network}", "cidr": "10.198.0.0/24", "ip_version": 4}}),
    (f"{NEUTRON}/ports", {"port": {"network_id": "{network}"}}),
    (f"{GLANCE}/images", {"name": "r", "disk_format": "raw", "container_format": "bare"}),
)


async def test_a_reader_creates_nothing(world: World) -> None:
    before = await world.snapshot()
    for path, body in CREATES:
        status, data, text = await world.call(world.reader, "POST", path, body, headers=NOVA_237)
        if status < 300:  # a leak: remove what was made before failing
            world.made(world.a, path, data)
        assert status == 403, f"reader POST {path}: {status} {text[:300]}"
        assert_error_shape(path.split("/")[1].replace("networking", "network"), status, data, path)
    assert await world.snapshot() == before


def _created_id(data: Any) -> str | None:
    if isinstance(data, dict):
        inner = next(iter(data.values()), None)
        if isinstance(inner, dict):
            return inner.get("id")
        return data.get("id")
    return None


# --- references across projects ------------------------------------------------------------------------


async def test_another_project_cannot_use_a_resource_of_a_by_reference(world: World) -> None:
    """B naming A's network, port, private image, keypair, server group or volume in its own
    requests gets the same refusal as for a name that does not exist, and nothing is made."""
    w, ids = world, world.ids
    unknown = _unknown_ids(ids)
    boot = {"name": "isob-ref", "imageRef": "{public_image}", "flavorRef": "42", "networks": "none"}
    refs: list[tuple[str, Any]] = [
        (f"{NOVA}/servers", {"server": {**boot, "networks": [{"uuid": "{network}"}]}}),
        (f"{NOVA}/servers", {"server": {**boot, "networks": [{"port": "{port}"}]}}),
        (f"{NOVA}/servers", {"server": {**boot, "imageRef": "{image}"}}),
        (f"{NOVA}/servers", {"server": {**boot, "key_name": "{keypair}"}}),
        (f"{NOVA}/servers", {"server": boot, "os:scheduler_hints": {"group": "{group}"}}),
        (
            f"{NOVA}/servers",
            {
                "server": {
                    **boot,
                    "imageRef": "",
                    "block_device_mapping_v2": [
                        {
                            "uuid": "{volume}",
                            "source_type": "volume",
                            "destination_type": "volume",
                            "boot_index": 0,
                        }
                    ],
                }
            },
        ),
        (
            f"{NOVA}/servers/{w.b_server}/os-volume_attachments",
            {"volumeAttachment": {"volumeId": "{volume}"}},
        ),
        (f"{NEUTRON}/ports", {"port": {"network_id": "{network}"}}),
        (
            f"{NEUTRON}/subnets",
            {"subnet": {"network_id": "{network}", "cidr": "10.199.0.0/24", "ip_version": 4}},
        ),
        (f"{CINDER}/volumes", {"volume": {"size": 1, "imageRef": "{image}"}}),
    ]
    failures: list[str] = []
    for path, body in refs:
        answers = []
        for names in (ids, unknown):
            status, data, text = await w.call(w.b, "POST", path, _fill(body, names), headers=NOVA_237)
            if status < 300:
                w.made(w.b, path, data)
            answers.append((status, shape_of(data), MARK in text))
        if answers[0][0] not in (400, 404) or answers[0] != answers[1]:
            failures.append(f"POST {path} {body}: A's {answers[0]}, unknown {answers[1]}")
    assert not failures, "\n".join(failures)


# --- lists --------------------------------------------------------------------------------------------


LISTS = (
    f"{NOVA}/servers",
    f"{NOVA}/servers/detail",
    f"{NOVA}/servers?all_tenants=1",
    f"{NOVA}/servers/detail?all_tenants=1&project_id={{a_project}}",
    f"{NOVA}/servers?tenant_id={{a_project}}",
    f"{NOVA}/os-keypairs",
    f"{NOVA}/os-keypairs?user_id={{a_user}}",
    f"{NOVA}/os-server-groups",
    f"{NOVA}/os-server-groups?all_projects=True",
    f"{CINDER}/volumes",
    f"{CINDER}/volumes/detail",
    f"{CINDER}/volumes/detail?all_tenants=1",
    f"{CINDER}/volumes?all_tenants=1&project_id={{a_project}}",
    f"{NEUTRON}/networks",
    f"{NEUTRON}/networks?tenant_id={{a_project}}",
    f"{NEUTRON}/subnets",
    f"{NEUTRON}/subnets?project_id={{a_project}}",
    f"{NEUTRON}/ports",
    f"{NEUTRON}/ports?device_id={{server}}",
    f"{NEUTRON}/ports?network_id={{network}}",
    f"{GLANCE}/images",
    f"{GLANCE}/images?owner={{a_project}}",
    f"{GLANCE}/images?visibility=private",
    f"{GLANCE}/images?visibility=all",
    f"{GLANCE}/images?member_status=all",
)


async def test_lists_never_show_another_projects_resources(world: World) -> None:
    """As B, every list (also asking for all projects, or for A's by filter, as a non-admin) is
    refused or B's own, never A's; as A the same lists do show A's (so the check can fail)."""
    w = world
    w.ids["a_user"] = w.a.creds.user_id
    secrets_of_a = [
        w.ids[k] for k in ("server", "volume", "network", "subnet", "port", "image", "group", "keypair")
    ] + [MARK]
    failures = []
    for path in LISTS:
        status, _, text = await w.call(w.b, "GET", path, headers={"OpenStack-API-Version": "compute 2.10"})
        if status not in (200, 400, 403):
            failures.append(f"B GET {path}: {status} {text[:200]}")
        leaked = [s for s in secrets_of_a if s in text]
        if leaked:
            failures.append(f"B GET {path}: shows {leaked}")
    assert not failures, "\n".join(failures)
    own = {
        f"{NOVA}/servers": "server",
        f"{CINDER}/volumes": "volume",
        f"{NEUTRON}/networks": "network",
        f"{NEUTRON}/ports": "port",
        f"{GLANCE}/images": "image",
        f"{NOVA}/os-keypairs": "keypair",
        f"{NOVA}/os-server-groups": "group",
    }
    for path, key in own.items():
        _, _, text = await w.call(w.a, "GET", path)
        assert w.ids[key] in text, f"A's own list {path} lacks A's {key}"


# --- A's project and user themselves ------------------------------------------------------------


OF_A = (
    ("GET", f"{NOVA}/os-quota-sets/{{a_project}}", None),
    ("GET", f"{NOVA}/os-quota-sets/{{a_project}}/detail", None),
    ("PUT", f"{NOVA}/os-quota-sets/{{a_project}}", {"quota_set": {"instances": 1000}}),
    ("DELETE", f"{NOVA}/os-quota-sets/{{a_project}}", None),
    ("GET", f"{CINDER}/os-quota-sets/{{a_project}}", None),
    ("PUT", f"{CINDER}/os-quota-sets/{{a_project}}", {"quota_set": {"volumes": 1000}}),
    ("GET", f"{NEUTRON}/quotas/{{a_project}}", None),
    ("GET", f"{NEUTRON}/quotas/{{a_project}}/details", None),
    ("PUT", f"{NEUTRON}/quotas/{{a_project}}", {"quota": {"network": 1000}}),
    ("DELETE", f"{NEUTRON}/quotas/{{a_project}}", None),
    ("GET", "/identity/v3/projects/{a_project}", None),
    ("PATCH", "/identity/v3/projects/{a_project}", {"project": {"description": "hacked"}}),
    ("GET", "/identity/v3/users/{a_user}", None),
    ("PATCH", "/identity/v3/users/{a_user}", {"user": {"password": "hacked-password"}}),
    ("GET", "/identity/v3/users/{a_user}/projects", None),
    ("GET", "/identity/v3/users/{a_user}/application_credentials", None),
    (
        "POST",
        "/identity/v3/users/{a_user}/application_credentials",
        {"application_credential": {"name": "x"}},
    ),
    ("GET", "/identity/v3/projects/{a_project}/users/{a_user}/roles", None),
    ("GET", "/identity/v3/role_assignments?scope.project.id={a_project}", None),
)


async def test_another_projects_quotas_project_and_users_are_refused(world: World) -> None:
    """Not resources with ids of their own, but A's all the same: B neither reads nor changes
    them (Nova, Cinder, Neutron and Keystone answer 403 here, by policy, before any lookup)."""
    w = world
    w.ids["a_user"] = w.a.creds.user_id
    quota = await w.ok(w.a, "GET", f"{NOVA}/os-quota-sets/{{a_project}}")
    failures = []
    for method, path, body in OF_A:
        status, _, text = await w.call(w.b, method, path, body)
        if status not in (403, 404) or w.a.creds.user in text or w.a.creds.project in text:
            failures.append(f"B {method} {path}: {status} {text[:200]}")
    assert not failures, "\n".join(failures)
    assert await w.ok(w.a, "GET", f"{NOVA}/os-quota-sets/{{a_project}}") == quota
    assert await w.cloud.token(w.a.creds)  # A's password still works


# --- images: Glance's sharing rules ------------------------------------------------------------------


async def test_images_follow_glances_visibility_rules(world: World) -> None:
    w = world
    i = "/image/v2/images/{shared_image}"
    shared = await w.ok(
        w.a,
        "POST",
        f"{GLANCE}/images",
        {"name": f"{MARK}-shared", "disk_format": "raw", "container_format": "bare", "visibility": "shared"},
        status=201,
    )
    w.ids["shared_image"] = shared["id"]
    status, data, _ = await w.call(w.b, "GET", i)
    assert status == 404, data
    assert_error_shape("image", status, data, "B sees a shared image it is no member of")
    await w.ok(w.a, "POST", i + "/members", {"member": "{b_project}"})
    shown = await w.ok(w.b, "GET", i)  # a member sees it by id, pending or not
    assert shown["id"] == w.ids["shared_image"]
    listed = await w.ok(w.b, "GET", f"{GLANCE}/images")
    assert w.ids["shared_image"] not in {x["id"] for x in listed["images"]}  # pending: not in B's list
    for method, path, body, ctype in (
        ("PATCH", i, [{"op": "replace", "path": "/name", "value": "x"}], JSON_PATCH),
        ("DELETE", i, None, None),
        ("POST", i + "/members", {"member": uuid.uuid4().hex}, None),
        ("PUT", i + "/file", None, "application/octet-stream"),
    ):
        status, data, _ = await w.call(
            w.b, method, path, body, content_type=ctype, raw=b"x" if method == "PUT" else None
        )
        assert status == 403, (method, path, status, data)
    await w.ok(w.b, "PUT", i + "/members/{b_project}", {"status": "accepted"})
    listed = await w.ok(w.b, "GET", f"{GLANCE}/images")
    assert w.ids["shared_image"] in {x["id"] for x in listed["images"]}
    await w.ok(w.a, "DELETE", i + "/members/{b_project}", status=204)
    status, _, _ = await w.call(w.b, "GET", i)
    assert status == 404
    # A public image (the module's, owned by the admin): everyone reads it, only its owner writes.
    pub = GLANCE + "/images/{public_image}"
    assert (await w.ok(w.b, "GET", pub))["visibility"] == "public"
    status, _, _ = await w.call(
        w.b, "PATCH", pub, [{"op": "replace", "path": "/name", "value": "x"}], content_type=JSON_PATCH
    )
    assert status == 403
    status, _, _ = await w.call(w.b, "DELETE", pub)
    assert status == 403
    assert (await w.ok(w.admin, "GET", pub))["status"] == "active"


# --- tokens -------------------------------------------------------------------------------------------


def _flip(token: str, at: int) -> str:
    swapped = "B" if token[at] != "B" else "C"
    return token[:at] + swapped + token[at + 1 :]


async def test_forged_expired_revoked_and_foreign_tokens_are_refused(
    world: World, pool: asyncpg.Pool
) -> None:
    w = world
    server_path = f"{NOVA}/servers/{{server}}"
    key = json.loads(await pool.fetchval("SELECT value::text FROM cluster_settings WHERE key = 'token_key'"))
    _, body, _ = w.a.token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    expired, _ = TokenCodec(key).issue(
        expires_at=time.time() - 1,
        **{
            k: payload[k]
            for k in (
                "user_id",
                "user_name",
                "user_domain_id",
                "project_id",
                "project_name",
                "project_domain_id",
            )
        },
        roles=tuple(tuple(r) for r in payload.get("roles", ())),  # tokens carry no roles now
        methods=tuple(payload["methods"]),
    )
    other_key, _ = TokenCodec("not-the-cloud-key").issue(
        **{
            k: payload[k]
            for k in (
                "user_id",
                "user_name",
                "user_domain_id",
                "project_id",
                "project_name",
                "project_domain_id",
            )
        },
        roles=(("x", "admin"),),
        methods=("password",),
    )
    revoked = await w.cloud.token(w.a.creds)
    status, _, _ = await w.call(
        revoked, "DELETE", "/identity/v3/auth/tokens", headers={"X-Subject-Token": revoked}
    )
    assert status == 204
    forged = {
        "random": uuid.uuid4().hex,
        "one character changed in the payload": _flip(w.a.token, len("as1.") + 10),
        "one character changed in the signature": _flip(w.a.token, len(w.a.token) - 3),
        "signed with another key": other_key,
        "expired": expired,
        "revoked": revoked,
    }
    for label, token in forged.items():
        for path in (
            server_path,
            f"{CINDER}/volumes/{{volume}}",
            f"{NEUTRON}/networks/{{network}}",
            f"{GLANCE}/images/{{image}}",
            "/identity/v3/auth/projects",
            "/v1/events?after=0",
        ):
            status, data, text = await w.call(token, "GET", path, project=w.a.creds.project_id)
            assert status == 401, (label, path, status, text[:300])
            assert data["error"]["code"] == 401 and data["error"]["title"] == "Unauthorized", (
                label,
                path,
                data,
            )
            assert MARK not in text
    # Genuine tokens of another project (or of no project) get what an unknown id gets.
    status, data, _ = await w.call(w.b, "GET", f"{CINDER}/volumes/{{volume}}", project=w.a.creds.project_id)
    assert status in (400, 404) and MARK not in json.dumps(data), (status, data)
    spoof = {
        "X-Project-Id": w.a.creds.project_id,
        "X-Tenant-Id": w.a.creds.project_id,
        "X-Roles": "admin",
        "X-User-Id": w.a.creds.user_id,
        "X-Identity-Status": "Confirmed",
    }
    status, data, _ = await w.call(w.b, "GET", server_path, headers=spoof)
    assert status == 404, data
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{w.cloud.url}/identity/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": w.b.creds.user,
                                "domain": {"id": "default"},
                                "password": w.b.creds.password,
                            }
                        },
                    }
                }
            },
        ) as r,
    ):
        assert r.status == 201, await r.text()
        unscoped = r.headers["X-Subject-Token"]
    for path in (server_path, f"{NEUTRON}/networks/{{network}}", f"{GLANCE}/images/{{image}}"):
        status, data, text = await w.call(unscoped, "GET", path)
        assert status in (403, 404) and MARK not in text, (path, status, data)


# --- the event stream -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _stream(w: World, token: str, query: str) -> AsyncIterator[aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{w.cloud.url}/v1/events{query}", headers={"X-Auth-Token": token}) as r,
    ):
        try:
            yield r
        finally:
            r.close()


async def _events_until(
    response: aiohttp.ClientResponse, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """The events of an SSE stream up to and including the first for which `done` holds."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            line = await response.content.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode().strip()
            if text.startswith("data:"):
                events.append(json.loads(text[5:]))
                if done(events[-1]):
                    return events


async def test_the_event_stream_never_carries_another_projects_events(world: World) -> None:
    """B replays the whole history (and then live), unfiltered and filtered by A's actor ids, up
    to an event of its own made after all of A's: none of A's appears. A, the same way, sees its own."""
    w, ids = world, world.ids
    a_ids = {ids["server"], ids["volume"]}
    status, data, _ = await w.call(w.b, "GET", "/v1/events?after=0&project_id={a_project}")
    assert status == 403, data
    queries = (
        "?after=0",
        f"?after=0&id={ids['server']},{ids['volume']},{w.b_server}",
        f"?after=0&kind=server&id={ids['server']}&id={w.b_server}",
    )
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(_stream(w, w.b.token, q)) for q in queries]
        for r in streams:
            assert r.status == 200, await r.text()
        await w.ok(w.b, "POST", f"{NOVA}/servers/{w.b_server}/action", {"os-stop": None}, status=202)

        def b_stopped(e: dict[str, Any]) -> bool:
            return e["actor_id"] == w.b_server and e["new_state"].startswith("stopped")

        for query, r in zip(queries, streams, strict=True):
            events = await _events_until(r, b_stopped)
            foreign = [e for e in events if e["project_id"] != w.b.creds.project_id or e["actor_id"] in a_ids]
            assert not foreign, (query, foreign[:3])
    async with _stream(w, w.a.token, f"?after=0&id={ids['server']}") as r:
        seen = await _events_until(r, lambda e: e["actor_id"] == ids["server"])
        assert seen[-1]["project_id"] == ids["a_project"]
