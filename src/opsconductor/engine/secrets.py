"""Secrets just in time: fetched for one step right before it runs (after its locks are
held), masked before anything can print them, audited, and dropped when the step ends."""

from __future__ import annotations

import re
from pathlib import Path

from opsconductor.config import load_settings
from opsconductor.connectors import credentials
from opsconductor.connectors.ssh import CredentialResolver
from opsconductor.db import executions
from opsconductor.db.connection import Database
from opsconductor.engine.state import Run
from opsconductor.errors import SecretError
from opsconductor.params import secret_params
from opsconductor.plan import AnsibleStep, CommandStep, FileStep, ScriptStep
from opsconductor.secret_store import SecretResolver


def step_credentials(live: dict[str, str], files_root: Path) -> CredentialResolver:
    """SSH credentials as ``StepSecrets.resolve`` fetched them for the running step
    (audited, masked); ``file:`` references name a key file in the tenant's files root
    (anywhere else on the worker, it could be the secret store's key sent as a password)."""

    def resolve(ref: str) -> str:
        if ref.startswith("file:"):
            return credentials.resolve_credential(ref, files_root)
        if ref not in live:
            raise LookupError("not resolved for this step")
        return live[ref]

    return resolve


def _credential_refs(run: Run, index: int) -> list[str]:
    """Credential references of the step's SSH targets that a secret backend holds."""
    if not isinstance(run.plan.steps[index], CommandStep | ScriptStep | FileStep | AnsibleStep):
        return []
    return [
        a.credential_ref
        for a in run.step_targets(index)
        if a.connection_type == "ssh"
        and a.credential_ref
        and not a.credential_ref.startswith("file:")
    ]


def _param_refs(run: Run, index: int) -> list[str]:
    """Paths of the ``secret-ref`` parameters the step's fields name (``params.db_pw``):
    fetched for this step only, like its own secret references."""
    names = secret_params(run.plan.params)
    if not names:
        return []
    text = run.plan.steps[index].model_dump_json(exclude={"when"})
    values = run.execution.plan_snapshot.get("params") or {}
    return [
        values[name]
        for name in names
        if isinstance(values.get(name), str) and re.search(rf"\b{re.escape(name)}\b", text)
    ]


class StepSecrets:
    def __init__(self, db: Database, resolver: SecretResolver | None) -> None:
        self.db = db
        self._resolver = resolver

    def resolver(self) -> SecretResolver:
        if self._resolver is None:
            self._resolver = SecretResolver(self.db, load_settings().home)
        return self._resolver

    async def resolve(self, run: Run, index: int) -> str | None:
        """Fetch the step's secrets; None, or why the step cannot run."""
        paths = list(
            dict.fromkeys(
                [
                    *run.secret_paths[index],  # found once per plan (known_plans)
                    *_credential_refs(run, index),
                    *_param_refs(run, index),
                ]
            )
        )
        values: dict[str, str] = {}
        for path in paths:
            try:
                resolved = await self.resolver().resolve(run.tenant_id, path)
            except SecretError as exc:
                await self._event(run, index, "secret_unresolved", path, error=str(exc))
                return str(exc)
            values[path] = resolved.value
            # Mask the value before anything can print it, then audit the access.
            run.cell.masker = run.masker.with_secrets([resolved.value])
            await self._event(run, index, "secret_resolved", path, backend=resolved.backend)
        run.secrets[index] = values
        run.credentials.update(values)
        return None

    @staticmethod
    def forget(run: Run, index: int) -> None:
        """Values live only while their step runs."""
        run.secrets.pop(index, None)
        run.credentials.clear()

    async def _event(self, run: Run, index: int, event: str, path: str, **extra: str) -> None:
        async with self.db.connection() as conn:
            await executions.append_event(
                conn,
                run.execution,
                event,
                run.actor_id,
                {
                    "step_index": index,
                    "step": run.plan.steps[index].name,
                    "path": path,
                    "on_behalf_of": run.execution.actor_id,
                    **extra,
                },
                masker=run.masker,
            )
