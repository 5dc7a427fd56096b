"""The import contracts (.importlinter, run by tools/lint) hold for the tree, and fail for a copy
of it with one deliberate upward import, one circle, one reach into another service's private
module or one I/O library imported by a transition table: the gate can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("protocol", "actors", "api", "hostagent", "actorstack")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / ".importlinter")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    done = _lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("protocol/states.py", "import actors.table", "The layers"),  # upward
        ("actors/table.py", "import api.errors", "The layers"),  # upward
        ("hostagent/locks.py", "import api.errors", "The layers"),  # sideways between layers
        ("actors/errors.py", "import actors.turn", "No import circle"),  # a circle inside actors
        ("api/volume/volumes.py", "import api.compute.servers", "The API's services"),  # a private module
        ("actors/server.py", "import asyncpg", "do no I/O"),  # a table reaching for the database
        ("protocol/compute.py", "import aio_pika", "do no I/O"),  # the protocol reaching for the broker
        ("hostagent/network/desired.py", "import asyncpg", "no database credentials"),  # an agent's own SQL
        ("hostagent/agent.py", "import actors.turn", "no database credentials"),  # the runtime's SQL
    ],
)
def test_a_deliberate_violation_breaks_the_contract(tree: Path, module: str, line: str, broken: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # a deliberate violation\n")
    done = _lint(tree)
    assert done.returncode != 0, done.stdout
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout, done.stdout
