"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "opsconductor"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    #: the tenant the local administrator acts in (``$OPSC_TENANT``); who acts is never
    #: read from the environment: see ``services.caller``
    tenant: str

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"


def load_settings() -> Settings:
    home = Path(os.environ["OPSC_HOME"]) if os.environ.get("OPSC_HOME") else _default_home()
    return Settings(
        home=home.expanduser(),
        database_url=os.environ.get("DATABASE_URL") or None,
        tenant=os.environ.get("OPSC_TENANT", "default"),
    )
