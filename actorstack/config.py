"""Settings from the environment (ACTORSTACK_*), overridden by command-line flags."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from actors.errors import ServiceUnreachable, redact

__all__ = ["Settings", "ServiceUnreachable", "redact"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/actorstack"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str
    amqp_url: str
    state_dir: Path

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": os.environ.get("ACTORSTACK_DATABASE_URL", DEFAULT_DATABASE_URL),
            "amqp_url": os.environ.get("ACTORSTACK_AMQP_URL", DEFAULT_AMQP_URL),
            "state_dir": Path(os.environ.get("ACTORSTACK_STATE_DIR", "/var/lib/actorstack")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["state_dir"] = Path(str(values["state_dir"]))
        return cls(**values)  # type: ignore[arg-type]
