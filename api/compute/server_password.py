"""/compute/v2.1/servers/{id}/os-server-password: the password a guest posted, encrypted with
its key pair, for its owner to read and decrypt (`nova get-password`), and to clear.

In Nova the guest posts it to the metadata service, which keeps it with the server; here it is
the server's `password` column, which this cloud's metadata service (hostagent/network/metadata.py)
does not fill yet: it serves the password path but takes no post. Reading it answers "" when none
is kept, and clearing it empties the column without changing anything in the guest, as Nova.
"""

from __future__ import annotations

from aiohttp import web

from api.compute.server_lookup import find
from api.context import caller, ctx, json_response


async def show(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, me, request.match_info["server_id"])
    return json_response({"password": row["password"] or ""})


async def clear(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["server_id"])
        me.require_writer("os_compute_api:os-server-password:clear")
        await conn.execute("UPDATE servers SET password = '', version = version + 1 WHERE id = $1", row["id"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/servers/{server_id}/os-server-password", show)
    r.add_delete("/compute/v2.1/servers/{server_id}/os-server-password", clear)
