"""The service catalog: every service of this cloud, each with a public, an internal and an admin
endpoint (Keystone's three interfaces; all on this API's one port, so the three URLs are the
same), so that a client configured for any interface (`interface: internal` in clouds.yaml,
OS_INTERFACE=admin) finds every service by its type.

There is no `placement` service: the scheduler here is the cloud's own (actors/scheduler.py, over
`compute_hosts`), not a placement API, and no client this cloud serves needs one (the CLI's
`openstack hypervisor` pages read Nova's os-hypervisors); see ARCHITECTURE.md.
"""

from __future__ import annotations

import uuid
from typing import Any

REGION = "RegionOne"
INTERFACES = ("public", "internal", "admin")
_NS = uuid.UUID("6b1a3c52-4f0e-4f59-9d7b-0c7d3a2e9a10")

# (service type, service name, path below the base URL)
SERVICES: tuple[tuple[str, str, str], ...] = (
    ("identity", "keystone", "/identity"),
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("block-storage", "cinder", "/volume/v3/{project_id}"),
    ("volumev3", "cinderv3", "/volume/v3/{project_id}"),
    ("network", "neutron", "/networking"),
)


def _id(*parts: str) -> str:
    return uuid.uuid5(_NS, "/".join(parts)).hex


def endpoint_id(type_: str, interface: str) -> str:
    """A built-in endpoint's id, stable across restarts (the public one's as before interfaces)."""
    return _id("endpoint", type_) if interface == "public" else _id("endpoint", type_, interface)


def catalog(base_url: str, project_id: str | None) -> list[dict[str, Any]]:
    """The catalog as a token carries it (project id substituted where the URL needs one)."""
    entries = []
    for type_, name, path in SERVICES:
        if "{project_id}" in path and project_id is None:
            continue
        url = base_url + path.format(project_id=project_id)
        entries.append(
            {
                "id": _id("service", type_),
                "type": type_,
                "name": name,
                "endpoints": [
                    {
                        "id": endpoint_id(type_, interface),
                        "interface": interface,
                        "region": REGION,
                        "region_id": REGION,
                        "url": url,
                    }
                    for interface in INTERFACES
                ],
            }
        )
    return entries


def services(base_url: str) -> list[dict[str, Any]]:
    return [
        {
            "id": _id("service", t),
            "type": t,
            "name": n,
            "enabled": True,
            "description": "",
            "links": {"self": f"{base_url}/identity/v3/services/{_id('service', t)}"},
        }
        for t, n, _ in SERVICES
    ]


def endpoints(base_url: str) -> list[dict[str, Any]]:
    return [
        {
            "id": endpoint_id(t, interface),
            "service_id": _id("service", t),
            "interface": interface,
            "region": REGION,
            "region_id": REGION,
            "enabled": True,
            "url": base_url + p.replace("{project_id}", "$(project_id)s"),
            "links": {"self": f"{base_url}/identity/v3/endpoints/{endpoint_id(t, interface)}"},
        }
        for t, _, p in SERVICES
        for interface in INTERFACES
    ]
