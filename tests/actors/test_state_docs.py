"""docs/states/<kind>.md say what the transition tables say (`python -m actors.statedoc`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import statedoc


@pytest.mark.parametrize("path", sorted(statedoc.documents()), ids=lambda p: p.name)
def test_the_state_document_is_what_the_table_says(path: Path) -> None:
    assert path.exists(), f"{path} is missing: run python -m actors.statedoc"
    assert path.read_text() == statedoc.documents()[path], f"{path} is stale: run python -m actors.statedoc"


def test_check_names_a_stale_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statedoc, "DOCS", tmp_path)
    assert statedoc.main(["--check"]) == 1  # none written yet
    assert statedoc.main([]) == 0 and statedoc.main(["--check"]) == 0
    server = tmp_path / "server.md"
    server.write_text(
        server.read_text().replace("`active:powering-off` | 180 s", "`active:powering-off` | 60 s")
    )
    assert statedoc.main(["--check"]) == 1
