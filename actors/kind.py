"""An actor kind: its transition table bound to the PostgreSQL table that holds its rows.

The row *is* the actor's durable state. The record struct's fields are the table's columns
(the struct must have `id` and `version`); the runtime reads and writes rows generically from
that list, so adding a kind needs a table in schema.sql, a record struct and a transition table.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import msgspec

from actors import db
from actors.table import Notify, TransitionTable
from protocol.notifications import Notification

# Builds a notification from the actor's full row (every column, after the change) and the
# handler's Notify; and names the notification a fault sends, given the record before it.
Notifier = Callable[[Mapping[str, Any], Notify], Notification]
FaultNotice = Callable[[Any], "Notify | None"]


@dataclasses.dataclass(frozen=True)
class ActorKind:
    table: TransitionTable[Any]
    sql_table: str
    # The record field that names the owning project (copied into events), if the kind has one.
    project_field: str | None = None
    notifier: Notifier | None = None
    fault_notice: FaultNotice | None = None

    @property
    def name(self) -> str:
        return self.table.kind

    def __post_init__(self) -> None:
        fields = self.table.record.__struct_fields__
        for required in ("id", "version"):
            if required not in fields:
                raise TypeError(f"{self.name}: record {self.table.record.__name__} lacks {required!r}")
        if self.project_field is not None and self.project_field not in fields:
            raise TypeError(f"{self.name}: record has no project field {self.project_field!r}")
        store = RowStore(self.sql_table, self.table.record)
        object.__setattr__(self, "store", store)

    store: RowStore = dataclasses.field(init=False, repr=False, compare=False)

    async def full_row(self, conn: db.Connection, record: Any) -> dict[str, Any]:
        """Every column of the actor's row (what a notification describes); the record itself
        when the row is gone."""
        row = await conn.fetchrow(f"SELECT * FROM {self.sql_table} WHERE id = $1", record.id)
        return (
            dict(row) if row is not None else msgspec.to_builtins(record, builtin_types=(datetime.datetime,))
        )

    def project_of(self, record: Any) -> str | None:
        if record is None or self.project_field is None:
            return None
        value = getattr(record, self.project_field)
        return None if value is None else str(value)


class RowStore:
    """Reads and writes one kind's rows. Writes are guarded by the `version` column."""

    def __init__(self, sql_table: str, record: type[msgspec.Struct]) -> None:
        self.record = record
        self.columns = tuple(record.__struct_fields__)
        cols = ", ".join(self.columns)
        self._select = f"SELECT {cols} FROM {sql_table} WHERE id = $1"
        self._select_locked = self._select + " FOR UPDATE"
        placeholders = ", ".join(f"${i}" for i in range(1, len(self.columns) + 1))
        self._insert = (
            f"INSERT INTO {sql_table} ({cols}) VALUES ({placeholders}) "
            f"ON CONFLICT (id) DO NOTHING RETURNING version"
        )
        settable = [c for c in self.columns if c not in ("id", "version")]
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(settable, start=3))
        self._settable = settable
        self._update = (
            f"UPDATE {sql_table} SET {assignments}{', ' if settable else ''}version = version + 1 "
            f"WHERE id = $1 AND version = $2 RETURNING version"
        )
        self._delete = f"DELETE FROM {sql_table} WHERE id = $1 AND version = $2"

    def decode(self, row: asyncpg.Record | None) -> Any:
        """The record in a row (a row with more columns, e.g. a SELECT *, is fine)."""
        if row is None:
            return None
        return msgspec.convert({c: row[c] for c in self.columns}, self.record, strict=False)

    async def load(self, conn: db.Connection, actor_id: str, *, lock: bool) -> Any:
        return self.decode(await conn.fetchrow(self._select_locked if lock else self._select, actor_id))

    async def insert(self, conn: db.Connection, record: Any) -> Any | None:
        """Insert a new actor at version 1; None when a row with that id already exists."""
        record = msgspec.structs.replace(record, version=1)
        version = await conn.fetchval(self._insert, *(getattr(record, c) for c in self.columns))
        return None if version is None else record

    async def update(self, conn: db.Connection, record: Any, expected_version: int) -> Any | None:
        """Store `record` if the row is still at `expected_version`; None when it moved on."""
        version = await conn.fetchval(
            self._update, record.id, expected_version, *(getattr(record, c) for c in self._settable)
        )
        return None if version is None else msgspec.structs.replace(record, version=version)

    async def delete(self, conn: db.Connection, actor_id: Any, expected_version: int) -> bool:
        return (await conn.execute(self._delete, actor_id, expected_version)) == "DELETE 1"
