"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    #: asset lock lease and the longest wait for a held asset (OPSC_LOCK_TTL_S / _WAIT_S)
    lock_ttl_s: float = 30.0
    lock_wait_s: float = 30.0
    #: seconds between SLA sweeps of each API process (OPSC_SLA_SWEEP_S)
    sla_sweep_s: float = 1.0
    #: our log level and uvicorn's (OPSC_LOG_LEVEL)
    log_level: str = "WARNING"
    #: the secret store's master key as base64, when given in the environment
    #: (OPSC_SECRET_KEY); else the key file under ``home``
    secret_key: str | None = field(default=None, repr=False)
    #: HashiCorp Vault (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE)
    vault_addr: str | None = None
    vault_token: str | None = field(default=None, repr=False)
    vault_namespace: str | None = None
    #: where ``opsc login`` keeps its token ($XDG_CONFIG_HOME/opsconductor)
    config_dir: Path = Path()
    #: the embedded server's socket folder when ``pgdata`` is too long a path for one
    #: (XDG_RUNTIME_DIR; unset: a ``run`` folder beside ``pgdata``)
    runtime_dir: Path | None = None
    #: how long a worker's row outlives its last heartbeat before it is deleted
    #: (OPSC_WORKER_RETENTION_S); ``opsc workers`` shows stopped and stale rows until then
    worker_retention_s: float = 86400.0
    #: inventory plugins ``ansible`` sources may use besides the static ini, yaml and toml
    #: (OPSC_INVENTORY_PLUGINS, comma-separated, e.g. ``amazon.aws.aws_ec2``): the
    #: installation's decision, since a plugin config templates (lookups run on the worker)
    inventory_plugins: tuple[str, ...] = ()
    #: how often each worker looks for due schedule slots (OPSC_SCHEDULE_TICK_S), and how
    #: late a slot may be and still fire as on time (OPSC_SCHEDULE_GRACE_S; later: missed)
    schedule_tick_s: float = 1.0
    schedule_grace_s: float = 60.0
    #: an inbound webhook's timestamp may be this far from now (OPSC_HOOK_WINDOW_S)
    hook_window_s: float = 300.0

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
        lock_ttl_s=float(os.environ.get("OPSC_LOCK_TTL_S") or 30.0),
        lock_wait_s=float(os.environ.get("OPSC_LOCK_WAIT_S") or 30.0),
        sla_sweep_s=float(os.environ.get("OPSC_SLA_SWEEP_S") or 1.0),
        log_level=(os.environ.get("OPSC_LOG_LEVEL") or "WARNING").upper(),
        secret_key=os.environ.get("OPSC_SECRET_KEY") or None,
        vault_addr=os.environ.get("VAULT_ADDR") or None,
        vault_token=os.environ.get("VAULT_TOKEN") or None,
        vault_namespace=os.environ.get("VAULT_NAMESPACE") or None,
        config_dir=_path("XDG_CONFIG_HOME", Path.home() / ".config") / "opsconductor",
        runtime_dir=Path(runtime) if (runtime := os.environ.get("XDG_RUNTIME_DIR")) else None,
        worker_retention_s=float(os.environ.get("OPSC_WORKER_RETENTION_S") or 86400.0),
        inventory_plugins=tuple(
            p.strip() for p in os.environ.get("OPSC_INVENTORY_PLUGINS", "").split(",") if p.strip()
        ),
        schedule_tick_s=float(os.environ.get("OPSC_SCHEDULE_TICK_S") or 1.0),
        schedule_grace_s=float(os.environ.get("OPSC_SCHEDULE_GRACE_S") or 60.0),
        hook_window_s=float(os.environ.get("OPSC_HOOK_WINDOW_S") or 300.0),
    )
