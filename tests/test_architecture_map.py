"""ARCHITECTURE.md is a map of the repository: every path it names exists, and it names every
module of the product, so it cannot silently fall behind the code.

What counts as a path named by a document (fenced code blocks are skipped):

- the target of every Markdown link `[text](target)` that is not a URL (`scheme:`) or an anchor
  (`#…`); a `#fragment` after a path is dropped. A target ending in `/` must be a directory;
  every target must stay inside the repository;
- every inline code span whose whole content looks like a relative path: letters, digits, `_`,
  `.`, `-` in segments joined by `/`, perhaps with a trailing `/` (a directory), and either
  containing a `/` or ending in `.py`, `.sql`, `.md` or `.toml`. Spans with anything else in them
  (`<state dir>/volumes`, `/v1/events`, `qemu:///system`, a space) are not paths.

Paths are relative to the repository's root, never to the document's section: `turn.py` alone
is a typo for `actors/turn.py`. And a link whose text looks like a path must name the tail of
its target (`[turn.py](actors/turn.py)`, not `[timers.py](actors/turn.py)`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "ARCHITECTURE.md"
PRODUCT = ("protocol", "actors", "api", "hostagent", "actorstack")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]+)\)")
_SPAN = re.compile(r"`([^`\n]+)`")
_PATHLIKE = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/?")
_SUFFIXES = (".py", ".sql", ".md", ".toml")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _looks_like_path(text: str) -> bool:
    return (
        _PATHLIKE.fullmatch(text) is not None
        and text not in (".", "..")
        and ("/" in text or text.endswith(_SUFFIXES))
    )


def _is_tail(shown: str, target: str) -> bool:
    """Whether `shown` is the last segments of `target` (`virt/base.py` of `hostagent/virt/base.py`)."""
    tail = shown.rstrip("/").split("/")
    return target.rstrip("/").split("/")[-len(tail) :] == tail


def named_paths(markdown: str) -> tuple[set[str], list[str]]:
    """The repository paths a document names, and the problems found while reading its links
    (a link text naming another file than its target)."""
    text = _FENCE.sub("", markdown)
    paths: set[str] = set()
    problems: list[str] = []
    for label, target in _LINK.findall(text):
        if target.startswith("#") or _URL.match(target):
            continue
        target = target.split("#", 1)[0]
        paths.add(target)
        shown = label.strip("`")
        if _looks_like_path(shown) and not _is_tail(shown, target):
            problems.append(f"[{label}]({target}): the text names another path than the target")
    # Link texts were checked against their targets; a span inside a link text is not a path.
    without_links = _LINK.sub("", text)
    paths.update(span for span in _SPAN.findall(without_links) if _looks_like_path(span))
    return paths, problems


def missing(paths: set[str], root: Path = ROOT) -> list[str]:
    """The paths that do not exist under `root` (or are not directories when they end in `/`,
    or lead out of it)."""
    wrong = []
    for name in sorted(paths):
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.exists() or (name.endswith("/") and not path.is_dir()):
            wrong.append(name)
    return wrong


def product_modules(root: Path = ROOT) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for package in PRODUCT
        for path in (root / package).rglob("*.py")
        if path.name != "__init__.py"
    }


def test_every_path_the_map_names_exists() -> None:
    paths, problems = named_paths(MAP.read_text())
    assert not problems
    assert not missing(paths), "ARCHITECTURE.md names paths that do not exist"


def test_the_map_names_every_module_of_the_product() -> None:
    paths, _ = named_paths(MAP.read_text())
    unnamed = sorted(product_modules() - paths)
    assert not unnamed, "modules missing from ARCHITECTURE.md's code map"


@pytest.mark.parametrize("document", ["README.md", "ARCHITECTURE.md", "actors/README.md"])
def test_documents_link_only_to_files_of_the_repository(document: str) -> None:
    """The repository stands alone: no link leads outside it, and none is broken."""
    text = _FENCE.sub("", (ROOT / document).read_text())
    base = (ROOT / document).parent
    targets = [
        t.split("#", 1)[0] for _, t in _LINK.findall(text) if not t.startswith("#") and not _URL.match(t)
    ]
    broken = [t for t in targets if not (base / t).resolve().is_relative_to(ROOT) or not (base / t).exists()]
    assert not broken, f"{document} links to what is not in the repository"


# --- the rules themselves: a typo anywhere is caught ---------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        "- [turn.py](actors/turnn.py): a typo in a link's target",
        "- [turnn.py](actors/turn.py): a typo in a link's text",
        "- [urn.py](actors/turn.py): a link's text that is only the end of a name",
        "the table in `actors/tabel.py`",
        "the schema in `schema.sq.sql`",
        "`turn.py` written without its package",
        "- [tools](tools/lint/): a file named as a directory",
        "[outside](../shared/ARCHITECTURE.md)",
    ],
)
def test_a_typo_in_a_path_is_caught(document: str) -> None:
    paths, problems = named_paths(document)
    assert problems or missing(paths)


@pytest.mark.parametrize(
    "document",
    [
        "[turn.py](actors/turn.py) and [`tools/lint`](tools/lint#top), [docs](docs/states/)",
        "`<state dir>/volumes/`, `/v1/events`, `qemu:///system`, `server.build`, `x-openstack-request-id`",
        "[Nova](https://docs.openstack.org/nova/) and [below](#walk-1-a-boot)",
        "```\nactors/not_a_file.py inside a fence is an example\n```",
    ],
)
def test_what_is_not_a_path_or_is_right_passes(document: str) -> None:
    paths, problems = named_paths(document)
    assert not problems and not missing(paths)
