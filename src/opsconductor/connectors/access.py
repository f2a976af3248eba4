"""What one tenant may reach on the machine the workers run on. Pure.

The workers, the API, the database and the secret store's key all live on the control plane;
a tenant's plans must not reach them. Two doors lead there:

* **local steps**: ``command``, ``script`` and ``file`` steps on a ``local`` asset (the
  built-in ``localhost``) run on this machine. They are a capability of the tenant, off
  unless an installation admin turns it on (``opsc tenant local-exec on``), and then they
  run sandboxed as an unprivileged user (``connectors/sandbox.py``) that sees only the
  tenant's working directory;
* **files**: a ``file`` step reads its source (push) or writes its copy (fetch) here; both
  are confined to the tenant's files root (``connectors/tenant_files.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opsconductor.config import DEFAULT_LOCAL_USER, Settings
from opsconductor.db.connectors import TenantSettings
from opsconductor.inventory import Asset
from opsconductor.plan import CommandStep, FileStep, ScriptStep, Step


@dataclass(frozen=True)
class TenantAccess:
    tenant_id: str
    #: this tenant's files root: ``file`` step sources and fetched copies live here
    files_root: Path
    #: this tenant's working directory: the only writable place its local steps see
    work_dir: Path
    local_execution: bool = False
    local_network: bool = False
    local_user: str = DEFAULT_LOCAL_USER

    @classmethod
    def of(cls, settings: Settings, tenant_id: str, tenant: TenantSettings) -> TenantAccess:
        # Tenant ids are checked by the database (^[a-z0-9][a-z0-9_-]{0,62}$): safe as a
        # single path component.
        return cls(
            tenant_id=tenant_id,
            files_root=settings.files_root / tenant_id,
            work_dir=settings.work_root / tenant_id,
            local_execution=tenant.local_execution,
            local_network=tenant.local_network,
            local_user=settings.local_user,
        )


def runs_locally(step: Step, asset: Asset) -> bool:
    """The step would run on this machine: a process (command, script) or a copy (file)."""
    return isinstance(step, CommandStep | ScriptStep | FileStep) and asset.connection_type == (
        "local"
    )


def capability_refusal(tenant_id: str) -> str:
    return (
        f"local execution is not enabled for tenant {tenant_id!r}: command, script and file "
        "steps on a local asset run on the OpsConductor host itself, which only an "
        "installation admin can allow (on that host: "
        f"opsc tenant local-exec on --tenant {tenant_id})"
    )


def local_refusal(
    access: TenantAccess | None, steps: Sequence[Step], targets: Sequence[Sequence[Asset]]
) -> str | None:
    """Why this plan may not run at all (checked before its first step), or None: a step on
    a local target of a tenant without the capability."""
    for index, (step, assets) in enumerate(zip(steps, targets, strict=True)):
        local = [a.asset_id for a in assets if runs_locally(step, a)]
        if local and (access is None or not access.local_execution):
            tenant = access.tenant_id if access else "?"
            return f"steps[{index}] ({step.name!r} on {local[0]}): {capability_refusal(tenant)}"
    return None
