"""Image v2 (Glance's API) under /image/v2: image records (`images`), their data (`data`, kept
by `store`), sharing (`members`), the JSON schemas clients fetch (`schema`) and the metadata definitions
(`metadefs`)."""

from aiohttp import web

from api.image import data, images, members, metadefs, schema


def setup(app: web.Application) -> None:
    images.setup(app)
    data.setup(app)
    members.setup(app)
    schema.setup(app)
    metadefs.setup(app)
