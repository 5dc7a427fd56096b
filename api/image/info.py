"""What this Glance offers: /v2/info/import (the interoperable import methods) and /v2/info/stores
(its one store, as a Glance with multiple stores enabled lists them, so images show `stores`).

The store is the file store of `api/image/store.py`; an image's data is in it once the image is
active (or deactivated)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_response
from api.errors import Forbidden
from api.image import store

IMPORT_METHODS = ("glance-direct", "web-download")
STORE_ID = "local"
STORE_DESCRIPTION = "Image data in the cloud's state directory"
# Glance adds these to the answer of an image create.
CREATE_HEADERS = {
    "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
    "OpenStack-image-store-ids": STORE_ID,
}


def store_of(image: Any) -> str | None:
    """The image's `stores` attribute: where its data is, once it has some."""
    return STORE_ID if image["status"] in ("active", "deactivated") and image["size"] is not None else None


async def import_info(request: web.Request) -> web.Response:
    return json_response(
        {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": list(IMPORT_METHODS),
            }
        }
    )


async def stores_info(request: web.Request) -> web.Response:
    return json_response({"stores": [{"id": STORE_ID, "description": STORE_DESCRIPTION, "default": True}]})


async def stores_detail(request: web.Request) -> web.Response:
    """Admins only (Glance's stores_info_detail), with the store's type and settings."""
    if not caller(request).is_admin:
        raise Forbidden("You are not authorized to complete stores_info_detail action.")
    data_dir = str(store.image_dir(ctx(request).state_dir))
    detail = {
        "id": STORE_ID,
        "description": STORE_DESCRIPTION,
        "default": True,
        "type": "file",
        "weight": 0,
        "properties": {"data_dir": data_dir, "chunk_size": store.CHUNK, "thin_provisioning": False},
    }
    return json_response({"stores": [detail]})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/image/v2/info/import", import_info)
    r.add_get("/image/v2/info/stores", stores_info)
    r.add_get("/image/v2/info/stores/detail", stores_detail)
