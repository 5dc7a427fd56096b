"""Commands over AMQP (api/commands.py, protocol/README.md): the REST API's operations as messages
on `actorstack.commands`, answered on `reply_to`, with idempotency keys; and the API's own
Idempotency-Key header that they rest on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg

from actorstack.scratch import ScratchServices
from tests.api.conftest import Cloud, Credentials

NOVA = {"OpenStack-API-Version": "compute 2.96"}


class Commands:
    """A client of the command protocol: an exclusive reply queue, calls matched by correlation id."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue) -> None:
        self.channel = channel
        self.queue = queue
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            assert message.content_type == "application/json"
            future = self.pending.pop(message.correlation_id or "", None)
            if future is not None and not future.done():
                future.set_result(json.loads(message.body))

    async def call(
        self, command: dict[str, Any] | bytes, routing_key: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        correlation = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[correlation] = future
        await self.send(command, routing_key, correlation_id=correlation, reply_to=self.queue.name)
        return await asyncio.wait_for(future, timeout)

    async def send(
        self, command: dict[str, Any] | bytes, routing_key: str | None = None, **properties: Any
    ) -> None:
        body = command if isinstance(command, bytes) else json.dumps(command).encode()
        if routing_key is None:
            routing_key = command.get("op", "") if isinstance(command, dict) else ""
        exchange = await self.channel.get_exchange("actorstack.commands", ensure=True)
        await exchange.publish(
            aio_pika.Message(body, content_type="application/json", **properties), routing_key=routing_key
        )


@contextlib.asynccontextmanager
async def commands(services: ScratchServices) -> AsyncIterator[Commands]:
    connection = await aio_pika.connect(services.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        client = Commands(channel, queue)
        await queue.consume(client.on_reply)
        yield client
    finally:
        await connection.close()


async def servers_of(pool: asyncpg.Pool, project_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM servers WHERE project_id = $1", project_id))


def create_server(token: str, image: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "version": "1.0",
        "op": "server.create",
        "auth": {"token": token},
        "microversion": "2.96",
        "args": {"server": {"name": name, "imageRef": image, "flavorRef": "42", "networks": "none"}},
        **extra,
    }


async def wait_active(cloud: Cloud, token: str, server_id: str) -> dict[str, Any]:
    for _ in range(300):
        status, body, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server_id}", token=token)
        assert status == 200, body
        if body["server"]["status"] == "ACTIVE":
            return body["server"]
        assert body["server"]["status"] == "BUILD", body["server"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"server {server_id} never became ACTIVE")


async def test_a_server_is_created_over_amqp_and_the_reply_carries_it(
    cloud: Cloud, services: ScratchServices, image: str, member: Credentials
) -> None:
    token = await cloud.token(member)
    async with commands(services) as client:
        reply = await client.call(create_server(token, image, "by-command"))
        assert reply["ok"] is True and reply["status"] == 202, reply
        assert reply["version"] == "1.0" and reply["op"] == "server.create"
        assert reply["request_id"].startswith("req-") and reply["replayed"] is False
        server_id = reply["result"]["server"]["id"]
        server = await wait_active(cloud, token, server_id)
        assert server["name"] == "by-command" and server["tenant_id"] == member.project_id

        shown = await client.call(
            {"op": "server.show", "auth": {"token": token}, "args": {"server_id": server_id}}
        )
        assert shown["ok"] and shown["status"] == 200 and shown["result"]["server"]["status"] == "ACTIVE"
        listed = await client.call(
            {"op": "server.list", "auth": {"token": token}, "args": {"query": {"name": "by-"}}}
        )
        assert [s["id"] for s in listed["result"]["servers"]] == [server_id]

        stop = await client.call(
            {
                "op": "server.action",
                "auth": {"token": token},
                "args": {"server_id": server_id, "action": {"os-start": None}},
            }
        )
        rest_status, rest_body, _ = await cloud.request(
            "POST", f"/compute/v2.1/servers/{server_id}/action", token=token, json={"os-start": None}
        )
        assert (stop["status"], stop["error"]) == (rest_status, rest_body) and rest_status == 409

        deleted = await client.call(
            {"op": "server.delete", "auth": {"token": token}, "args": {"server_id": server_id}}
        )
        assert deleted["ok"] and deleted["status"] == 204 and deleted["result"] is None


async def test_refused_commands_get_error_replies_and_change_nothing(
    cloud: Cloud, services: ScratchServices, image: str, member: Credentials, pool: asyncpg.Pool
) -> None:
    token = await cloud.token(member)
    before = await servers_of(pool, member.project_id)
    async with commands(services) as client:
        malformed = await client.call(b'{"op": "server.create", "args": {', routing_key="server.create")
        assert malformed["ok"] is False and malformed["status"] == 400
        assert malformed["error"]["badRequest"]["message"].startswith("Malformed command")

        not_an_object = await client.call(b"[1, 2]", routing_key="")
        assert (
            not_an_object["status"] == 400
            and "JSON object" in not_an_object["error"]["badRequest"]["message"]
        )

        forged = await client.call(create_server(token[:-4] + "AAAA", image, "forged"))
        assert forged["ok"] is False and forged["status"] == 401 and forged["error"]["error"]["code"] == 401

        anonymous = await client.call({"op": "server.create", "args": {"server": {}}})
        assert anonymous["status"] == 401

        unknown = await client.call({"op": "server.explode", "auth": {"token": token}, "args": {}})
        assert (
            unknown["status"] == 400
            and "Unknown operation 'server.explode'" in unknown["error"]["badRequest"]["message"]
        )

        wrong_version = await client.call({**create_server(token, image, "v2"), "version": "2.0"})
        assert (
            wrong_version["status"] == 400
            and "not supported" in wrong_version["error"]["badRequest"]["message"]
        )

        stray = await client.call({**create_server(token, image, "stray"), "args": {"server": {}, "x": 1}})
        assert stray["status"] == 400 and "Unexpected arguments" in stray["error"]["badRequest"]["message"]

        mismatched = await client.call(create_server(token, image, "mismatch"), routing_key="server.delete")
        assert mismatched["status"] == 400

        # validated exactly like the API: the same body gets the same error from both
        body = {"server": {"name": "no-flavor", "imageRef": image, "networks": "none"}}
        invalid = await client.call(
            {"op": "server.create", "auth": {"token": token}, "microversion": "2.96", "args": body}
        )
        rest_status, rest_body, _ = await cloud.request(
            "POST", "/compute/v2.1/servers", token=token, headers=NOVA, json=body
        )
        assert invalid["ok"] is False and (invalid["status"], invalid["error"]) == (rest_status, rest_body)
        assert rest_status == 400

        path_trick = await client.call(
            {"op": "server.show", "auth": {"token": token}, "args": {"server_id": "../../identity/v3/users"}}
        )
        assert path_trick["status"] == 404
    assert await servers_of(pool, member.project_id) == before


async def test_the_same_idempotency_key_twice_creates_one_server(
    cloud: Cloud, services: ScratchServices, image: str, member: Credentials, pool: asyncpg.Pool
) -> None:
    token = await cloud.token(member)
    before = await servers_of(pool, member.project_id)
    key = f"once-{uuid.uuid4()}"
    async with commands(services) as client:
        command = create_server(token, image, "exactly-once", idempotency_key=key)
        # at the same moment (two consumers may hold them at once), then again later
        first, second = await asyncio.gather(client.call(command), client.call(command))
        third = await client.call(command)
        replies = [first, second, third]
        assert all(r["ok"] and r["status"] == 202 for r in replies), replies
        assert len({r["result"]["server"]["id"] for r in replies}) == 1
        assert sorted(r["replayed"] for r in replies) == [False, True, True]
        assert await servers_of(pool, member.project_id) == before + 1

        other = await client.call(create_server(token, image, "something-else", idempotency_key=key))
        assert other["ok"] is False and other["status"] == 422, other
        assert await servers_of(pool, member.project_id) == before + 1

        # a refused command leaves its key free: the corrected one runs
        bad_key = f"fix-{uuid.uuid4()}"
        refused = await client.call(
            {
                "op": "server.create",
                "auth": {"token": token},
                "idempotency_key": bad_key,
                "microversion": "2.96",
                "args": {"server": {"name": "x", "imageRef": image, "networks": "none"}},
            }
        )
        assert refused["status"] == 400
        assert await servers_of(pool, member.project_id) == before + 1
        server_id = first["result"]["server"]["id"]
        await wait_active(cloud, token, server_id)
        await client.call(
            {
                "op": "server.delete",
                "auth": {"token": token},
                "args": {"server_id": server_id},
                "idempotency_key": f"del-{uuid.uuid4()}",
            }
        )


async def test_the_rest_api_honours_idempotency_keys_too(
    cloud: Cloud, image: str, member: Credentials, pool: asyncpg.Pool
) -> None:
    token = await cloud.token(member)
    headers = {**NOVA, "Idempotency-Key": f"rest-{uuid.uuid4()}"}
    body = {"server": {"name": "rest-once", "imageRef": image, "flavorRef": "42", "networks": "none"}}
    before = await servers_of(pool, member.project_id)
    results = await asyncio.gather(
        *(
            cloud.request("POST", "/compute/v2.1/servers", token=token, headers=headers, json=body)
            for _ in range(4)
        )
    )
    assert {status for status, _, _ in results} == {202}
    assert len({b["server"]["id"] for _, b, _ in results}) == 1
    assert sum(1 for _, _, h in results if h.get("Idempotent-Replayed") == "true") == 3
    # the admin password is shown once, never kept for the replays
    passwords = [b["server"]["adminPass"] for _, b, h in results if h.get("Idempotent-Replayed") != "true"]
    assert len(passwords) == 1 and passwords[0]
    assert all(
        b["server"]["adminPass"] is None for _, b, h in results if h.get("Idempotent-Replayed") == "true"
    )
    stored = await pool.fetchval(
        "SELECT body FROM idempotency_keys WHERE key = $1", headers["Idempotency-Key"]
    )
    assert passwords[0].encode() not in stored
    assert await servers_of(pool, member.project_id) == before + 1
    status, reused, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=token,
        headers=headers,
        json={"server": {**body["server"], "name": "other"}},
    )
    assert status == 422 and "different request" in json.dumps(reused)
    status, _, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=token,
        headers={**NOVA, "Idempotency-Key": "x" * 256},
        json=body,
    )
    assert status == 400
    server_id = results[0][1]["server"]["id"]
    await wait_active(cloud, token, server_id)
    status, _, _ = await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
    assert status == 204


async def test_networks_and_volumes_over_amqp(
    cloud: Cloud, services: ScratchServices, member: Credentials
) -> None:
    token = await cloud.token(member)
    async with commands(services) as client:
        auth = {"token": token}
        net = await client.call(
            {"op": "network.create", "auth": auth, "args": {"network": {"name": "cmd-net"}}}
        )
        assert net["status"] == 201, net
        network_id = net["result"]["network"]["id"]
        subnet = await client.call(
            {
                "op": "subnet.create",
                "auth": auth,
                "args": {"subnet": {"network_id": network_id, "ip_version": 4, "cidr": "10.78.0.0/24"}},
            }
        )
        assert subnet["status"] == 201, subnet
        volume = await client.call({"op": "volume.create", "auth": auth, "args": {"volume": {"size": 1}}})
        assert volume["status"] == 202, volume
        volume_id = volume["result"]["volume"]["id"]
        for _ in range(300):
            shown = await client.call({"op": "volume.show", "auth": auth, "args": {"volume_id": volume_id}})
            if shown["result"]["volume"]["status"] == "available":
                break
            await asyncio.sleep(0.2)
        assert shown["result"]["volume"]["status"] == "available"
        gone = await client.call({"op": "volume.delete", "auth": auth, "args": {"volume_id": volume_id}})
        assert gone["status"] == 202, gone
        gone = await client.call({"op": "network.delete", "auth": auth, "args": {"network_id": network_id}})
        assert gone["status"] == 204, gone
        for _ in range(300):
            shown = await client.call({"op": "volume.show", "auth": auth, "args": {"volume_id": volume_id}})
            if shown["status"] == 404:
                break
            await asyncio.sleep(0.2)
        assert shown["status"] == 404


async def test_an_application_credential_authenticates_commands(
    cloud: Cloud, services: ScratchServices, member: Credentials
) -> None:
    token = await cloud.token(member)
    status, created, _ = await cloud.request(
        "POST",
        f"/identity/v3/users/{member.user_id}/application_credentials",
        token=token,
        json={"application_credential": {"name": f"integration-{uuid.uuid4().hex[:6]}"}},
    )
    assert status == 201, created
    credential = created["application_credential"]
    async with commands(services) as client:
        auth = {"application_credential": {"id": credential["id"], "secret": credential["secret"]}}
        made = await client.call(
            {"op": "network.create", "auth": auth, "args": {"network": {"name": "by-appcred"}}}
        )
        assert made["ok"] and made["status"] == 201, made
        assert made["result"]["network"]["project_id"] == member.project_id
        wrong = {"application_credential": {"id": credential["id"], "secret": "not-the-secret"}}
        refused = await client.call(
            {"op": "network.create", "auth": wrong, "args": {"network": {"name": "nope"}}}
        )
        assert refused["ok"] is False and refused["status"] == 401, refused
        malformed = await client.call({"op": "network.list", "auth": {"password": "x"}, "args": {}})
        assert malformed["status"] == 401
        gone = await client.call(
            {"op": "network.delete", "auth": auth, "args": {"network_id": made["result"]["network"]["id"]}}
        )
        assert gone["status"] == 204, gone
        # a deleted credential stops working, also for the consumer that cached its token
        status, _, _ = await cloud.request(
            "DELETE",
            f"/identity/v3/users/{member.user_id}/application_credentials/{credential['id']}",
            token=token,
        )
        assert status == 204
        after = await client.call({"op": "network.list", "auth": auth, "args": {}})
        assert after["status"] == 401, after
    status, listing, _ = await cloud.request("GET", "/networking/v2.0/networks?name=nope", token=token)
    assert listing["networks"] == []
