"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "opsconductor"


#: ``env:`` secrets read only variables whose names start with this (OPSC_SECRET_ENV_PREFIX).
DEFAULT_SECRET_ENV_PREFIX = "OPSC_SECRET_ENV_"
#: The unprivileged OS user local steps run as (OPSC_LOCAL_USER).
DEFAULT_LOCAL_USER = "opsc-run"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    #: the tenant the local administrator acts in (``$OPSC_TENANT``); who acts is never
    #: read from the environment: see ``services.caller``
    tenant: str
    #: per-tenant roots ``<files_root>/<tenant>`` of ``file`` step sources and fetches
    files_root: Path = Path()
    #: per-tenant working directories ``<work_root>/<tenant>`` of local steps
    work_root: Path = Path()
    local_user: str = DEFAULT_LOCAL_USER
    secret_env_prefix: str = DEFAULT_SECRET_ENV_PREFIX

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def load_settings() -> Settings:
    home = _path("OPSC_HOME", _default_home())
    return Settings(
        home=home,
        database_url=os.environ.get("DATABASE_URL") or None,
        tenant=os.environ.get("OPSC_TENANT", "default"),
        files_root=_path("OPSC_FILES_ROOT", home / "files"),
        work_root=_path("OPSC_WORK_ROOT", home / "work"),
        local_user=os.environ.get("OPSC_LOCAL_USER") or DEFAULT_LOCAL_USER,
        secret_env_prefix=os.environ.get("OPSC_SECRET_ENV_PREFIX") or DEFAULT_SECRET_ENV_PREFIX,
    )
