"""Keystone's filters on a list's text attributes: exact (`name=x`) and inexact
(`name__contains=x`, `__icontains`, `__startswith`, `__istartswith`, `__endswith`,
`__iendswith`, Keystone's "inexact filtering"), plus the filters Keystone takes on attributes no
entity here has a value of (federated users' `idp_id`, expiring passwords), which match nothing.

As Keystone does, a query parameter a list does not take is ignored, and so is an inexact
operator it does not know (`name__like`): the README's "Filters" lists what each list takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from api.query_doc import param
from api.sql import Sql

# operator -> (SQL comparison, pattern around the escaped value)
_INEXACT = {
    "contains": ("LIKE", "%{}%"),
    "icontains": ("ILIKE", "%{}%"),
    "startswith": ("LIKE", "{}%"),
    "istartswith": ("ILIKE", "{}%"),
    "endswith": ("LIKE", "%{}"),
    "iendswith": ("ILIKE", "%{}"),
}


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def add_text_filters(sql: Sql, query: Mapping[str, str], columns: Mapping[str, str]) -> None:
    """Exact and inexact filters on `columns` (query name -> SQL column)."""
    for key, value in query.items():
        name, sep, op = key.partition("__")
        column = columns.get(name)
        if column is None:
            continue
        if not sep:
            sql.where(f"{column} = {sql.arg(value)}")
        elif op in _INEXACT:
            comparison, pattern = _INEXACT[op]
            sql.where(f"{column} {comparison} {sql.arg(pattern.format(_escaped(value)))}")


def add_never_set(sql: Sql, query: Any, names: Iterable[str]) -> None:
    """Filters on attributes no entity here has a value of: asked for, they match nothing."""
    if any(name in query for name in names):
        sql.where("false")


def inexact(name: str) -> list[dict[str, Any]]:
    """The /openapi.json query parameters of a text filter: exact and each inexact form."""
    return [param(name), *(param(f"{name}__{op}") for op in _INEXACT)]
