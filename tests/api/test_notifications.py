"""Notifications for integrations: a queue bound to `actorstack.notifications` receives every
lifecycle step, in order, in Nova's versioned envelope, under notifications.info/.error."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika

from actorstack.scratch import ScratchServices
from tests.api.conftest import Cloud

NOVA = {"OpenStack-API-Version": "compute 2.96"}
ENVELOPE_KEYS = {"priority", "event_type", "publisher_id", "message_id", "timestamp", "payload"}


class Listener:
    """An exclusive queue bound to the notifications exchange; received messages, checked."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            body = json.loads(message.body)
            check_envelope(body, message)
            self.received.append(body)
            self._arrived.set()

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.received):
            remaining = deadline - time.monotonic()
            assert remaining > 0, [n["event_type"] for n in self.received]
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.received


def check_envelope(body: dict[str, Any], message: aio_pika.abc.AbstractIncomingMessage) -> None:
    assert set(body) == ENVELOPE_KEYS, body
    assert body["priority"] in ("INFO", "ERROR")
    assert message.routing_key == f"notifications.{body['priority'].lower()}"
    assert message.message_id == body["message_id"] and uuid.UUID(body["message_id"])
    assert message.content_type == "application/json"
    datetime.datetime.strptime(body["timestamp"], "%Y-%m-%d %H:%M:%S.%f")
    assert isinstance(body["payload"], dict) and body["publisher_id"]


@contextlib.asynccontextmanager
async def listening(services: ScratchServices, binding: str = "notifications.*") -> AsyncIterator[Listener]:
    connection = await aio_pika.connect(services.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("actorstack.notifications", ensure=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=binding)
        listener = Listener()
        await queue.consume(listener.on_message)
        yield listener
    finally:
        await connection.close()


def about_server(server_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(n: dict[str, Any]) -> bool:
        return (
            n["event_type"].startswith("instance.") and n["payload"]["nova_object.data"]["uuid"] == server_id
        )

    return match


def types_of(received: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [n["event_type"] for n in received if match(n)]


async def wait_status(cloud: Cloud, token: str, server_id: str, status: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        code, body, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server_id}", token=token)
        assert code == 200, body
        if body["server"]["status"] == status:
            return
        assert body["server"]["status"] != "ERROR" and time.monotonic() < deadline, body["server"]
        await asyncio.sleep(0.2)


async def test_boot_and_delete_send_novas_sequence_in_valid_envelopes(
    cloud: Cloud, services: ScratchServices, image: str
) -> None:
    token = await cloud.token()
    async with listening(services) as listener:
        status, body, _ = await cloud.request(
            "POST",
            "/compute/v2.1/servers",
            token=token,
            headers=NOVA,
            json={"server": {"name": "notified", "imageRef": image, "flavorRef": "42", "networks": "none"}},
        )
        assert status == 202, body
        server_id = body["server"]["id"]
        mine = about_server(server_id)
        await listener.until(lambda got: "instance.create.end" in types_of(got, mine))
        status, _, _ = await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
        assert status == 204
        received = await listener.until(lambda got: "instance.delete.end" in types_of(got, mine))
        await asyncio.sleep(1)  # anything after delete.end would be an invention: let it show
    assert types_of(listener.received, mine) == [
        "instance.create.start",
        "instance.create.end",
        "instance.delete.start",
        "instance.shutdown.start",
        "instance.shutdown.end",
        "instance.delete.end",
    ]
    ours = [n for n in received if mine(n)]
    assert all(n["priority"] == "INFO" for n in ours)
    assert len({n["message_id"] for n in ours}) == len(ours)
    create_end = ours[1]
    assert create_end["payload"]["nova_object.name"] == "InstanceCreatePayload"
    assert create_end["payload"]["nova_object.namespace"] == "nova"
    data = create_end["payload"]["nova_object.data"]
    assert data["state"] == "active" and data["power_state"] == "running" and data["task_state"] is None
    assert data["display_name"] == "notified" and data["image_uuid"] == image and data["host"]
    assert data["tenant_id"] == create_end["payload"]["nova_object.data"]["action_initiator_project"]
    assert data["flavor"]["nova_object.data"]["flavorid"] == "42"
    assert create_end["publisher_id"] == f"nova-compute:{data['host']}"
    deleted = ours[-1]["payload"]
    assert deleted["nova_object.name"] == "InstanceActionPayload"
    assert deleted["nova_object.data"]["state"] == "deleted" and deleted["nova_object.data"]["deleted_at"]


async def test_a_failed_build_is_an_error_notification_with_the_fault(
    cloud: Cloud, services: ScratchServices, image: str
) -> None:
    token = await cloud.token()
    _, flavor, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        token=token,
        json={"flavor": {"name": f"huge-{uuid.uuid4().hex[:6]}", "ram": 64, "vcpus": 1, "disk": 10**7}},
    )
    try:
        async with listening(services, "notifications.error") as errors:
            status, body, _ = await cloud.request(
                "POST",
                "/compute/v2.1/servers",
                token=token,
                headers=NOVA,
                json={
                    "server": {
                        "name": "too-big",
                        "imageRef": image,
                        "flavorRef": flavor["flavor"]["id"],
                        "networks": "none",
                    }
                },
            )
            assert status == 202, body
            server_id = body["server"]["id"]
            got = await errors.until(lambda got: any(about_server(server_id)(n) for n in got))
            error = next(n for n in got if about_server(server_id)(n))
            assert error["event_type"] == "instance.create.error" and error["priority"] == "ERROR"
            data = error["payload"]["nova_object.data"]
            assert data["state"] == "error"
            fault = data["fault"]["nova_object.data"]
            assert fault["exception"] == "NoValidHost"
            assert fault["exception_message"].startswith("No valid host was found")
            await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
    finally:
        await cloud.request("DELETE", f"/compute/v2.1/flavors/{flavor['flavor']['id']}", token=token)


async def test_networks_ports_volumes_and_actions_are_notified_and_refusals_are_not(
    cloud: Cloud, services: ScratchServices, image: str
) -> None:
    who = await cloud.new_member("notify")
    token = await cloud.token(who)
    volumes = f"/volume/v3/{who.project_id}/volumes"
    async with listening(services, "#") as listener:
        _, net, _ = await cloud.request(
            "POST", "/networking/v2.0/networks", token=token, json={"network": {"name": "notified-net"}}
        )
        network_id = net["network"]["id"]
        _, subnet, _ = await cloud.request(
            "POST",
            "/networking/v2.0/subnets",
            token=token,
            json={"subnet": {"network_id": network_id, "ip_version": 4, "cidr": "10.77.0.0/24"}},
        )
        # refused: changes nothing, so notifies nothing
        status, _, _ = await cloud.request(
            "POST",
            "/networking/v2.0/subnets",
            token=token,
            json={"subnet": {"network_id": network_id, "ip_version": 4, "cidr": "10.77.0.0/25"}},
        )
        assert status == 400
        status, body, _ = await cloud.request(
            "POST",
            "/compute/v2.1/servers",
            token=token,
            headers=NOVA,
            json={
                "server": {
                    "name": "notified-nic",
                    "imageRef": image,
                    "flavorRef": "42",
                    "networks": [{"uuid": network_id}],
                }
            },
        )
        assert status == 202, body
        server_id = body["server"]["id"]
        status, vol, _ = await cloud.request(
            "POST", volumes, token=token, json={"volume": {"size": 1, "name": "notified-vol"}}
        )
        assert status == 202, vol
        volume_id = vol["volume"]["id"]
        await wait_status(cloud, token, server_id, "ACTIVE")
        await listener.until(lambda got: any(n["event_type"] == "volume.create.end" for n in got))
        status, _, _ = await cloud.request(
            "POST",
            f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
            token=token,
            json={"volumeAttachment": {"volumeId": volume_id}},
        )
        assert status == 200
        mine = about_server(server_id)
        await listener.until(lambda got: "instance.volume_attach.end" in types_of(got, mine))
        # refused (a start of an active server): no notification
        status, _, _ = await cloud.request(
            "POST", f"/compute/v2.1/servers/{server_id}/action", token=token, json={"os-start": None}
        )
        assert status == 409
        status, _, _ = await cloud.request(
            "POST", f"/compute/v2.1/servers/{server_id}/action", token=token, json={"os-stop": None}
        )
        assert status == 202
        await listener.until(lambda got: "instance.power_off.end" in types_of(got, mine))
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)
        await listener.until(lambda got: "instance.delete.end" in types_of(got, mine))
        await listener.until(lambda got: any(n["event_type"] == "volume.detach.end" for n in got))
        status, _, _ = await cloud.request("DELETE", f"{volumes}/{volume_id}", token=token)
        assert status == 202
        await listener.until(lambda got: any(n["event_type"] == "volume.delete.end" for n in got))
        await listener.until(lambda got: any(n["event_type"] == "port.delete.end" for n in got))
        status, _, _ = await cloud.request("DELETE", f"/networking/v2.0/networks/{network_id}", token=token)
        assert status == 204
        received = await listener.until(lambda got: any(n["event_type"] == "network.delete.end" for n in got))

    assert types_of(received, mine) == [
        "instance.create.start",
        "instance.create.end",
        "instance.volume_attach.start",
        "instance.volume_attach.end",
        "instance.power_off.start",
        "instance.power_off.end",
        "instance.delete.start",
        "instance.shutdown.start",
        "instance.shutdown.end",
        "instance.delete.end",
    ]
    attach = next(n for n in received if n["event_type"] == "instance.volume_attach.end")
    assert attach["payload"]["nova_object.name"] == "InstanceActionVolumePayload"
    assert attach["payload"]["nova_object.data"]["volume_id"] == volume_id

    def about(resource: str, resource_id: str, **request: str) -> list[str]:
        """The notifications of one resource: by its id, or (a create.start, which Neutron sends
        with the request's body, before there is an id) by the request's attributes."""
        found = []
        for n in received:
            view = n["payload"].get(resource)
            if not n["event_type"].startswith(resource + ".") or not isinstance(view, dict):
                continue
            if view.get("id") == resource_id or (
                n["event_type"].endswith("create.start") and all(view.get(k) == v for k, v in request.items())
            ):
                found.append(n["event_type"])
        return found

    assert about("network", network_id, name="notified-net") == [
        "network.create.start",
        "network.create.end",
        "network.delete.start",
        "network.delete.end",
    ]
    subnet_id = subnet["subnet"]["id"]
    assert about("subnet", subnet_id, network_id=network_id) == ["subnet.create.start", "subnet.create.end"]
    assert (
        len([n for n in received if n["event_type"] == "subnet.create.end"]) == 1
    )  # the refused one: nothing
    port_id = next(
        n["payload"]["port"]["id"]
        for n in received
        if n["event_type"] == "port.create.end" and n["payload"]["port"]["device_id"] == server_id
    )
    assert about("port", port_id, device_id=server_id) == [
        "port.create.start",
        "port.create.end",
        "port.delete.start",
        "port.delete.end",
    ]
    port_created = next(
        n for n in received if n["event_type"] == "port.create.end" and n["payload"]["port"]["id"] == port_id
    )
    assert port_created["publisher_id"].startswith("network.")
    assert port_created["payload"]["port"]["fixed_ips"][0]["ip_address"].startswith("10.77.0.")
    volume_types = [
        n["event_type"]
        for n in received
        if n["event_type"].startswith("volume.") and n["payload"]["volume_id"] == volume_id
    ]
    assert volume_types == [
        "volume.create.start",
        "volume.create.end",
        "volume.attach.end",
        "volume.detach.end",
        "volume.delete.start",
        "volume.delete.end",
    ]
    created = next(n for n in received if n["event_type"] == "volume.create.end")
    assert (
        created["payload"]["status"] == "available" and created["payload"]["display_name"] == "notified-vol"
    )
    assert created["payload"]["size"] == 1 and created["publisher_id"].startswith("volume.")


async def test_a_queue_bound_to_info_gets_only_info(cloud: Cloud, services: ScratchServices) -> None:
    token = await cloud.token()
    async with listening(services, "notifications.info") as listener:
        _, net, _ = await cloud.request(
            "POST", "/networking/v2.0/networks", token=token, json={"network": {"name": "info-only"}}
        )
        await cloud.request("DELETE", f"/networking/v2.0/networks/{net['network']['id']}", token=token)
        received = await listener.until(lambda got: any(n["event_type"] == "network.delete.end" for n in got))
    assert all(n["priority"] == "INFO" for n in received)
