"""Image v2 (Glance's API) under /image/v2: image records (`images`), their data (`data`, kept
by `store`), sharing (`members`), the JSON schemas clients fetch (`schema`), interoperable
import (`info`, `imports`, run by `importer`, fetching with `web_download`), tasks (`tasks`,
`task_records`) and the metadata definitions (`metadefs`)."""

from aiohttp import web

from api.image import data, images, imports, info, members, metadefs, schema, tasks


def setup(app: web.Application) -> None:
    images.setup(app)
    data.setup(app)  # before imports: the importer takes the size cap
    members.setup(app)
    schema.setup(app)
    info.setup(app)
    imports.setup(app)
    tasks.setup(app)
    metadefs.setup(app)
