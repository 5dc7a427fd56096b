"""The API against its own OpenAPI description (GET /openapi.json), fuzzed with schemathesis.

For every operation of the document, a fixed number of generated requests (positive: bodies and
parameters the document allows; negative: ones it does not), derandomized so a run is
repeatable, sent on a cloud of its own as a member of a project of its own, then again as a user
holding the admin role (so admin-only operations are fuzzed past policy). Every answer must
be: below 500, free of Python
exception text, OpenStack-shaped JSON when it is a 4xx, and a refused POST/PUT/PATCH/DELETE
must leave the listed state as it was. Failures are collected over a whole service and reported
together, each with the request that caused it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from api.app import create_app
from api.errors import service_of
from api.openapi import ANY_METHODS, REQUEST_BODIES
from tests.fuzz.conftest import TIMEOUT, World, wait_for

GROUPS = ("identity", "compute", "image", "volume", "network", "other")
# Examples per operation and generation mode: bounded work, about 3-4 minutes for the whole module
# (ACTORSTACK_FUZZ_SCALE multiplies them for a deeper run by hand).
SCALE = max(1, int(os.environ.get("ACTORSTACK_FUZZ_SCALE", "1")))
EXAMPLES = {
    "head": {"positive": 2, "negative": 0},
    "get": {"positive": 5 * SCALE, "negative": 4 * SCALE},
    "write": {"positive": 8 * SCALE, "negative": 6 * SCALE},
}
MICROVERSIONS = {
    "compute": ["compute 2.1", "compute 2.60", "compute 2.96"],
    "volume": ["volume 3.0", "volume 3.70"],
}
# Python's own words in a body: a traceback, a frame, a repr, an exception class and its message.
LEAK = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|<[a-zA-Z_.]+ object at 0x"
    r"|\b(?:asyncpg|aiohttp|msgspec|builtins)\.[A-Za-z_]+|\b[A-Z][A-Za-z]*(?:Error|Exception): "
)
# What changes under the fuzzer without any request: clocks and the actors' progress.
VOLATILE = {
    "updated_at",
    "updated",
    "last_seen",
    "heartbeat",
    "OS-EXT-STS:power_state",
    "OS-SRV-USG:launched_at",
    "progress",
}


@schemathesis.serializer("application/openstack-images-v2.1-json-patch")
def _json_patch(context: schemathesis.SerializationContext, value: Any) -> dict[str, Any]:
    """Glance's JSON-patch media type is JSON on the wire (schemathesis knows it by name only)."""
    return {"data": json.dumps(value).encode()}


def group_of(path: str) -> str:
    for prefix, group in (
        ("/identity", "identity"),
        ("/compute", "compute"),
        ("/image", "image"),
        ("/volume", "volume"),
        ("/networking", "network"),
    ):
        if path == prefix or path.startswith(prefix + "/"):
            return group
    return "other"


# --- the document --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document(world: World) -> dict[str, Any]:
    r = requests.get(f"{world.cloud.url}/openapi.json", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


async def test_document_lists_every_route_of_the_app(world: World, document: dict[str, Any]) -> None:
    """The real application's route table (create_app on the fuzzed cloud's database) and the
    served document name the same operations, so the document cannot go stale."""
    assert document["openapi"].startswith("3.")
    pool = await asyncpg.create_pool(world.database_url, min_size=1, max_size=2)
    try:
        app = await create_app(pool, base_url=world.cloud.url, state_dir=Path(world.cloud.state_dir))
    finally:
        await pool.close()
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = re.sub(r"{([^}:]+):[^}]*}", r"{\1}", info.get("formatter") or info.get("path") or "")
        methods = ANY_METHODS if route.method == "*" else (route.method.lower(),)
        routes |= {(method, path) for method in methods}
    documented = _operations(document)
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "operations in /openapi.json that the app does not have"
    assert ("get", "/openapi.json") in documented
    assert set(REQUEST_BODIES) <= documented, "request body schemas for routes that do not exist"
    for path, item in document["paths"].items():
        names = re.findall(r"{([^}]+)}", path)
        for operation in item.values():
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert declared == names, (path, declared)
    scheme = document["components"]["securitySchemes"]["token"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-Auth-Token"}
    for key in (
        ("post", "/compute/v2.1/servers"),
        ("post", "/networking/v2.0/ports"),
        ("post", "/volume/v3/{project_id}/volumes"),
        ("post", "/identity/v3/users"),
        ("post", "/image/v2/images"),
    ):
        assert "requestBody" in document["paths"][key[1]][key[0]], key


def _fuzzable(document: dict[str, Any], ids: dict[str, list[str]]) -> dict[str, Any]:
    """The document with real ids offered for path parameters (beside anything else the
    generator makes up) and the microversions each service knows."""
    doc = json.loads(json.dumps(document))
    for path, item in doc["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                name = parameter["name"]
                if parameter["in"] == "path" and ids.get(name):
                    parameter["schema"] = {"anyOf": [{"enum": ids[name]}, parameter["schema"]]}
                elif name == "OpenStack-API-Version":
                    parameter["schema"] = {"enum": MICROVERSIONS[group_of(path)]}
    return doc


# --- the state a refused request must not change ----------------------------------------------------------


def _lists(world: World, group: str) -> list[tuple[str, str]]:
    """(who, path) of the listings that show what an operation of `group` could change."""
    project, user = world.member.project_id, world.member.user_id
    admin_volumes = f"/volume/v3/{world.admin_project_id}/volumes/detail?all_tenants=1"
    servers = "/compute/v2.1/servers/detail?all_tenants=1"
    net = "/networking/v2.0"
    return {
        "identity": [
            ("admin", "/identity/v3/projects"),
            ("admin", "/identity/v3/users"),
            ("admin", "/identity/v3/roles"),
            ("admin", "/identity/v3/role_assignments"),
            ("member", f"/identity/v3/users/{user}/application_credentials"),
        ],
        "compute": [
            ("admin", servers),
            ("admin", "/compute/v2.1/flavors/detail?is_public=None"),
            ("admin", "/compute/v2.1/os-server-groups?all_projects=True"),
            ("admin", f"/compute/v2.1/os-quota-sets/{project}"),
            ("admin", "/compute/v2.1/os-services"),
            ("member", "/compute/v2.1/os-keypairs"),
            ("admin", f"{net}/ports"),
            ("admin", admin_volumes),
        ],
        "image": [
            ("admin", "/image/v2/images"),
            ("member", f"/image/v2/images/{world.ids['image_id'][0]}/members"),
        ],
        "volume": [
            ("admin", admin_volumes),
            ("admin", f"/volume/v3/{world.admin_project_id}/os-quota-sets/{project}"),
            ("admin", servers),
        ],
        "network": [
            ("admin", f"{net}/networks"),
            ("admin", f"{net}/subnets"),
            ("admin", f"{net}/ports"),
            ("admin", f"{net}/quotas/{project}"),
        ],
        "other": [],
    }[group]


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@dataclasses.dataclass
class State:
    """The group's listings, cached while only refused requests come in."""

    world: World
    group: str
    tokens: dict[str, str]
    cached: Any = None

    def snapshot(self) -> Any:
        taken = []
        for who, path in _lists(self.world, self.group):
            r = self.world.session.get(
                self.world.cloud.url + path, headers={"X-Auth-Token": self.tokens[who]}, timeout=TIMEOUT
            )
            taken.append((path, r.status_code, _stable(r.json()) if r.content else None))
        return taken

    def settled(self) -> Any:
        """Two equal snapshots in a row: what a successful request set in motion has finished."""
        previous = self.snapshot()

        def again() -> bool:
            nonlocal previous
            current = self.snapshot()
            equal, previous = current == previous, current
            return equal

        wait_for(again, f"the {self.group} state to settle", timeout=60)
        return previous

    def before(self) -> Any:
        if self.cached is None:
            self.cached = self.settled()
        return self.cached


# --- one request, and what its answer must be ---------------------------------------------------------


def _shaped(service: str, status: int, body: Any) -> bool:
    """The OpenStack error body of `service` (api/errors.py renders them); a refused token is
    Keystone's in every service, as keystonemiddleware answers it."""
    if not isinstance(body, dict):
        return False
    if status == 401 and service != "identity" and _shaped("identity", status, body):
        return True
    if service in ("compute", "volume"):
        ((fault, inner),) = body.items() if len(body) == 1 else ((None, None),)
        return (
            isinstance(inner, dict) and inner.get("code") == status and isinstance(inner.get("message"), str)
        )
    if service == "network":
        error = body.get("NeutronError")
        return (
            isinstance(error, dict)
            and isinstance(error.get("type"), str)
            and isinstance(error.get("message"), str)
        )
    if service == "image":
        return isinstance(body.get("message"), str) and str(body.get("code", "")).startswith(str(status))
    error = body.get("error")
    return isinstance(error, dict) and error.get("code") == status and isinstance(error.get("message"), str)


def send(world: World, kwargs: dict[str, Any]) -> tuple[int, str, str]:
    """(status, content type, body text); an event stream's body is not waited for."""
    with world.session.request(**kwargs, stream=True, timeout=TIMEOUT) as r:
        content_type = r.headers.get("Content-Type", "")
        if content_type.startswith("text/event-stream"):
            return r.status_code, content_type, ""
        return r.status_code, content_type, r.content.decode(errors="replace")


def problems_of(
    operation: dict[str, Any],
    method: str,
    path: str,
    status: int,
    content_type: str,
    text: str,
    url: str = "",
) -> list[str]:
    found = []
    allowed_5xx = {int(code) for code in operation["responses"] if code.isdigit() and code.startswith("5")}
    if status >= 500 and status not in allowed_5xx:
        found.append(f"answered {status}")
    if LEAK.search(text):
        found.append(f"Python exception text in the body: {LEAK.search(text).group(0)!r}")  # type: ignore[union-attr]
    if 400 <= status < 500 and method != "head":
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not content_type.startswith("application/json") or not _shaped(service_of(path), status, body):
            found.append(f"a {status} that is not an OpenStack-shaped JSON error")
    return found


@dataclasses.dataclass
class Fuzzer:
    world: World
    group: str
    document: dict[str, Any]
    state: State
    failures: list[str] = dataclasses.field(default_factory=list)
    requests: int = 0
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)

    def exercise(self, case: schemathesis.Case, headers: dict[str, str]) -> None:
        method, path = case.method.lower(), case.operation.path
        operation = self.document["paths"][path][method]
        kwargs = case.as_transport_kwargs(base_url=self.world.cloud.url)
        # Negative generation may drop or break the token too: the no-token cases have a test of
        # their own, here every request is the member's.
        kwargs["headers"] = {k: v for k, v in kwargs["headers"].items() if k.lower() != "x-auth-token"}
        kwargs["headers"].update(headers)
        writes = method not in ("get", "head")
        before = self.state.before() if writes else None
        status, content_type, text = send(self.world, kwargs)
        self.requests += 1
        self.statuses[status] += 1
        found = problems_of(operation, method, path, status, content_type, text, kwargs["url"])
        if writes and 400 <= status < 500:
            after = self.state.snapshot()
            if after != before:
                found.append("a refused request changed the listed state")
                self.state.cached = None
        elif writes:
            self.state.cached = None
        if found:
            request = {
                k: kwargs.get(k)
                for k in ("method", "url", "params", "headers", "json", "data")
                if kwargs.get(k)
            }
            self.failures.append(
                f"{method.upper()} {path}: {'; '.join(found)}\n    request: {request}\n"
                f"    answer: {status} {text[:300]}"
            )

    def run(
        self, operation: Any, mode: GenerationMode, examples: int, headers: Callable[[], dict[str, str]]
    ) -> None:
        if examples == 0:
            return

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            self.exercise(case, headers())

        try:
            fuzz()
        except Unsatisfiable:
            pass  # nothing of this mode fits the operation (e.g. no parameter to break)


def _budget(method: str) -> dict[str, int]:
    return EXAMPLES["head" if method == "head" else "get" if method == "get" else "write"]


@pytest.mark.parametrize("group", GROUPS)
def test_fuzz_every_operation(world: World, document: dict[str, Any], group: str) -> None:
    schema = schemathesis.openapi.from_dict(_fuzzable(document, world.ids))
    operations = [result.ok() for result in schema.get_all_operations()]
    mine = [op for op in operations if group_of(op.path) == group]
    assert mine, f"no operation of {group} in the document"
    # Deletes last, so the other operations still find the resources they are given.
    mine.sort(key=lambda op: (op.method.lower() == "delete", op.path, op.method))
    admin, member = world.token(world.cloud.admin), world.token(world.member)
    fuzzer = Fuzzer(
        world,
        group,
        document,
        State(world, group, {"admin": admin, "member": member}),
    )
    started = time.monotonic()
    for op in mine:
        # An operation may revoke its own token: a fresh one each time.
        headers = _with_token(world.token(world.member))
        budget = _budget(op.method.lower())
        fuzzer.run(op, GenerationMode.POSITIVE, budget["positive"], headers)
        fuzzer.run(op, GenerationMode.NEGATIVE, budget["negative"], headers)
    elapsed = time.monotonic() - started
    print(
        f"{group}: {len(mine)} operations, {fuzzer.requests} requests in {elapsed:.0f} s, "
        f"answers {sorted(fuzzer.statuses.items())}"
    )
    assert fuzzer.requests >= len(mine)
    assert not fuzzer.failures, f"{len(fuzzer.failures)} bad answers:\n" + "\n".join(fuzzer.failures[:40])


def _with_token(token: str) -> Callable[[], dict[str, str]]:
    """The headers of each fuzzed request: this token, and JSON asked for, as the SDKs ask
    (schemathesis says */*, for which Glance answers its errors' HTML page)."""
    return lambda: {"X-Auth-Token": token, "Accept": "application/json"}


def _answers_without_a_valid_token(
    world: World, op: Any, operation: dict[str, Any], token: str | None
) -> list[str]:
    """One request of `op` with `token` (none, or a forged one): 401 in the service's shape where
    the operation needs a token, anything but 401 where it is public. What was wrong, if anything."""
    method, path = op.method.lower(), op.path
    needs_token = operation.get("security") != []
    failures: list[str] = []

    @settings(
        max_examples=1,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(case=op.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def probe(case: schemathesis.Case) -> None:
        kwargs = case.as_transport_kwargs(base_url=world.cloud.url)
        kwargs["headers"] = {k: v for k, v in kwargs["headers"].items() if k.lower() != "x-auth-token"}
        if token is not None:
            kwargs["headers"]["X-Auth-Token"] = token
        status, content_type, text = send(world, kwargs)
        found = problems_of(operation, method, path, status, content_type, text)
        if needs_token and status != 401:
            found.append(f"answered {status} without a valid token")
        if not needs_token and status == 401:
            found.append("a public operation asked for a token")
        if found:
            failures.append(
                f"{method.upper()} {path} with {token or 'no token'}: "
                f"{'; '.join(found)}: {status} {text[:200]}"
            )

    probe()
    return failures


def test_no_or_bad_token_is_refused_everywhere(world: World, document: dict[str, Any]) -> None:
    """Every operation that needs a token answers 401 in its service's shape without one or with
    a forged one, and the batch changes nothing; the public ones answer without."""
    schema = schemathesis.openapi.from_dict(_fuzzable(document, world.ids))
    admin, member = world.token(world.cloud.admin), world.token(world.member)
    states = {g: State(world, g, {"admin": admin, "member": member}) for g in GROUPS}
    before = {g: s.settled() for g, s in states.items()}
    failures: list[str] = []
    public = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operation = document["paths"][op.path][op.method.lower()]
        public += operation.get("security") == []
        for token in (None, "as1.forged." + "x" * 43, "gAAAAAnot-one-of-ours"):
            failures += _answers_without_a_valid_token(world, op, operation, token)
    assert public >= 10, "the discovery documents, token issue and /openapi.json are public"
    assert not failures, "\n".join(failures[:40])
    after = {g: s.snapshot() for g, s in states.items()}
    assert after == before, "requests without a valid token changed the state"
