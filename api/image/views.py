"""Glance's JSON shapes for an image and an image member.

Links are Glance's own relative ones (`/v2/images/<id>`); clients build URLs from the catalog
endpoint, not from these.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from api.image.info import store_of
from api.times import iso_seconds


def image_view(row: asyncpg.Record) -> dict[str, Any]:
    """Extra properties at the top level beside the image's own attributes, as Glance shows them;
    `stores` once the image has data (Glance with multiple stores shows where it is)."""
    view: dict[str, Any] = dict(row["properties"])
    image_id = row["id"]
    view.update(
        id=image_id,
        name=row["name"],
        status=row["status"],
        visibility=row["visibility"],
        protected=row["protected"],
        os_hidden=row["os_hidden"],
        owner=row["owner"],
        disk_format=row["disk_format"],
        container_format=row["container_format"],
        size=row["size"],
        virtual_size=row["virtual_size"],
        checksum=row["checksum"],
        os_hash_algo=row["os_hash_algo"],
        os_hash_value=row["os_hash_value"],
        min_disk=row["min_disk"],
        min_ram=row["min_ram"],
        tags=list(row["tags"]),
        created_at=iso_seconds(row["created_at"]),
        updated_at=iso_seconds(row["updated_at"]),
        self=f"/v2/images/{image_id}",
        file=f"/v2/images/{image_id}/file",
        schema="/v2/schemas/image",
    )
    stores = store_of(row)
    if stores is not None:
        view["stores"] = stores
    return view


def member_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "image_id": row["image_id"],
        "member_id": row["member_id"],
        "status": row["status"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
        "schema": "/v2/schemas/member",
    }
