"""/networking/v2.0/agents (Neutron's agent extension, admins only): what serves the network on
each compute host, and whether it is alive (`openstack network agent list`).

Each compute host's agent does what Neutron splits in three: the Linux-bridge agent (bridges, taps
and, with a tunnel address, the VXLAN devices with l2population's entries), the DHCP agent and
the metadata agent. So each host shows those three, alive while the host's heartbeat is younger
than the scheduler's HOST_DOWN_AFTER (and no operator forced it down), enabled as the host's
compute service is. Their ids are stable: derived from the host and the agent type. A member
lists none (Neutron's policy hides them), and one by id is a 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from actors.scheduler import HOST_DOWN_AFTER
from api.context import caller, ctx, json_response
from api.errors import NotFound
from api.times import iso_seconds

_AGENT_IDS = uuid.UUID("5f2b8c8e-3f7a-4c55-9d52-1c8e1b7a4e01")

# (agent_type, binary, topic)
_KINDS = (
    ("Linux bridge agent", "neutron-linuxbridge-agent", "N/A"),
    ("DHCP agent", "neutron-dhcp-agent", "dhcp_agent"),
    ("Metadata agent", "neutron-metadata-agent", "N/A"),
)

_HOSTS = """
SELECT name, availability_zone, enabled, host(tunnel_ip) AS tunnel_ip, started_at, heartbeat_at,
       heartbeat_at > now() - make_interval(secs => $1) AND NOT forced_down AS alive,
       (SELECT count(*) FROM ports p WHERE p.binding_host_id = h.name) AS devices,
       (SELECT count(DISTINCT p.network_id) FROM ports p WHERE p.binding_host_id = h.name) AS networks
FROM compute_hosts h ORDER BY name
"""


def agent_id(host: str, agent_type: str) -> str:
    return str(uuid.uuid5(_AGENT_IDS, f"{host}\0{agent_type}"))


def _agents(row: Any) -> list[dict[str, Any]]:
    agents = []
    for agent_type, binary, topic in _KINDS:
        configurations: dict[str, Any]
        if binary == "neutron-linuxbridge-agent":
            tunnel = row["tunnel_ip"]
            configurations = {
                "devices": row["devices"],
                "l2_population": True,
                "tunnel_types": ["vxlan"] if tunnel else [],
                "tunneling_ip": tunnel,
                "interface_mappings": {},
            }
        elif binary == "neutron-dhcp-agent":
            configurations = {"networks": row["networks"], "dhcp_driver": "dnsmasq", "subnets": 0, "ports": 0}
        else:
            configurations = {"metadata_proxy_socket": "", "log_agent_heartbeats": False}
        agents.append(
            {
                "id": agent_id(row["name"], agent_type),
                "agent_type": agent_type,
                "binary": binary,
                "topic": topic,
                "host": row["name"],
                "availability_zone": row["availability_zone"] if binary == "neutron-dhcp-agent" else None,
                "admin_state_up": row["enabled"],
                "alive": bool(row["alive"]),
                "description": None,
                "configurations": configurations,
                "created_at": iso_seconds(row["started_at"]).replace("T", " ").rstrip("Z"),
                "started_at": iso_seconds(row["started_at"]).replace("T", " ").rstrip("Z"),
                "heartbeat_timestamp": iso_seconds(row["heartbeat_at"]).replace("T", " ").rstrip("Z"),
                "resources_synced": None,
            }
        )
    return agents


async def _all(request: web.Request) -> list[dict[str, Any]]:
    if not caller(request).is_admin:
        return []
    rows = await ctx(request).pool.fetch(_HOSTS, HOST_DOWN_AFTER)
    return [agent for row in rows for agent in _agents(row)]


_FILTERS = ("id", "agent_type", "binary", "host", "topic", "availability_zone")
_FLAGS = ("alive", "admin_state_up")


async def list_agents(request: web.Request) -> web.Response:
    agents = await _all(request)
    for key in _FILTERS:
        wanted = request.query.getall(key, [])
        if wanted:
            agents = [a for a in agents if str(a[key]) in wanted]
    for key in _FLAGS:
        wanted = [v.lower() for v in request.query.getall(key, [])]
        if wanted:
            agents = [a for a in agents if str(a[key]).lower() in wanted]
    fields = request.query.getall("fields", [])
    if fields:
        agents = [{k: v for k, v in a.items() if k in fields} for a in agents]
    return json_response({"agents": agents})


async def show_agent(request: web.Request) -> web.Response:
    wanted = request.match_info["agent_id"]
    for agent in await _all(request):
        if agent["id"] == wanted:
            return json_response({"agent": agent})
    raise NotFound(f"Agent {wanted} could not be found.", kind="AgentNotFound")


def setup(app: web.Application) -> None:
    app.router.add_get("/networking/v2.0/agents", list_agents)
    app.router.add_get("/networking/v2.0/agents/{agent_id}", show_agent)
