"""A WHERE clause built from a request's filters, its values passed as query arguments (never
formatted into the SQL), shared by the list endpoints of every service."""

from __future__ import annotations

from typing import Any


class Sql:
    """A WHERE clause under construction: conditions and the arguments their $n refer to."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self, condition: str) -> None:
        self.conditions.append(condition)

    def clause(self) -> str:
        return " AND ".join(self.conditions) or "TRUE"
