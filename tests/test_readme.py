"""The README's blocks run as written: every ```sh block, in order, in one bash shell (`set -e`,
`pipefail`), from a directory that looks like the checkout (its `.venv` and `tools`), against a
cloud of the test's own (`up --hosts 3 --virt test --network none`). The only blocks left out are
those the README marks, just above them, with `<!-- tests/test_readme.py skips this block: why -->`
(the two commands themselves, long-running tails, real guests)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from actorstack.scratch import ScratchServices
from tests.conftest import ROOT, RUN_PREFIX

README = ROOT / "README.md"
SKIP = "<!-- tests/test_readme.py skips this block:"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[str]:
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not before.startswith(SKIP):
            blocks.append(match.group(1))
    return blocks


def test_every_block_is_run_or_marked_skipped_with_a_reason() -> None:
    text = README.read_text()
    skipped = [line for line in text.splitlines() if line.startswith(SKIP)]
    assert all(line.endswith("-->") and len(line) > len(SKIP) + 10 for line in skipped), skipped
    assert len(runnable_blocks(text)) >= 4  # the walk-throughs run: servers, networks, volumes, events


async def test_the_readme_blocks_run_as_written(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in (".venv", "tools"):
        (checkout / name).symlink_to(ROOT / name)
    script = "set -euo pipefail\nset -x\n" + "\n".join(runnable_blocks(README.read_text()))
    async with (
        ScratchServices(f"{RUN_PREFIX}_readme", tmp_path / "state") as services,
        services.cloud(log_dir=tmp_path) as cloud,
    ):
        await cloud.up("--hosts", "3", "--virt", "test", "--network", "none", timeout=120)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ACTORSTACK_"))}
        env.update(
            PATH=os.environ.get("PATH", "/usr/bin:/bin"),
            ACTORSTACK_LISTEN=cloud.listen,
            ACTORSTACK_ADMIN_PASSWORD=cloud.password,
            ACTORSTACK_AMQP_URL=services.amqp_url,
            ACTORSTACK_DATABASE_URL=services.database_url,
        )
        done = subprocess.run(
            ["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"a README block failed:\n{done.stderr[-6000:]}"
