"""Runs Glance's tasks in the API process: the `api_image_import` task of each image import
(glance-direct, web-download) and the `import` tasks of /v2/tasks.

An image import, as Glance's api_image_import flow: the image holds the task's lock in its
`os_glance_import_task` property from the request on; the task starts (`processing`), the image
turns `importing` with `os_glance_importing_to_stores` naming the store; the data is placed in
the store (the staged file moved in, or the URL fetched into it); then, in one transaction, the
image turns `active` with its size and hashes, the lock and the importing store are cleared and
the task succeeds with {"image_id": ...}. On failure the image goes back to `queued` with the
store in `os_glance_failed_import`, the lock is dropped, the staged data is removed and the
task fails with the reason. An `import` task creates its image from `image_properties`, fetches
`import_from` into it and succeeds with the image's id; on failure the image is deleted again.

Runners are asyncio tasks owned by the `Importer` (one per application, in its cleanup context):
stopping the API cancels them and each fails its task on the way out. A runner touches its task
while it works; a task left `pending` or `processing` longer than STALE by a process that died is
failed, and its image put back, by any API process (`reap`, every REAP_EVERY seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog
from aiohttp import web

from api.context import CTX
from api.image import formats, images, store, task_records, web_download
from api.image.data import SIZE_CAP

log = structlog.get_logger("api.image")
T = TypeVar("T")

HEARTBEAT = 30.0  # seconds between a running task's signs of life
STALE = datetime.timedelta(minutes=5)  # a running task silent this long has lost its runner
REAP_EVERY = 60.0
VISIBLE_WAIT = 30.0  # how long a runner waits for its task's creating transaction to commit

LOCK = "os_glance_import_task"
IMPORTING = "os_glance_importing_to_stores"
FAILED = "os_glance_failed_import"
INTERRUPTED = "The import was interrupted: the API process running it stopped before it ended."


class ImportFailed(Exception):
    """The import cannot complete; the message is the task's."""


def _merge(properties: dict[str, Any], key: str, stores: list[str], *, remove: bool = False) -> None:
    """Add or remove stores in a comma-separated store list property, as Glance keeps them."""
    current = {s for s in str(properties.get(key, "")).split(",") if s}
    merged = current - set(stores) if remove else current | set(stores)
    properties[key] = ",".join(sorted(merged))


class Importer:
    def __init__(self, pool: asyncpg.Pool, state_dir: Path, cap: int, rules: web_download.Filter) -> None:
        self.pool, self.state_dir, self.cap, self.rules = pool, state_dir, cap, rules
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self, task_id: str) -> None:
        """Run the task (created in a transaction that is committing or committed) in the background."""
        runner = asyncio.create_task(self._run(task_id), name=f"image task {task_id}")
        self._running[task_id] = runner
        runner.add_done_callback(lambda _: self._running.pop(task_id, None))

    async def close(self) -> None:
        runners = list(self._running.values())
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    async def _visible(self, task_id: str) -> asyncpg.Record | None:
        deadline = asyncio.get_running_loop().time() + VISIBLE_WAIT
        while True:
            row = await task_records.get(self.pool, task_id)
            if row is not None or asyncio.get_running_loop().time() > deadline:
                return row
            await asyncio.sleep(0.05)

    async def _run(self, task_id: str) -> None:
        row = await self._visible(task_id)
        if row is None:  # the request that created it rolled back
            return
        try:
            if row["type"] == "api_image_import":
                await self._image_import(row)
            else:
                await self._task_import(row)
        except ImportFailed as exc:
            log.info("image task failed", task_id=task_id, reason=str(exc))
            await self._undo(row, str(exc))
        except asyncio.CancelledError:
            await asyncio.shield(self._undo(row, INTERRUPTED))
            raise
        except Exception:
            log.exception("image task failed", task_id=task_id)
            await asyncio.shield(self._undo(row, "Task failed due to Internal Error"))

    async def _alive(self, task_id: str, work: Awaitable[T]) -> T:
        """`work`, touching the task every HEARTBEAT seconds meanwhile."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT)
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await task_records.touch(self.pool, task_id)

        beating = asyncio.create_task(beat())
        try:
            return await work
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    # --- image imports (api_image_import) -------------------------------------------------------

    async def _image_import(self, task: asyncpg.Record) -> None:
        task_id, image_id = task["id"], task["image_id"]
        request = task["input"]["import_req"]
        stores: list[str] = task["input"]["backend"]
        async with self.pool.acquire() as conn, conn.transaction():
            if not await task_records.begin(conn, task_id):
                return  # failed meanwhile (reaped)
            image = await self._locked_image(conn, task)
            properties = dict(image["properties"])
            _merge(properties, IMPORTING, stores)
            _merge(properties, FAILED, stores, remove=True)
            await conn.execute(
                "UPDATE images SET status = 'importing', properties = $2, updated_at = now() WHERE id = $1",
                image_id,
                properties,
            )
        dest = store.image_path(self.state_dir, image_id)
        method = request["method"]["name"]
        try:
            if method == "web-download":
                received = await self._alive(
                    task_id,
                    web_download.fetch(request["method"]["uri"], dest, cap=self.cap, rules=self.rules),
                )
            else:
                staged = store.staging_path(self.state_dir, image_id)
                received = await self._alive(task_id, store.place(staged, dest))
        except web_download.DownloadFailed as exc:
            raise ImportFailed(str(exc)) from None
        except FileNotFoundError:
            raise ImportFailed(f"No data is staged for image {image_id}.") from None
        await self._activate(task, received, stores)

    async def _locked_image(self, conn: Any, task: asyncpg.Record) -> asyncpg.Record:
        image = await conn.fetchrow("SELECT * FROM images WHERE id = $1 FOR UPDATE", task["image_id"])
        if image is None:
            raise ImportFailed("Image has been deleted, aborting import.")
        if image["properties"].get(LOCK) != task["id"]:
            raise ImportFailed("Task was aborted externally")
        return image

    async def _activate(self, task: asyncpg.Record, received: store.Received, stores: list[str]) -> None:
        image_id = task["image_id"]
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                image = await self._locked_image(conn, task)
                properties = {k: v for k, v in image["properties"].items() if k != LOCK}
                _merge(properties, IMPORTING, stores, remove=True)
                virtual = formats.virtual_size(
                    image["disk_format"], received.head, received.tail, received.size
                )
                await conn.execute(
                    "UPDATE images SET status = 'active', size = $2, virtual_size = $3, checksum = $4, "
                    "os_hash_algo = $5, os_hash_value = $6, properties = $7, updated_at = now() "
                    "WHERE id = $1",
                    image_id,
                    received.size,
                    virtual,
                    received.md5,
                    store.HASH_ALGO,
                    received.hash_value,
                    properties,
                )
                await task_records.succeed(conn, task["id"], {"image_id": image_id})
        except ImportFailed:
            await store.remove(store.image_path(self.state_dir, image_id))
            raise
        log.info("image imported", image_id=image_id, task_id=task["id"], size=received.size)

    # --- import tasks of /v2/tasks ---------------------------------------------------------------

    async def _task_import(self, task: asyncpg.Record) -> None:
        task_id, given = task["id"], task["input"]
        attributes, properties, tags = images.split_create_body(given["image_properties"])
        async with self.pool.acquire() as conn, conn.transaction():
            if not await task_records.begin(conn, task_id):
                return
            image = await images.insert_image(conn, task["owner"], attributes, properties, tags)
            await conn.execute("UPDATE images SET status = 'saving' WHERE id = $1", image["id"])
            await conn.execute("UPDATE image_tasks SET image_id = $2 WHERE id = $1", task_id, image["id"])
        dest = store.image_path(self.state_dir, image["id"])
        try:
            received = await self._alive(
                task_id, web_download.fetch(given["import_from"], dest, cap=self.cap, rules=self.rules)
            )
        except web_download.DownloadFailed as exc:
            raise ImportFailed(str(exc)) from None
        virtual = formats.virtual_size(image["disk_format"], received.head, received.tail, received.size)
        async with self.pool.acquire() as conn, conn.transaction():
            activated = await conn.fetchval(
                "UPDATE images SET status = 'active', size = $2, virtual_size = $3, checksum = $4, "
                "os_hash_algo = $5, os_hash_value = $6, updated_at = now() "
                "WHERE id = $1 AND status = 'saving' "
                "RETURNING id",
                image["id"],
                received.size,
                virtual,
                received.md5,
                store.HASH_ALGO,
                received.hash_value,
            )
            if activated is None:
                await store.remove(dest)
                raise ImportFailed(f"Image {image['id']} was deleted during the import.")
            await task_records.succeed(conn, task_id, {"image_id": image["id"]})

    # --- failure -----------------------------------------------------------------------------------

    async def _undo(self, task: asyncpg.Record, message: str) -> None:
        """Fail the task and put its image back (see the module's docstring)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await undo(conn, self.state_dir, task["id"], message)
        except (asyncpg.PostgresError, OSError):
            log.exception("could not record an image task's failure", task_id=task["id"])

    async def reap(self) -> int:
        """Fail the tasks whose runner died (silent for STALE); how many."""
        async with self.pool.acquire() as conn, conn.transaction():
            stale = await conn.fetch(
                "SELECT id FROM image_tasks WHERE status IN ('pending', 'processing') "
                "AND updated_at < now() - $1::interval FOR UPDATE SKIP LOCKED",
                STALE,
            )
            for row in stale:
                await undo(conn, self.state_dir, row["id"], INTERRUPTED)
        return len(stale)


async def undo(conn: Any, state_dir: Path, task_id: str, message: str) -> None:
    """In the caller's transaction: fail the task, and put its image back: an imported image to
    `queued` with its store failed and its lock dropped (if it still holds this task's lock), an
    `import` task's new image deleted."""
    task = await task_records.get(conn, task_id)
    if task is None or task["status"] not in task_records.ACTIVE:
        return
    await task_records.fail(conn, task_id, message)
    image = await conn.fetchrow("SELECT * FROM images WHERE id = $1 FOR UPDATE", task["image_id"])
    if image is None:
        return
    if task["type"] == "import":
        if image["status"] in ("queued", "saving"):
            await conn.execute("DELETE FROM images WHERE id = $1", image["id"])
            await store.remove(store.image_path(state_dir, image["id"]))
        return
    if image["properties"].get(LOCK) != task_id:
        return
    stores: list[str] = task["input"]["backend"]
    unfinished = image["status"] in ("importing", "uploading")
    properties = {k: v for k, v in image["properties"].items() if k != LOCK}
    _merge(properties, IMPORTING, stores, remove=True)
    _merge(properties, FAILED, stores)
    await conn.execute(
        "UPDATE images SET "
        "status = CASE WHEN status IN ('importing', 'uploading') THEN 'queued' ELSE status END, "
        "size = CASE WHEN status IN ('importing', 'uploading') THEN NULL ELSE size END, "
        "properties = $2, updated_at = now() WHERE id = $1",
        image["id"],
        properties,
    )
    await store.remove(store.staging_path(state_dir, image["id"]))
    if unfinished:  # data its runner may have placed before it stopped
        await store.remove(store.image_path(state_dir, image["id"]))


IMPORTER = web.AppKey("image_importer", Importer)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    importer = app[IMPORTER]

    async def reaping() -> None:
        while True:
            try:
                reaped = await importer.reap()
                if reaped:
                    log.warning("image tasks interrupted by a stopped API process were failed", count=reaped)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("image tasks: reaping failed; will retry", error=repr(exc))
            await asyncio.sleep(REAP_EVERY)

    reaper = asyncio.create_task(reaping(), name="image task reaper")
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await importer.close()


def setup(app: web.Application) -> None:
    """After data.setup (the size cap)."""
    context = app[CTX]
    app[IMPORTER] = Importer(context.pool, context.state_dir, app[SIZE_CAP], web_download.Filter.from_env())
    app.cleanup_ctx.append(_lifecycle)
