"""The metadata service at 169.254.169.254, inside each network's qdhcp namespace.

One listening socket per network, bound in that network's namespace (the socket is made by a
thread that enters the namespace; it stays there) and served from the agent's event loop. The
guest reaches it through the DHCP port, by the route option 121 gives it. Every listener has
the same address (in different namespaces), so the socket a request came in on is what tells
its network: each listener serves the same handlers through an Application of its own that
carries its network id.

Who is asking: the source address of the connection, on the network the socket belongs to,
names one port and its server (asked of the internal API, which answers only for servers on the
hosts of this agent's token), and the namespace's neighbour entry for that
address must hold that port's MAC, so a guest that claims another port's address from its own
MAC is refused. An unknown source or a mismatch gets a plain 404, never another server's data.

What it answers, after Nova's metadata API:
- EC2: `/` (versions), `/<version>/` (`meta-data/`, `user-data`), `/<version>/meta-data/…`
  (ami-id, ami-launch-index, hostname, local-hostname, instance-id, instance-type, local-ipv4,
  mac, placement/availability-zone, public-keys/0/openssh-key, reservation-id,
  security-groups, …) and `/<version>/user-data` (the decoded bytes, 404 when there is none),
  for `latest` and Nova's dated versions. A directory lists its entries one per line, a
  sub-directory with a trailing slash, as Nova prints them.
- OpenStack: `/openstack/` (versions), `/openstack/<version>/` and its `meta_data.json`,
  `user_data`, `network_data.json`, `vendor_data.json`, `vendor_data2.json`, `password`.

Nova has integer instance ids for `i-%08x`; ours are UUIDs, so the EC2 id is "i-" and the first
8 hex digits of the UUID (stable, and the same form). The hostname is Nova's: the server's
`hostname` and its `dhcp_domain` (default "novalocal"), both in EC2 and in meta_data.json.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import ipaddress
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web

from hostagent.control import Control
from hostagent.network import kernel
from hostagent.network.desired import METADATA_IP, tap_name

log = structlog.get_logger("hostagent.network.metadata")

DHCP_DOMAIN = "novalocal"
EC2_VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)
OPENSTACK_VERSIONS = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
)
TEXT = "text/plain"
JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Instance:
    """The server that owns the asking address, as the metadata service tells it."""

    uuid: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str
    launch_index: int
    key_name: str | None
    key_data: str | None
    user_data: bytes | None
    meta: Mapping[str, Any]
    reservation_id: str
    flavor_name: str
    image_id: str | None
    port_id: str
    mac: str
    ip: str

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{DHCP_DOMAIN}"

    @property
    def ec2_id(self) -> str:
        return "i-" + self.uuid.replace("-", "")[:8]

    @classmethod
    def from_row(cls, row: Mapping[str, Any], ip: str) -> Instance:
        user_data = None
        if row["user_data"]:
            try:
                user_data = base64.b64decode(row["user_data"], validate=True)
            except (binascii.Error, ValueError):
                log.warning("user data is not base64; not served", server_id=row["id"])
        flavor = _json(row["flavor"]) or {}
        return cls(
            uuid=row["id"],
            name=row["display_name"],
            hostname=row["hostname"] or "host-" + ip.replace(".", "-"),
            project_id=row["project_id"],
            availability_zone=row["availability_zone"] or "",
            launch_index=row["launch_index"],
            key_name=row["key_name"],
            key_data=row["key_data"],
            user_data=user_data,
            meta=_json(row["metadata"]) or {},
            reservation_id=row["reservation_id"],
            flavor_name=str(flavor.get("name", "")),
            image_id=row["image_id"],
            port_id=row["port_id"],
            mac=row["mac"],
            ip=ip,
        )


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _ec2_id(prefix: str, uuid: str | None) -> str:
    return f"{prefix}-" + (uuid or "0").replace("-", "")[:8].rjust(8, "0")


# --- the answers ----------------------------------------------------------------------------------


def ec2_meta_data(inst: Instance) -> dict[str, Any]:
    """Nova's EC2 meta-data tree: a dict is a directory; '_name' is how its parent lists it."""
    data: dict[str, Any] = {
        "ami-id": _ec2_id("ami", inst.image_id),
        "ami-launch-index": str(inst.launch_index),
        "ami-manifest-path": "FIXME",
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
        "hostname": inst.fqdn,
        "instance-action": "none",
        "instance-id": inst.ec2_id,
        "instance-type": inst.flavor_name,
        "local-hostname": inst.fqdn,
        "local-ipv4": inst.ip,
        "mac": inst.mac,
        "placement": {"availability-zone": inst.availability_zone},
        "public-hostname": inst.fqdn,
        "public-ipv4": "",
        "reservation-id": inst.reservation_id,
        "security-groups": "default",
    }
    if inst.key_name and inst.key_data:
        data["public-keys"] = {"0": {"_name": f"0={inst.key_name}", "openssh-key": inst.key_data}}
    return data


def ec2_listing(tree: Mapping[str, Any]) -> str:
    """One entry per line. An entry may hold user input (`0=<key name>`): its control
    characters are replaced, so a line break in it can never add an entry the guest then reads."""
    lines = []
    for key in sorted(tree):
        if key == "_name":
            continue
        value = tree[key]
        if isinstance(value, Mapping):
            lines.append(value.get("_name", key + "/"))
        else:
            lines.append(key)
    return "\n".join(_CONTROL.sub("\ufffd", line) for line in lines)


def openstack_meta_data(inst: Instance) -> dict[str, Any]:
    data: dict[str, Any] = {
        "uuid": inst.uuid,
        "meta": dict(inst.meta),
        "hostname": inst.fqdn,
        "name": inst.name,
        "launch_index": inst.launch_index,
        "availability_zone": inst.availability_zone,
        "random_seed": base64.b64encode(os.urandom(512)).decode(),
        "project_id": inst.project_id,
        "devices": [],
    }
    if inst.key_name and inst.key_data:
        data["public_keys"] = {inst.key_name: inst.key_data}
        data["keys"] = [{"name": inst.key_name, "type": "ssh", "data": inst.key_data}]
    return data


def network_data(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Nova's network_data.json: a link per port; per address, `ipv4_dhcp` on a DHCP subnet
    (the guest asks DHCP), else the static address with its routes; DNS servers as services."""
    links: dict[str, dict[str, Any]] = {}
    networks: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    for row in rows:
        link_id = tap_name(row["port_id"])
        links.setdefault(
            link_id,
            {
                "id": link_id,
                "vif_id": row["port_id"],
                "type": "bridge",
                "mtu": row["mtu"],
                "ethernet_mac_address": row["mac"],
            },
        )
        if row["ip"] is None or row["ip_version"] is None:
            continue
        net: dict[str, Any] = {
            "id": f"network{len(networks)}",
            "link": link_id,
            "network_id": row["network_id"],
        }
        if row["ip_version"] == 4 and row["enable_dhcp"]:
            net["type"] = "ipv4_dhcp"
        else:
            version = row["ip_version"]
            net["type"] = f"ipv{version}"
            net["ip_address"] = row["ip"]
            net["netmask"] = _netmask(version, row["prefixlen"])
            routes = []
            if row["gateway"]:
                routes.append(
                    {
                        "network": "0.0.0.0" if version == 4 else "::",
                        "netmask": _netmask(version, 0),
                        "gateway": row["gateway"],
                    }
                )
            for route in _json(row["host_routes"]) or ():
                dest, _, length = str(route.get("destination", "")).partition("/")
                if dest and length.isdigit():
                    routes.append(
                        {
                            "network": dest,
                            "netmask": _netmask(version, int(length)),
                            "gateway": route.get("nexthop"),
                        }
                    )
            net["routes"] = routes
            dns = [{"type": "dns", "address": a} for a in row["dns_nameservers"] or ()]
            if dns:
                net["services"] = dns
        networks.append(net)
        for address in row["dns_nameservers"] or ():
            service = {"type": "dns", "address": address}
            if service not in services:
                services.append(service)
    return {"links": list(links.values()), "networks": networks, "services": services}


def _netmask(version: int, prefixlen: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)
    return str(ipaddress.IPv6Network(f"::/{prefixlen}").netmask)


# --- the service ----------------------------------------------------------------------------------


NETWORK_ID = web.AppKey("network_id", str)
NAMESPACE = web.AppKey("namespace", str)
SERVICE: web.AppKey[MetadataService] = web.AppKey("service")


@dataclasses.dataclass
class _Listener:
    namespace: str
    inode: int | None
    runner: web.AppRunner


class MetadataService:
    """The listeners, one per network, and the lookups behind them."""

    def __init__(self, control: Control, port: int) -> None:
        self.control = control
        self.port = port
        self._listeners: dict[str, _Listener] = {}

    def networks(self) -> set[str]:
        return set(self._listeners)

    async def ensure(self, network_id: str, namespace: str) -> bool:
        """A listener in the network's namespace (a new one if the namespace was replaced);
        True if one was started."""
        inode = await asyncio.to_thread(kernel.namespace_inode, namespace)
        current = self._listeners.get(network_id)
        if current is not None and current.namespace == namespace and current.inode == inode:
            return False
        await self.remove(network_id)
        sock = await asyncio.to_thread(kernel.listen_in_namespace, namespace, str(METADATA_IP), self.port)
        app = web.Application()
        app[NETWORK_ID] = network_id
        app[NAMESPACE] = namespace
        app[SERVICE] = self
        app.router.add_get("/{path:.*}", _handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._listeners[network_id] = _Listener(namespace=namespace, inode=inode, runner=runner)
        return True

    async def remove(self, network_id: str) -> bool:
        listener = self._listeners.pop(network_id, None)
        if listener is None:
            return False
        await listener.runner.cleanup()
        return True

    async def close(self) -> None:
        for network_id in list(self._listeners):
            await self.remove(network_id)

    async def instance(self, network_id: str, namespace: str, ip: str) -> Instance | None:
        """The server that owns this source address on this network, if the neighbour entry
        proves the request came from its port's MAC."""
        try:
            socket.inet_pton(socket.AF_INET, ip)
        except OSError:
            return None
        row = await self.control.metadata_instance(network_id, ip)
        if row is None:
            return None
        mac = await asyncio.to_thread(kernel.neighbour_mac, namespace, ip)
        if mac != row["mac"]:
            log.warning(
                "metadata request from a MAC that does not own the address; refused",
                network_id=network_id,
                ip=ip,
                mac=mac,
                port_id=row["port_id"],
            )
            return None
        return Instance.from_row(row, ip)

    async def interfaces(self, server_id: str) -> Sequence[Mapping[str, Any]]:
        return await self.control.metadata_interfaces(server_id)


def _not_found() -> web.Response:
    return web.Response(status=404, text="404 Not Found", content_type=TEXT)


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type=TEXT)


def _json_response(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data), content_type=JSON)


async def _handle(request: web.Request) -> web.Response:
    app = request.app
    path = request.match_info["path"]
    parts = [p for p in path.split("/") if p]
    if not parts:
        return _text("\n".join((*EC2_VERSIONS, "latest")))
    service = app[SERVICE]
    inst = await service.instance(app[NETWORK_ID], app[NAMESPACE], request.remote or "")
    if inst is None:
        return _not_found()
    if parts[0] == "openstack":
        return await _openstack(service, inst, parts[1:])
    return _ec2(inst, parts)


def _ec2(inst: Instance, parts: list[str]) -> web.Response:
    version, rest = parts[0], parts[1:]
    if version not in EC2_VERSIONS and version != "latest":
        return _not_found()
    if not rest:
        return _text("meta-data/" + ("\nuser-data" if inst.user_data is not None else ""))
    if rest == ["user-data"]:
        if inst.user_data is None:
            return _not_found()
        return web.Response(body=inst.user_data, content_type=TEXT)
    if rest[0] != "meta-data":
        return _not_found()
    node: Any = ec2_meta_data(inst)
    for part in rest[1:]:
        if not isinstance(node, Mapping) or part == "_name" or part not in node:
            return _not_found()
        node = node[part]
    if isinstance(node, Mapping):
        return _text(ec2_listing(node))
    return _text(str(node))


async def _openstack(service: MetadataService, inst: Instance, rest: list[str]) -> web.Response:
    if not rest:
        return _text("\n".join((*OPENSTACK_VERSIONS, "latest")))
    version, leaf = rest[0], rest[1:]
    if version not in OPENSTACK_VERSIONS and version != "latest":
        return _not_found()
    if not leaf:
        entries = ["meta_data.json", "password", "vendor_data.json", "network_data.json", "vendor_data2.json"]
        if inst.user_data is not None:
            entries.append("user_data")
        return _text("\n".join(entries))
    if len(leaf) != 1:
        return _not_found()
    name = leaf[0]
    if name == "meta_data.json":
        return _json_response(openstack_meta_data(inst))
    if name == "user_data":
        if inst.user_data is None:
            return _not_found()
        return web.Response(body=inst.user_data, content_type=TEXT)
    if name == "network_data.json":
        return _json_response(network_data(await service.interfaces(inst.uuid)))
    if name in ("vendor_data.json", "vendor_data2.json"):
        return _json_response({})
    if name == "password":
        return _text("")
    return _not_found()
