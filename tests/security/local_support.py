"""Helpers of the local execution attacks: tenants with and without the capability, plans
run through the real engine, what a step printed."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from opsconductor.db import assets, auth, connectors, executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import parse_plan
from opsconductor.records import Event, StepAttempt
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit

LOCAL = {"hostnames": ["localhost"]}

#: Sandboxed local execution needs root (to become the unprivileged user) and bubblewrap.
needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="the sandbox needs root (to switch to the unprivileged user) and bubblewrap "
    "(apt-get install bubblewrap); this process is not root or has no bwrap",
)


@dataclass(frozen=True)
class Ran:
    status: Status
    reason: str | None
    rows: list[StepAttempt]
    events: list[Event]

    @property
    def text(self) -> str:
        """Everything the steps left: output, stderr, errors."""
        return "\n".join(f"{r.output}\n{r.stderr}\n{r.error or ''}" for r in self.rows)


async def tenant(db: Database, name: str, *, local: bool, network: bool = False) -> str:
    """A tenant; local execution granted or not."""
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, name)
        await connectors.set_local_execution(conn, name, "test", on=local, network=network)
    return name


async def run(
    db: Database,
    tenant_id: str,
    *steps_: dict[str, Any],
    role: str = "operator",
    between: Callable[[], None] | None = None,
) -> Ran:
    """Submit (as ``op``, holding ``role`` in the tenant) and run the plan in this process,
    as a worker would; ``between`` runs after the submission, before the run (an attacker
    changing things under a queued plan)."""
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, tenant_id)
        await auth.ensure_actor(conn, tenant_id, "op")
        await auth.grant(conn, tenant_id, "op", role, granted_by="test")
    plan = parse_plan({"name": "attack", "steps": list(steps_)})
    submitted = await submit(db, Request(plan, tenant_id, "op", uuid.uuid4().hex))
    execution_id = submitted.execution.id
    if between is not None:
        between()
    status = await Engine(db, actor_id="worker").run(tenant_id, execution_id)
    async with db.connection() as conn:
        row = await executions.get(conn, tenant_id, str(execution_id))
        rows = await steps.list_for(conn, execution_id)
        events = await executions.events(conn, execution_id)
    return Ran(status, row.status_reason, rows, events)


def command(command_: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": extra.pop("name", "probe"),
        "type": "command",
        "action_class": "read",
        "targets": LOCAL,
        "command": command_,
        "timeout_s": extra.pop("timeout_s", 30),
        **extra,
    }


def script(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": extra.pop("name", "probe"),
        "type": "script",
        "action_class": "read",
        "targets": LOCAL,
        "script": text,
        "timeout_s": extra.pop("timeout_s", 60),
        **extra,
    }
