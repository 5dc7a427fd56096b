"""What the benchmarks share: their error, their progress lines, percentiles (their scratch clouds
come from actorstack/scratch.py)."""

from __future__ import annotations

import math
import sys
import time


class BenchError(Exception):
    """A benchmark cannot go on; its message says why (the run cleans up and exits 1)."""


def log(message: str) -> None:
    """A timestamped progress line on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest sample with at least p % of the samples at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def exit_code(*, interrupted: bool, failed: BaseException | None, problems: list[str]) -> int:
    """A benchmark's exit status after its cleanup: 130 interrupted, 1 failed or not clean, else 0."""
    if interrupted:
        log("interrupted")
        return 130
    if failed is not None:
        log(f"failed: {failed}")
        return 1
    return 1 if problems else 0
