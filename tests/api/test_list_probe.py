"""Every list a client can ask for, with the filters OpenStack's clients send and hostile values
of them, as an admin and as a member: never a 5xx, never a Python traceback in the answer.

The lists are the GET routes of `/openapi.json` that name no resource (their only path parameter,
if any, is the caller's project id), but for the service and version documents, the schemas and
the event stream; the filters are the common ones of the five services, each tried alone with
each hostile value, then all at once with each value. A filter a list does not take is refused
(400) or ignored where its service ignores unknown filters; either is fine here. What must not
happen is what a probe like this found before: a value reaching the database unchecked (a bound
but unused parameter, an out-of-range integer) and answering 500.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import Any

import aiohttp

from tests.api.conftest import Cloud, Credentials

FILTERS = (
    "limit", "marker", "offset", "page_reverse", "sort", "sort_key", "sort_dir", "fields", "name",
    "status", "all_tenants", "all_projects", "project_id", "tenant_id", "user_id", "domain_id",
    "enabled", "is_public", "visibility", "member_status", "owner", "size", "size_min", "size_max",
    "minRam", "minDisk", "changes-since", "changes-before", "ip", "ip6", "tags", "tags-any", "host",
    "availability_zone", "network_id", "device_id", "mac_address", "fixed_ips", "cidr", "detail",
    "with_count", "metadata", "created_at", "updated_at", "deleted", "type", "id",
)  # fmt: skip
HOSTILE = (
    "99999999999999999999999",  # beyond any integer column
    "-1",
    "abc",
    "' OR 1=1 --([{*+?\\%_",  # quoting, regular-expression and LIKE metacharacters
    "☃" * 300,
    "2026-13-45T99:99:99Z",
)
# The event stream answers as events come (tests/api/test_events*.py); the schemas are constants.
SKIP = {"/v1/events", "/v1/events/ws", "/openapi.json"}
LEAK = re.compile(r"Traceback \(most recent call last\)|File \"/|asyncpg\.|psycopg|sqlstate", re.IGNORECASE)


async def _lists(cloud: Cloud, project_id: str) -> list[str]:
    status, document, _ = await cloud.request("GET", "/openapi.json", token=False)
    assert status == 200
    found = []
    for path, item in document["paths"].items():
        if "get" not in item or "{tail}" in path or path in SKIP or "/schemas/" in path:
            continue
        if len(path.strip("/").split("/")) <= 2:  # a service's or a version's document
            continue
        params = re.findall(r"{([^}]+)}", path)
        if params and params != ["project_id"]:
            continue
        found.append(path.replace("{project_id}", project_id))
    return sorted(found)


async def _signed_in(cloud: Cloud, who: Credentials) -> tuple[str, str]:
    """A token of `who` and the id of its project."""
    token = await cloud.token(who)
    status, body, _ = await cloud.request(
        "GET", "/identity/v3/auth/tokens", token=token, headers={"X-Subject-Token": token}
    )
    assert status == 200, body
    return token, body["token"]["project"]["id"]


async def _probe(
    session: aiohttp.ClientSession, cloud: Cloud, token: str, who: str, path: str, query: dict[str, str]
) -> str | None:
    url = f"{path}?{urllib.parse.urlencode(query)}"
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    try:
        async with session.get(
            cloud.url + url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as r:
            status, text = r.status, await r.text()
    except TimeoutError:
        return f"GET {url[:200]} as {who}: no answer in 30 s"
    if status >= 500 or LEAK.search(text):
        return f"GET {url[:200]} as {who}: {status} {text[:300]}"
    return None


async def _probe_all(cloud: Cloud, who: Credentials) -> list[str]:
    token, project = await _signed_in(cloud, who)
    lists = await _lists(cloud, project)
    assert len(lists) > 40, lists  # the probe really covers the services
    queries: list[tuple[str, dict[str, Any]]] = []
    for path in lists:
        queries += [(path, {name: value}) for name in FILTERS for value in HOSTILE]
        queries += [(path, {name: value for name in FILTERS}) for value in HOSTILE]
    gate = asyncio.Semaphore(8)

    async def one(session: aiohttp.ClientSession, path: str, query: dict[str, Any]) -> str | None:
        async with gate:
            return await _probe(session, cloud, token, who.user, path, query)

    async with aiohttp.ClientSession() as session:
        found = await asyncio.gather(*(one(session, p, q) for p, q in queries))
    return [p for p in found if p]


async def test_no_list_answers_5xx_to_any_filter_value(cloud: Cloud, member: Credentials) -> None:
    problems = [*await _probe_all(cloud, cloud.admin), *await _probe_all(cloud, member)]
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} in all)"
