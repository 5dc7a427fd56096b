"""Named points where a test can make this process die as if killed (-9).

ACTORSTACK_CRASHPOINTS=turn.after_commit,relay.before_publish makes the process call
os._exit(70) the first time it reaches each named point. Tests use it to prove the recovery
guarantees (a crash between commit and ack, or between commit and publish); unset, a
crashpoint costs one set lookup.
"""

from __future__ import annotations

import os
import sys

ARMED = frozenset(p.strip() for p in os.environ.get("ACTORSTACK_CRASHPOINTS", "").split(",") if p.strip())
EXIT_CODE = 70


def crashpoint(name: str) -> None:
    if name in ARMED:
        sys.stderr.write(f"crashpoint {name}: exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
