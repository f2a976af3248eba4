"""The engine: runs one execution's steps over their targets and records every move.

One engine serves both paths: ``opsc run`` calls it in-process (immediate), workers call it
for queued executions (background).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opsconductor import approval_gate, policies, rbac, validation
from opsconductor.connectors.credentials import resolve_credential as env_credentials
from opsconductor.connectors.outcome import RECORD_ONLY
from opsconductor.connectors.session import Connectors
from opsconductor.connectors.ssh import CredentialResolver
from opsconductor.db import assets, connectors, executions, steps
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.output import cap_text
from opsconductor.plan import Plan, ValidateStep, parse_plan
from opsconductor.status_machine import Status
from opsconductor.templating import uses_step_results

#: How many targets of one step run at once unless the step sets ``concurrency``.
DEFAULT_STEP_CONCURRENCY = 10
#: How many targets one engine (one worker) runs at once, over all its executions.
DEFAULT_TARGET_CONCURRENCY = 100

#: Attempt statuses that let a step count as done (skipped: record-only mode).
_DONE = frozenset({"completed", "skipped"})


@dataclass(frozen=True)
class StepEvent:
    """Progress notice for displays: one step attempt on one target started or finished."""

    step_index: int
    step_name: str
    asset_id: str
    status: str
    attempt: int
    detail: str | None = None
    #: no further attempt follows on this target
    final: bool = False


Observer = Callable[[StepEvent], None]


@dataclass
class _Run:
    execution: dict[str, Any]
    plan: Plan
    targets: list[list[Asset]]
    deadline: float
    matrix: policies.PolicyMatrix
    connectors: Connectors
    deadline_hit: bool = False
    results: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(str(self.execution["id"]))

    @property
    def tenant_id(self) -> str:
        return str(self.execution["tenant_id"])

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class _Attempt:
    status: str
    exit_code: int | None = None
    output: str = ""
    stderr: str = ""
    error: str | None = None


def _target_env(run: _Run, index: int, asset: Asset) -> dict[str, str]:
    """What a local command may want to know about where and why it runs."""
    return {
        "OPSC_EXECUTION_ID": str(run.id),
        "OPSC_STEP_INDEX": str(index),
        "OPSC_STEP_NAME": run.plan.steps[index].name,
        "OPSC_ASSET_ID": asset.asset_id,
        "OPSC_ASSET_HOSTNAME": asset.hostname,
        "OPSC_ASSET_ADDRESS": asset.address,
        "OPSC_ASSET_ENVIRONMENT": asset.environment,
    }


class Engine:
    def __init__(
        self,
        db: Database,
        *,
        actor_id: str,
        worker_id: str | None = None,
        observer: Observer | None = None,
        target_concurrency: int = DEFAULT_TARGET_CONCURRENCY,
        resolve_credential: CredentialResolver = env_credentials,
        record_only: bool = False,
        authorize: rbac.StepAuthorizer | None = None,
    ) -> None:
        self.db = db
        #: RBAC checked again before every step on every target (defense in depth: roles
        #: may change after submission). Every entry point of the product passes one.
        self.authorize = authorize
        self.actor_id = actor_id
        self.worker_id = worker_id
        self.observer = observer or (lambda _event: None)
        self.target_slots = asyncio.Semaphore(target_concurrency)
        self.resolve_credential = resolve_credential
        #: record-only for everything this engine runs (besides per tenant / execution)
        self.record_only = record_only

    async def run(self, tenant_id: str, execution_id: uuid.UUID) -> Status:
        """Run an ``approved`` (or ``queued``) execution to its end; return its final status."""
        async with self.db.connection() as conn:
            execution = await executions.get(conn, tenant_id, str(execution_id))
        if execution["approval_level"] >= 1:
            moved = await approval_gate.still_valid(self.db, execution, self.actor_id)
            if moved is not None:
                return moved  # what was approved is not what would run now
        run, missing = await self._load(execution)
        current = Status(run.execution["status"])
        timeout_s = policies.execution_timeout(run.plan, run.execution["sla_class"], run.matrix)
        run.deadline = time.monotonic() + timeout_s
        async with self.db.connection() as conn:
            await executions.transition(
                conn,
                run.id,
                current,
                Status.RUNNING,
                actor_id=self.actor_id,
                timeout_at=datetime.now(UTC) + timedelta(seconds=timeout_s),
                worker_id=self.worker_id,
            )
        if missing:
            gone = ", ".join(sorted(missing))
            await self._finish(run, Status.FAILED, f"assets no longer in the inventory: {gone}")
            return Status.FAILED
        try:
            final, reason = await self._run_steps(run)
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(run, Status.CANCELLED, "interrupted"))
            raise
        finally:
            await asyncio.shield(run.connectors.aclose())
        await self._finish(run, final, reason)
        return final

    async def _load(self, execution: dict[str, Any]) -> tuple[_Run, set[str]]:
        tenant_id = execution["tenant_id"]
        snapshot = execution["plan_snapshot"]
        wanted = {a for step_targets in snapshot["targets"] for a in step_targets}
        async with self.db.connection() as conn:
            matrix = {
                (r["sla_class"], r["action_class"]): policies.TimeoutPolicy.from_row(r)
                for r in await executions.policies(conn)
            }
            found = await assets.by_ids(conn, tenant_id, wanted)
            tenant = await connectors.tenant_settings(conn, tenant_id)
        plan = parse_plan(snapshot["plan"])
        targets = [
            [found[a] for a in step_targets if a in found] for step_targets in snapshot["targets"]
        ]
        # Any one of the three makes the run record-only: safe wins over fast.
        record_only = bool(execution.get("record_only")) or tenant.record_only or self.record_only
        known_hosts = connectors.KnownHosts(
            self.db, tenant_id, tenant.host_key_policy, self.actor_id
        )
        session = Connectors(
            known_hosts, resolve_credential=self.resolve_credential, record_only=record_only
        )
        run = _Run(execution, plan, targets, deadline=0.0, matrix=matrix, connectors=session)
        return run, wanted - set(found)

    async def _finish(self, run: _Run, final: Status, reason: str | None) -> None:
        async with self.db.transaction() as conn:
            await steps.skip_pending(conn, run.id)
            await executions.transition(
                conn, run.id, Status.RUNNING, final, actor_id=self.actor_id, reason=reason
            )

    async def _run_steps(self, run: _Run) -> tuple[Status, str | None]:
        for index in range(len(run.plan.steps)):
            run.results[index] = await self._run_step(run, index)
            bad = {a: s for a, s in run.results[index].items() if s not in _DONE}
            if bad:
                return self._verdict(run, index, bad)
        return Status.COMPLETED, None

    async def _run_step(self, run: _Run, index: int) -> dict[str, str]:
        """All targets of one step, at most the step's ``concurrency`` at once and at most
        ``target_slots`` over the whole engine; outcome by asset id, in target order."""
        targets = run.targets[index]
        slots = asyncio.Semaphore(run.plan.steps[index].concurrency or DEFAULT_STEP_CONCURRENCY)

        async def one(asset: Asset) -> str:
            async with slots, self.target_slots:
                return await self._run_on_target(run, index, asset)

        outcomes = await asyncio.gather(*(one(a) for a in targets))
        return {a.asset_id: s for a, s in zip(targets, outcomes, strict=True)}

    def _verdict(self, run: _Run, index: int, bad: dict[str, str]) -> tuple[Status, str]:
        step = run.plan.steps[index]
        where = ", ".join(f"{asset} ({status})" for asset, status in sorted(bad.items()))
        if run.deadline_hit:
            return Status.TIMEOUT, f"execution timeout reached during step {step.name!r}"
        if len(bad) < len(run.results[index]):
            return Status.PARTIAL, f"step {step.name!r} failed on {where}"
        if all(status == "timeout" for status in bad.values()):
            return Status.TIMEOUT, f"step {step.name!r} timed out on {where}"
        return Status.FAILED, f"step {step.name!r} failed on {where}"

    async def _run_on_target(self, run: _Run, index: int, asset: Asset) -> str:
        step = run.plan.steps[index]
        if await self._denied(run, index, asset):
            return "failed"
        status = "failed"
        for attempt in range(1, step.retries + 2):
            if run.remaining() <= 0:
                run.deadline_hit = True
                return "timeout"
            attempt_id = await self._start(run, index, asset, attempt)
            result = await self._execute(run, index, step, asset)
            status = result.status
            final = status in _DONE or attempt > step.retries or run.deadline_hit
            await self._record(run, index, asset, attempt, attempt_id, result, final)
            if final:
                break
            await asyncio.sleep(min(policies.backoff_s(attempt - 1), max(0.0, run.remaining())))
        return status

    async def _denied(self, run: _Run, index: int, asset: Asset) -> bool:
        """Ask RBAC about this step on this target; on a denial fail the step without
        running anything and record an ``rbac_violation`` event (who, what, where)."""
        if self.authorize is None:
            return False
        step = run.plan.steps[index]
        check = rbac.StepCheck(
            tenant_id=run.tenant_id,
            actor_id=str(run.execution["actor_id"]),
            execution_id=run.id,
            step_index=index,
            step_name=step.name,
            action_class=step.action_class,
            asset_id=asset.asset_id,
            environment=asset.environment,
        )
        reason = await self.authorize(check)
        if reason is None:
            return False
        error = f"denied by RBAC: {reason}"
        async with self.db.transaction() as conn:
            attempt_id = await steps.start_attempt(
                conn,
                execution_id=run.id,
                tenant_id=run.tenant_id,
                step_index=index,
                step_name=step.name,
                step_type=step.type,
                asset_id=asset.asset_id,
                attempt=1,
                retry_count=0,
            )
            await steps.finish_attempt(
                conn, attempt_id, status="failed", exit_code=None, output="", stderr="", error=error
            )
            await executions.append_event(
                conn,
                run.execution,
                "rbac_violation",
                self.actor_id,
                {
                    "actor": check.actor_id,
                    "step_index": index,
                    "step": step.name,
                    "action_class": step.action_class,
                    "target": asset.asset_id,
                    "environment": asset.environment,
                    "reason": reason,
                },
            )
        self.observer(StepEvent(index, step.name, asset.asset_id, "failed", 1, error, True))
        return True

    async def _execute(self, run: _Run, index: int, step: Any, asset: Asset) -> _Attempt:
        """Dispatch by step type: validate steps here, every other type to its connector."""
        if isinstance(step, ValidateStep):
            if run.connectors.record_only:  # nothing ran, so there is nothing to check
                return _Attempt("skipped", output=RECORD_ONLY)
            return await self._validate(run, step, asset)
        limit = policies.step_timeout(step, run.execution["sla_class"], run.matrix)
        budget = min(limit, run.remaining())
        results = None
        if uses_step_results(step.model_dump_json()):
            async with self.db.connection() as conn:
                results = await steps.target_results(conn, run.id, asset.asset_id, index)
        outcome = await run.connectors.execute(
            step,
            asset,
            where=f"steps[{index}]",
            timeout_s=budget,
            env=_target_env(run, index, asset),
            results=results,
        )
        if outcome.status == "timeout" and budget < limit:
            run.deadline_hit = True
        return _Attempt(
            outcome.status, outcome.exit_code, outcome.output, outcome.stderr, outcome.error
        )

    async def _validate(self, run: _Run, step: ValidateStep, asset: Asset) -> _Attempt:
        checked = next(i for i, s in enumerate(run.plan.steps) if s.name == step.step)
        async with self.db.connection() as conn:
            rows = await steps.latest_results(conn, run.id, checked)
        row = rows.get(asset.asset_id)
        if row is None:
            return _Attempt("failed", error=f"step {step.step!r} has no result on this target")
        seen = validation.Observed(row["status"], row["exit_code"], row["output"])
        problems = validation.failures(step.expect, seen)
        if problems:
            return _Attempt(
                "failed", output=cap_text("\n".join(problems)), error=cap_text("; ".join(problems))
            )
        return _Attempt("completed", output="all expectations hold")

    async def _start(self, run: _Run, index: int, asset: Asset, attempt: int) -> int:
        step = run.plan.steps[index]
        async with self.db.transaction() as conn:
            attempt_id = await steps.start_attempt(
                conn,
                execution_id=run.id,
                tenant_id=run.tenant_id,
                step_index=index,
                step_name=step.name,
                step_type=step.type,
                asset_id=asset.asset_id,
                attempt=attempt,
                retry_count=attempt - 1,
            )
            await executions.append_event(
                conn,
                run.execution,
                "step_started",
                self.actor_id,
                {
                    "step_index": index,
                    "step": step.name,
                    "target": asset.asset_id,
                    "attempt": attempt,
                },
            )
        self.observer(StepEvent(index, step.name, asset.asset_id, "running", attempt))
        return attempt_id

    async def _record(
        self,
        run: _Run,
        index: int,
        asset: Asset,
        attempt: int,
        attempt_id: int,
        result: _Attempt,
        final: bool,
    ) -> None:
        step = run.plan.steps[index]
        async with self.db.transaction() as conn:
            await steps.finish_attempt(
                conn,
                attempt_id,
                status=result.status,
                exit_code=result.exit_code,
                output=result.output,
                stderr=result.stderr,
                error=result.error,
            )
            await executions.append_event(
                conn,
                run.execution,
                "step_finished",
                self.actor_id,
                {
                    "step_index": index,
                    "step": step.name,
                    "target": asset.asset_id,
                    "attempt": attempt,
                    "status": result.status,
                    "exit_code": result.exit_code,
                    "error": result.error,
                },
            )
        self.observer(
            StepEvent(index, step.name, asset.asset_id, result.status, attempt, result.error, final)
        )
