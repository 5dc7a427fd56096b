"""Glance's JSON shapes for metadata definitions. An attribute a client never set (a namespace's
display name, an object's description) is left out, as Glance's models leave it out."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.times import iso_seconds


def _times(row: asyncpg.Record) -> dict[str, str]:
    return {"created_at": iso_seconds(row["created_at"]), "updated_at": iso_seconds(row["updated_at"])}


def _set(view: dict[str, Any], row: asyncpg.Record, *keys: str) -> None:
    for key in keys:
        if row[key] is not None:
            view[key] = row[key]


def namespace_view(row: asyncpg.Record, **children: Any) -> dict[str, Any]:
    """`children`: resource_type_associations, properties, objects, tags, each shown when not empty."""
    name = row["namespace"]
    view: dict[str, Any] = {"namespace": name}
    _set(view, row, "display_name", "description")
    view.update(
        visibility=row["visibility"],
        protected=row["protected"],
        owner=row["owner"],
        **_times(row),
        schema="/v2/schemas/metadefs/namespace",
        self=f"/v2/metadefs/namespaces/{name}",
    )
    view.update({key: value for key, value in children.items() if value})
    return view


def association_view(row: asyncpg.Record) -> dict[str, Any]:
    view: dict[str, Any] = {"name": row["name"]}
    _set(view, row, "prefix", "properties_target")
    view.update(_times(row))
    return view


def resource_type_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"name": row["name"], **_times(row)}


def object_view(namespace: str, row: asyncpg.Record) -> dict[str, Any]:
    view: dict[str, Any] = {"name": row["name"]}
    _set(view, row, "description", "required", "properties")
    view.update(
        _times(row),
        schema="/v2/schemas/metadefs/object",
        self=f"/v2/metadefs/namespaces/{namespace}/objects/{row['name']}",
    )
    return view


def property_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"name": row["name"], **row["definition"]}


def properties_map(rows: list[asyncpg.Record]) -> dict[str, Any]:
    """name -> definition, as a namespace and the property list show them."""
    return {row["name"]: dict(row["definition"]) for row in rows}


def tag_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"name": row["name"], **_times(row)}
