"""Each actor kind's transition table as a document: docs/states/<kind>.md.

`python -m actors.statedoc` writes them; `--check` exits 1 naming the ones that no longer say
what the code says (tests/actors/test_state_docs.py runs it). A document lists the kind's
states with their timeouts, then every row, every ignored late report and every declined
request, all read from the table itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from actors import network, port, server, volume
from actors.table import ABSENT, Transition, TransitionTable

DOCS = Path(__file__).resolve().parent.parent / "docs" / "states"
TABLES: tuple[TransitionTable[Any], ...] = (server.table, volume.table, port.table, network.table)
DELETED = "(no row: deleted)"


def _listing(chosen: list[str], every: list[str]) -> str:
    missing = [s for s in every if s not in chosen]
    if not missing and len(chosen) > 1:
        return "any"
    if len(missing) < len(chosen) / 2:
        return "any but " + ", ".join(f"`{s}`" for s in missing)
    return ", ".join(f"`{s}`" for s in chosen)


def _names(states: Iterable[str], every: list[str]) -> str:
    """A set of states, short: `any`, `any but …`, or the list; ABSENT as the row deleted."""
    states = set(states)
    chosen = sorted(str(s) for s in states if s != ABSENT)
    if not chosen:
        return DELETED if ABSENT in states else "(no row)"
    listed = _listing(chosen, every)
    return f"{listed}, {DELETED}" if ABSENT in states else listed


def _leads_to(row: Transition, every: list[str]) -> str:
    return "stays" if not row.targets else f"{_names(row.targets, every)} (or stays)"


def render(table: TransitionTable[Any]) -> str:
    every = sorted(str(s) for s in table.states)
    lines = [
        f"# The {table.kind} actor's transition table",
        "",
        f"Generated from the code by `python -m actors.statedoc`; a test keeps it equal. The error "
        f"state is `{table.error_state}`. A row's handler may always stay in its current state; a "
        "state's timeout is set when the actor enters it and cancelled when it leaves.",
        "",
        "## States",
        "",
        "| state | timeout | when it runs out |",
        "|---|---|---|",
    ]
    for state in every:
        timeout = table.timeout_of(state)
        if timeout is None:
            lines.append(f"| `{state}` | | |")
        else:
            handler = timeout.row.handler.__name__
            lines.append(
                f"| `{state}` | {timeout.after:g} s | `{handler}` → {_leads_to(timeout.row, every)} |"
            )
    lines += ["", "## Rows", "", "| message | in | leads to | handler |", "|---|---|---|---|"]
    rows = sorted(table.transitions(timeouts=False), key=lambda r: (r.message.TYPE, sorted(r.sources)))
    for row in rows:
        lines.append(
            f"| `{row.message.TYPE}` | {_names(row.sources, every)} | {_leads_to(row, every)} "
            f"| `{row.handler.__name__}` |"
        )
    if table.ignored():
        lines += ["", "## Accepted and ignored (late reports)", "", "| message | in |", "|---|---|"]
        for entry in sorted(table.ignored(), key=lambda e: e.message.TYPE):
            lines.append(f"| `{entry.message.TYPE}` | {_names(entry.states, every)} |")
    if table.declined():
        lines += ["", "## Declined, answered by message", "", "| message | in | handler |", "|---|---|---|"]
        for declined in sorted(table.declined(), key=lambda e: e.message.TYPE):
            name = declined.handler.__name__
            lines.append(f"| `{declined.message.TYPE}` | {_names(declined.states, every)} | `{name}` |")
    lines += ["", "Any other message, in any state, is refused (IllegalTransition) and changes nothing.", ""]
    return "\n".join(lines)


def documents() -> dict[Path, str]:
    return {DOCS / f"{table.kind}.md": render(table) for table in TABLES}


def main(argv: list[str]) -> int:
    stale = [path for path, text in documents().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path} is not what the code says: run python -m actors.statedoc", file=sys.stderr)
        return 1 if stale else 0
    DOCS.mkdir(parents=True, exist_ok=True)
    for path, text in documents().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
