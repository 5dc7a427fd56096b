"""The operator event stream: /v1/events (SSE) and /v1/events/ws, against the running cloud."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.api.conftest import Cloud

NOVA = {"OpenStack-API-Version": "compute 2.96"}


class SseStream:
    """A connected SSE stream: events (parsed JSON, with the SSE id) as they come."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.errors: list[dict[str, Any]] = []

    async def next(self, timeout: float = 30) -> dict[str, Any]:
        """The next event, within `timeout` seconds (heartbeats do not count)."""
        async with asyncio.timeout(timeout):
            return await self._next()

    async def _next(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        while True:
            line = await self.response.content.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode().rstrip("\n")
            if text == "":
                if "data" in fields:
                    data = json.loads(fields["data"])
                    if fields.get("event") == "error":
                        self.errors.append(data)
                        raise EOFError(f"the stream ended: {data}")
                    assert int(fields["id"]) == data["id"]
                    return data
                fields = {}
            elif text.startswith(":"):
                self.comments.append(text[1:].strip())
            else:
                name, _, value = text.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value


@contextlib.asynccontextmanager
async def sse(
    cloud: Cloud, token: str, query: str = "", last_event_id: int | None = None
) -> AsyncIterator[SseStream]:
    headers = {"X-Auth-Token": token}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cloud.url}/v1/events{query}", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        try:
            yield SseStream(response)
        finally:
            response.close()  # drop the connection: the server streams forever


async def latest_event(pool: asyncpg.Pool) -> int:
    """The highest event number given so far (the session's pool is the cloud's own database)."""
    return int(await pool.fetchval("SELECT last FROM event_sequence"))


async def boot(cloud: Cloud, token: str, image: str, name: str) -> str:
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=token,
        headers=NOVA,
        json={"server": {"name": name, "imageRef": image, "flavorRef": "42", "networks": "none"}},
    )
    assert status == 202, body
    return body["server"]["id"]


async def delete(cloud: Cloud, token: str, server_id: str) -> None:
    status, body, _ = await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
    assert status in (204, 404), body


async def test_a_boot_and_delete_appear_in_order_with_every_transition(cloud: Cloud, image: str) -> None:
    token = await cloud.token()
    async with sse(cloud, token, "?kind=server") as stream:
        server_id = await boot(cloud, token, image, "events-one")
        seen: list[dict[str, Any]] = []
        deleted = False
        while not deleted:
            event = await stream.next()
            assert event["kind"] == "server"
            if event["actor_id"] != server_id:
                continue
            seen.append(event)
            if event["new_state"] == "active" and not any(e["new_state"] == "active" for e in seen[:-1]):
                await delete(cloud, token, server_id)
            deleted = event["new_state"] == "deleted"
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    changes = [e for e in seen if e["prev_state"] != e["new_state"]]
    assert changes[0]["prev_state"].startswith("building:")
    for before, after in itertools.pairwise(changes):
        assert after["prev_state"] == before["new_state"], (before, after)
    states = [e["new_state"] for e in changes]
    assert "active" in states and states[-1] == "deleted"
    assert states.index("active") < states.index("active:deleting") < states.index("deleted")
    first = seen[0]
    assert first["project_id"] and first["request_id"].startswith("req-") and first["time"]
    assert set(first) == {
        "id",
        "time",
        "project_id",
        "kind",
        "actor_id",
        "type",
        "prev_state",
        "new_state",
        "request_id",
        "payload",
    }


async def test_a_stream_resumed_with_last_event_id_misses_and_repeats_nothing_under_load(
    cloud: Cloud, image: str, pool: asyncpg.Pool
) -> None:
    count = 100
    who = await cloud.new_member("storm")
    cloud.openstack(
        "quota",
        "set",
        "--instances",
        str(count),
        "--cores",
        str(count),
        "--ram",
        str(count * 64),
        who.project_id,
        fmt=None,
    )
    token = await cloud.token(who)
    start = await latest_event(pool)
    ids: list[str] = []
    received: list[dict[str, Any]] = []

    async def boot_all() -> None:
        async def one(i: int) -> None:
            ids.append(await boot(cloud, token, image, f"storm-{i}"))

        for batch in range(0, count, 20):
            await asyncio.gather(*(one(i) for i in range(batch, batch + 20)))

    booting = asyncio.create_task(boot_all())
    try:
        # read a while, drop the connection mid-stream, resume from the last id seen, repeat
        last = start
        for _ in range(3):
            async with sse(cloud, token, "?kind=server", last_event_id=last) as stream:
                for _ in range(60):
                    event = await stream.next()
                    received.append(event)
                    last = event["id"]

        await booting
        wanted = set(ids)

        def all_active() -> bool:
            active = {e["actor_id"] for e in received if e["new_state"] == "active"}
            return wanted <= active

        async with sse(cloud, token, f"?kind=server&after={last}") as stream:
            deadline = time.monotonic() + 120
            while not all_active():
                assert time.monotonic() < deadline, "not every server's ACTIVE event arrived"
                received.append(await stream.next())
        numbers = [e["id"] for e in received]
        assert numbers == sorted(set(numbers)), "an event was repeated or came out of order"
        stored = [
            r["seq"]
            for r in await pool.fetch(
                "SELECT seq FROM events WHERE kind = 'server' AND seq > $1 AND seq <= $2 ORDER BY seq",
                start,
                numbers[-1],
            )
        ]
        assert numbers == stored, "the stream and the database disagree about the events"
    finally:
        booting.cancel()
        with contextlib.suppress(BaseException):
            await booting
        for server_id in ids:
            await delete(cloud, token, server_id)


async def test_a_member_sees_only_their_projects_events(cloud: Cloud, image: str, pool: asyncpg.Pool) -> None:
    a, b = await cloud.new_member("eva"), await cloud.new_member("evb")
    token_a, token_b = await cloud.token(a), await cloud.token(b)
    start = await latest_event(pool)
    server_a = await boot(cloud, token_a, image, "events-a")
    server_b = await boot(cloud, token_b, image, "events-b")
    try:
        async with sse(cloud, token_b, f"?after={start}") as stream:
            seen_b = []
            while not any(e["actor_id"] == server_b and e["new_state"] == "active" for e in seen_b):
                seen_b.append(await stream.next())
        assert all(e["project_id"] == b.project_id for e in seen_b)
        assert server_a not in {e["actor_id"] for e in seen_b}
        async with sse(cloud, await cloud.token(), f"?after={start}&project_id={a.project_id}") as stream:
            event = await stream.next()
            assert event["project_id"] == a.project_id and event["actor_id"] == server_a
        status, body, _ = await cloud.request("GET", f"/v1/events?project_id={a.project_id}", token=token_b)
        assert status == 403, body
    finally:
        await delete(cloud, token_a, server_a)
        await delete(cloud, token_b, server_b)


async def test_bad_requests_are_refused(cloud: Cloud) -> None:
    status, body, _ = await cloud.request("GET", "/v1/events", token="")
    assert status == 401
    status, body, _ = await cloud.request("GET", "/v1/events", token="gAAAA-forged.token.value")
    assert status == 401
    token = await cloud.token()
    for query in ("?after=-1", "?after=abc", "?heartbeat=0", "?heartbeat=x"):
        status, body, _ = await cloud.request("GET", f"/v1/events{query}", token=token)
        assert status == 400, (query, body)
        assert "error" in body


async def test_an_idle_stream_gets_heartbeats(cloud: Cloud) -> None:
    token = await cloud.token()
    async with sse(cloud, token, "?kind=nothing-of-this-kind&heartbeat=0.5") as stream:
        with pytest.raises(TimeoutError):
            await stream.next(timeout=1.6)
        assert stream.comments.count("heartbeat") >= 2


async def test_the_websocket_streams_the_same_events_and_resumes(
    cloud: Cloud, image: str, pool: asyncpg.Pool
) -> None:
    token = await cloud.token()
    start = await latest_event(pool)
    server_id = await boot(cloud, token, image, "events-ws")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                f"{cloud.url}/v1/events/ws?after={start}&id={server_id}", headers={"X-Auth-Token": token}
            ) as ws:
                first = json.loads((await ws.receive(timeout=30)).data)
                second = json.loads((await ws.receive(timeout=30)).data)
            assert first["actor_id"] == second["actor_id"] == server_id
            assert first["id"] < second["id"]
            async with session.ws_connect(
                f"{cloud.url}/v1/events/ws?after={first['id']}&id={server_id}",
                headers={"X-Auth-Token": token},
            ) as ws:
                again = json.loads((await ws.receive(timeout=30)).data)
            assert again == second
    finally:
        await delete(cloud, token, server_id)


def test_the_events_command_tails_the_stream(cloud: Cloud, image: str, tmp_path: Path) -> None:
    """`actorstack events` with the openstack CLI's OS_* variables: one line per event."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    server = cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.nano", "--nic", "none", "--wait", "events-cli"
    )
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "actorstack.cli",
                "events",
                "--after",
                "0",
                "--id",
                server["id"],
                "--json",
                "--count",
                "2",
            ],
            cwd=ROOT,
            env=cloud.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(events) == 2 and all(e["actor_id"] == server["id"] for e in events)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "actorstack.cli",
                "events",
                "--after",
                "0",
                "--id",
                server["id"],
                "--count",
                "1",
                "--color",
                "never",
            ],
            cwd=ROOT,
            env=cloud.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert "server" in line and server["id"] in line and "->" in line
    finally:
        cloud.openstack("server", "delete", "--wait", server["id"], fmt=None)
