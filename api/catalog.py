"""The service catalog: one public endpoint per service, all on this API's one port."""

from __future__ import annotations

import uuid
from typing import Any

REGION = "RegionOne"
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
                        "id": _id("endpoint", type_),
                        "interface": "public",
                        "region": REGION,
                        "region_id": REGION,
                        "url": url,
                    }
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
            "id": _id("endpoint", t),
            "service_id": _id("service", t),
            "interface": "public",
            "region": REGION,
            "region_id": REGION,
            "enabled": True,
            "url": base_url + p.replace("{project_id}", "$(project_id)s"),
            "links": {"self": f"{base_url}/identity/v3/endpoints/{_id('endpoint', t)}"},
        }
        for t, _, p in SERVICES
    ]
