"""The engine: runs one execution's steps over their targets and records every move.

One engine serves both paths: ``opsc run`` calls it in-process (immediate), workers call it
for queued executions (background).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from opsconductor import approval_gate, logs, masking, policies, rbac, validation
from opsconductor.cancellation import CHECK_INTERVAL_S, CancelWatcher
from opsconductor.config import load_settings
from opsconductor.connectors import credentials
from opsconductor.connectors.access import TenantAccess, local_refusal
from opsconductor.connectors.outcome import RECORD_ONLY
from opsconductor.connectors.session import Connectors
from opsconductor.connectors.ssh import CredentialResolver
from opsconductor.db import auth, connectors, executions, queue, runs, steps
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import BadInput, SecretError
from opsconductor.inventory import Asset
from opsconductor.locking import AssetLocked, LeaseHold, LockSettings, LockWaitAborted, owner_tag
from opsconductor.masking import Masker
from opsconductor.output import cap_text
from opsconductor.plan import (
    CommandStep,
    FileStep,
    Plan,
    ScriptStep,
    ValidateStep,
    fill_secrets,
    parse_plan,
    secret_refs,
)
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status
from opsconductor.templating import uses_step_results

log = structlog.get_logger("opsconductor.engine")

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
    #: the connectors of this execution (open SSH connections, HTTP clients, record-only)
    connectors: Connectors
    deadline_hit: bool = False
    results: dict[int, dict[str, str]] = field(default_factory=dict)
    #: the execution's masker, swapped for a richer one as secrets are resolved
    cell: logs.MaskerCell = field(default_factory=logs.MaskerCell)
    #: set to stop all running work: cancel request, execution timeout, lost lock
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    abort_kind: str | None = None
    cancelled_by: str | None = None
    #: why a step failed as a whole (asset_locked, missing secret), for the verdict
    step_failure: str | None = None
    #: resolved secret values by path, per step, only while the step runs
    secrets: dict[int, dict[str, str]] = field(default_factory=dict)
    #: resolved SSH credentials of the running step's targets, by reference
    credentials: dict[str, str] = field(default_factory=dict)
    #: background work holds a queue lease; its end is recorded only while the lease holds
    lease: queue.Lease | None = None
    #: where a resumed execution picks up, by (step index, asset id); empty on a fresh run
    resume: dict[tuple[int, str], _ResumePoint] = field(default_factory=dict)

    @functools.cached_property
    def id(self) -> uuid.UUID:
        return uuid.UUID(str(self.execution["id"]))

    @property
    def tenant_id(self) -> str:
        return str(self.execution["tenant_id"])

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def masker(self) -> Masker:
        return self.cell.masker

    def abort_with(self, kind: str, actor: str | None = None) -> None:
        if self.abort.is_set():
            return  # the first reason wins
        self.abort_kind, self.cancelled_by = kind, actor
        if kind == "timeout":
            self.deadline_hit = True
        self.abort.set()

    @property
    def abort_status(self) -> str:
        """Status of an attempt stopped by the abort."""
        return "timeout" if self.abort_kind == "timeout" else "cancelled"

    @property
    def abort_message(self) -> str:
        if self.abort_kind == "cancelled":
            return f"cancelled by {self.cancelled_by}"
        if self.abort_kind == "timeout":
            return "execution timeout reached"
        return f"aborted: {self.abort_kind}"


@dataclass(frozen=True)
class _ResumePoint:
    """What a resumed execution does on one target of one step."""

    #: attempt number to start at (the pending one, or the one after the last recorded)
    next_attempt: int
    #: final status if this target needs nothing more, else None
    outcome: str | None = None
    #: attempts cut short by a dead worker: they do not spend the step's retries
    interrupted: int = 0


#: Recorded on an attempt that was in flight when its worker died.
INTERRUPTED = "interrupted"


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


def _step_credentials(live: dict[str, str], files_root: Path) -> CredentialResolver:
    """SSH credentials as ``_resolve_secrets`` fetched them for the running step (audited,
    masked); ``file:`` references name a key file in the tenant's files root (anywhere else
    on the worker, it could be the secret store's key sent as a password), read here."""

    def resolve(ref: str) -> str:
        if ref.startswith("file:"):
            return credentials.resolve_credential(ref, files_root)
        if ref not in live:
            raise LookupError("not resolved for this step")
        return live[ref]

    return resolve


def _credential_refs(run: _Run, index: int) -> list[str]:
    """Credential references of the step's SSH targets that a secret backend holds."""
    if not isinstance(run.plan.steps[index], CommandStep | ScriptStep | FileStep):
        return []
    return [
        a.credential_ref
        for a in run.targets[index]
        if a.connection_type == "ssh"
        and a.credential_ref
        and not a.credential_ref.startswith("file:")
    ]


class _Parked(Exception):
    """A level 3 step waits for a person: stop here, hand the execution back to the queue."""


class Engine:
    def __init__(
        self,
        db: Database,
        *,
        actor_id: str,
        worker_id: str | None = None,
        observer: Observer | None = None,
        target_concurrency: int = DEFAULT_TARGET_CONCURRENCY,
        secrets: SecretResolver | None = None,
        lock_settings: LockSettings | None = None,
        resolve_credential: CredentialResolver | None = None,
        record_only: bool = False,
        policy_ttl_s: float = 0.0,
    ) -> None:
        self.db = db
        #: RBAC checked again before every step on every target (defense in depth: roles
        #: may change after submission). Always on: there is no way to build an engine
        #: without it.
        self.authorize: rbac.StepAuthorizer = auth.step_authorizer(db)
        self.actor_id = actor_id
        self.worker_id = worker_id
        self.observer = observer or (lambda _event: None)
        self.target_slots = asyncio.Semaphore(target_concurrency)
        self.policy_ttl_s = policy_ttl_s
        self._matrix: policies.PolicyMatrix | None = None
        self._matrix_until = 0.0
        self._secrets = secrets
        #: SSH credentials: None resolves them like secrets (audited, masked), per step
        self.resolve_credential = resolve_credential
        #: record-only for everything this engine runs (besides per tenant / execution)
        self.record_only = record_only
        self.lock_settings = lock_settings or LockSettings.from_env()
        logs.ensure_configured()  # every log line must pass the masking processor

    async def run(
        self, tenant_id: str, execution_id: uuid.UUID, *, lease: queue.Lease | None = None
    ) -> Status:
        """Run an ``approved`` (or ``queued``) execution to its end; return its final status.

        With a queue ``lease`` (background work) a ``running`` execution is resumed where
        its previous worker died, and the end is recorded only while the lease holds
        (``LeaseLost`` otherwise).
        """
        if lease is not None and lease.execution is not None:
            execution = lease.execution  # read by the claim, under the lease
        else:
            async with self.db.connection() as conn:
                execution = await executions.get(conn, tenant_id, str(execution_id))
        current = Status(execution["status"])
        if execution["approval_level"] == 3 and lease is None:
            # They wait for a person between steps, which only the queue can do without
            # pinning a process: refuse before anything starts.
            raise BadInput("approval_level 3 executions run on workers: use opsc submit")
        resuming = lease is not None and current is Status.RUNNING
        if execution["approval_level"] >= 1 and not resuming:
            moved = await approval_gate.still_valid(self.db, execution, self.actor_id)
            if moved is not None:
                if lease is not None:  # no longer queued: not this worker's to run
                    await queue.discard(self.db, lease)
                return moved  # what was approved is not what would run now
        run, missing = await self._load(execution)
        run.lease = lease
        verdict: tuple[Status, str | None] | None = None
        if resuming:
            verdict = await self._resume(run)
        else:
            await self._begin(run, current)
        if missing and verdict is None:
            verdict = Status.FAILED, _missing_reason(missing)
        if verdict is None:  # a tenant without the capability: no step of it runs
            refusal = local_refusal(run.connectors.access, run.plan.steps, run.targets)
            verdict = None if refusal is None else (Status.FAILED, refusal)
        with logs.masking_with(run.cell):
            if verdict is not None:
                await asyncio.shield(run.connectors.aclose())
                await self._finish(run, *verdict)
                return verdict[0]
            requested_by = run.execution.get("cancel_requested_by")
            if requested_by is not None:  # asked before this worker took it (a resume)
                run.abort_with("cancelled", str(requested_by))
            watcher = self._watcher(run)
            watcher.start()
            try:
                final, reason = await self._run_locked(run)
            except _Parked:
                if lease is not None:
                    await queue.park(self.db, lease)
                return Status.RUNNING  # a person decides; the approval wakes the queue row
            except asyncio.CancelledError:
                if lease is None:
                    await asyncio.shield(self._finish(run, Status.CANCELLED, INTERRUPTED))
                # With a lease the worker is handing the execution back (or lost it): it
                # stays running, and its next owner resumes it from the step records.
                raise
            finally:
                await watcher.stop()
                await asyncio.shield(run.connectors.aclose())
            await self._finish(run, final, reason)
        return final

    async def _begin(self, run: _Run, current: Status) -> None:
        timeout_s = policies.execution_timeout(run.plan, run.execution["sla_class"], run.matrix)
        run.deadline = time.monotonic() + timeout_s
        await executions.transition(
            self.db.batch,
            run.id,
            current,
            Status.RUNNING,
            actor_id=self.actor_id,
            timeout_at=datetime.now(UTC) + timedelta(seconds=timeout_s),
            worker_id=self.worker_id,
            masker=run.masker,
        )

    async def _load(self, execution: dict[str, Any]) -> tuple[_Run, set[str]]:
        tenant_id = execution["tenant_id"]
        snapshot = execution["plan_snapshot"]
        wanted = {a for step_targets in snapshot["targets"] for a in step_targets}
        matrix = await self._policies()
        context = await runs.start_context(self.db.batch, tenant_id, wanted)
        found, tenant, patterns = context.assets, context.tenant, context.patterns
        plan = parse_plan(snapshot["plan"])
        targets = [
            [found[a] for a in step_targets if a in found] for step_targets in snapshot["targets"]
        ]
        # Any one of the three makes the run record-only: safe wins over fast.
        record_only = bool(execution.get("record_only")) or tenant.record_only or self.record_only
        known_hosts = connectors.KnownHosts(
            self.db, tenant_id, tenant.host_key_policy, self.actor_id
        )
        live: dict[str, str] = {}
        access = TenantAccess.of(load_settings(), tenant_id, tenant)
        session = Connectors(
            known_hosts,
            resolve_credential=self.resolve_credential
            or _step_credentials(live, access.files_root),
            record_only=record_only,
            access=access,
        )
        run = _Run(
            execution,
            plan,
            targets,
            deadline=0.0,
            matrix=matrix,
            connectors=session,
            credentials=live,
        )
        run.cell.masker = masking.for_patterns(patterns)
        return run, wanted - set(found)

    async def _policies(self) -> policies.PolicyMatrix:
        """The policy matrix; a worker keeps it ``policy_ttl_s`` seconds instead of reading
        it for every execution (policies change rarely; one round trip each is not rare)."""
        now = time.monotonic()
        if self._matrix is not None and now < self._matrix_until:
            return self._matrix
        async with self.db.connection() as conn:
            rows = await executions.policies(conn)
        matrix = {
            (r["sla_class"], r["action_class"]): policies.TimeoutPolicy.from_row(r) for r in rows
        }
        self._matrix, self._matrix_until = matrix, now + self.policy_ttl_s
        return matrix

    async def _finish(self, run: _Run, final: Status, reason: str | None) -> None:
        # A cancelled execution records who asked (cancelled_by) as the actor of its end.
        actor = run.cancelled_by if final is Status.CANCELLED and run.cancelled_by else None
        # One statement: with a lease the end is recorded (and the queue row deleted)
        # only while the lease is ours, else LeaseLost and nothing changed, so the new
        # owner's work can never be overwritten by ours.
        await executions.transition(
            self.db.batch,
            run.id,
            Status.RUNNING,
            final,
            actor_id=actor or self.actor_id,
            reason=reason,
            masker=run.masker,
            lease_token=None if run.lease is None else run.lease.token,
            skip_pending=True,
        )

    async def _run_steps(self, run: _Run) -> tuple[Status, str | None]:
        for index in range(len(run.plan.steps)):
            await self._step_approved(run, index)
            run.results[index] = await self._run_step(run, index)
            if run.abort.is_set():
                return self._abort_verdict(run, index)
            bad = {a: s for a, s in run.results[index].items() if s not in _DONE}
            if bad:
                return self._verdict(run, index, bad)
        return Status.COMPLETED, None

    async def _step_approved(self, run: _Run, index: int) -> None:
        """Level 3: every step waits for its own approval. Waiting happens off the worker:
        ``_Parked`` ends this run and the queue row sleeps until the step is approved."""
        if run.execution["approval_level"] != 3:
            return
        gate = await approval_gate.step_gate(self.db, run.execution, index, self.actor_id)
        if gate != "go":
            raise _Parked(index)

    # -- safety hooks: cancellation, timeouts, locks, secrets (issue 6) -----------------

    def _watcher(self, run: _Run) -> CancelWatcher:
        """Sees a cancel request within a second, and the execution deadline, while it runs."""
        return CancelWatcher(
            self.db,
            run.id,
            deadline=lambda: run.deadline,
            on_cancel=lambda actor: run.abort_with("cancelled", actor),
            on_deadline=lambda: run.abort_with("timeout"),
            # run() has just looked at the row it read (claim or get) for a request
            first_check_s=CHECK_INTERVAL_S,
        )

    def _abort_verdict(self, run: _Run, index: int) -> tuple[Status, str]:
        step = run.plan.steps[index].name
        if run.abort_kind == "cancelled":
            return Status.CANCELLED, f"cancelled by {run.cancelled_by} during step {step!r}"
        if run.abort_kind == "timeout":
            return Status.TIMEOUT, f"execution timeout reached during step {step!r}"
        return Status.FAILED, f"{run.step_failure or run.abort_kind} during step {step!r}"

    async def _run_locked(self, run: _Run) -> tuple[Status, str | None]:
        """``lock: execution`` holds every target of every step for the whole run."""
        if run.plan.lock != "execution":
            return await self._run_steps(run)
        wanted = [
            a.asset_id
            for step, targets in zip(run.plan.steps, run.targets, strict=True)
            if not isinstance(step, ValidateStep)
            for a in targets
        ]
        try:
            async with self._lease(run, wanted):
                return await self._run_steps(run)
        except AssetLocked as exc:
            return Status.FAILED, str(exc)
        except LockWaitAborted:
            return self._abort_verdict(run, 0)

    def _lease(self, run: _Run, asset_ids: list[str]) -> LeaseHold:
        def lost(assets_lost: set[str]) -> None:
            run.step_failure = f"lock_lost: lease on {', '.join(sorted(assets_lost))} taken over"
            run.abort_with("lock_lost")

        return LeaseHold(
            self.db,
            run.tenant_id,
            asset_ids,
            owner=owner_tag(run.id, self.worker_id),
            execution_id=run.id,
            settings=self.lock_settings,
            abort=run.abort,
            on_lost=lost,
        )

    def _step_lease(self, run: _Run, index: int) -> AbstractAsyncContextManager[Any]:
        step = run.plan.steps[index]
        if run.plan.lock == "execution" or isinstance(step, ValidateStep):
            return contextlib.nullcontext()  # held already, or touches no asset
        return self._lease(run, [a.asset_id for a in run.targets[index]])

    def _resolver(self) -> SecretResolver:
        if self._secrets is None:
            self._secrets = SecretResolver(self.db, load_settings().home)
        return self._secrets

    async def _resolve_secrets(self, run: _Run, index: int) -> str | None:
        """Fetch the step's secrets just in time; None, or why the step cannot run."""
        step = run.plan.steps[index]
        paths = list(
            dict.fromkeys(
                [*(ref.secret for ref in secret_refs(step)), *_credential_refs(run, index)]
            )
        )
        values: dict[str, str] = {}
        for path in paths:
            try:
                resolved = await self._resolver().resolve(run.tenant_id, path)
            except SecretError as exc:
                await self._secret_event(run, index, "secret_unresolved", path, error=str(exc))
                return str(exc)
            values[path] = resolved.value
            # Mask the value before anything can print it, then audit the access.
            run.cell.masker = run.masker.with_secrets([resolved.value])
            await self._secret_event(run, index, "secret_resolved", path, backend=resolved.backend)
        run.secrets[index] = values
        run.credentials.update(values)
        return None

    async def _secret_event(
        self, run: _Run, index: int, event: str, path: str, **extra: str
    ) -> None:
        async with self.db.connection() as conn:
            await executions.append_event(
                conn,
                run.execution,
                event,
                self.actor_id,
                {
                    "step_index": index,
                    "step": run.plan.steps[index].name,
                    "path": path,
                    "on_behalf_of": str(run.execution["actor_id"]),
                    **extra,
                },
                masker=run.masker,
            )

    async def _fail_step(self, run: _Run, index: int, message: str) -> dict[str, str]:
        """Record the step as failed on every target without running anything."""
        run.step_failure = message
        for asset in run.targets[index]:
            attempt_id = await self._start(run, index, asset, 1)
            await self._record(
                run, index, asset, 1, attempt_id, _Attempt("failed", error=message), True
            )
        return {a.asset_id: "failed" for a in run.targets[index]}

    async def _pause(self, run: _Run, seconds: float) -> None:
        """Sleep between retries, but not past an abort."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.abort.wait(), max(0.0, seconds))

    # -- steps and targets ----------------------------------------------------------------

    async def _run_step(self, run: _Run, index: int) -> dict[str, str]:
        """Take the step's asset locks, resolve its secrets, run its targets; always let go."""
        try:
            async with self._step_lease(run, index):
                problem = await self._resolve_secrets(run, index)
                if problem is not None:
                    return await self._fail_step(run, index, problem)
                try:
                    return await self._run_targets(run, index)
                finally:
                    run.secrets.pop(index, None)  # values live only while the step runs
                    run.credentials.clear()
        except AssetLocked as exc:
            return await self._fail_step(run, index, str(exc))
        except LockWaitAborted:
            return {a.asset_id: run.abort_status for a in run.targets[index]}

    async def _run_targets(self, run: _Run, index: int) -> dict[str, str]:
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
        if run.step_failure is not None:
            return Status.FAILED, f"step {step.name!r}: {run.step_failure}"
        if len(bad) < len(run.results[index]):
            return Status.PARTIAL, f"step {step.name!r} failed on {where}"
        if all(status == "timeout" for status in bad.values()):
            return Status.TIMEOUT, f"step {step.name!r} timed out on {where}"
        return Status.FAILED, f"step {step.name!r} failed on {where}"

    async def _run_on_target(self, run: _Run, index: int, asset: Asset) -> str:
        step = run.plan.steps[index]
        point = run.resume.get((index, asset.asset_id), _ResumePoint(next_attempt=1))
        if point.outcome is not None:
            return point.outcome  # finished before a crash: never run it again
        if await self._denied(run, index, asset):
            return "failed"
        status = "failed"
        last = step.retries + 1 + point.interrupted
        for attempt in range(point.next_attempt, last + 1):
            if run.remaining() <= 0:
                run.deadline_hit = True
                return "timeout"
            if run.abort.is_set():
                return run.abort_status
            attempt_id = await self._start(run, index, asset, attempt)
            result = await self._execute(run, index, step, asset)
            status = result.status
            final = status in _DONE or attempt >= last or run.deadline_hit or run.abort.is_set()
            await self._record(run, index, asset, attempt, attempt_id, result, final)
            if final:
                break
            await self._pause(run, min(policies.backoff_s(attempt - 1), run.remaining()))
        return status

    async def _denied(self, run: _Run, index: int, asset: Asset) -> bool:
        """Ask RBAC about this step on this target; on a denial fail the step without
        running anything and record an ``rbac_violation`` event (who, what, where)."""
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
            await steps.record_denied(
                conn,
                execution_id=run.id,
                tenant_id=run.tenant_id,
                step_index=index,
                step_name=step.name,
                step_type=step.type,
                asset_id=asset.asset_id,
                error=error,
                masker=run.masker,
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
        """Dispatch by step type: validate steps here, every other type to its connector,
        with the step's secrets filled in and the execution's abort as its cancel."""
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
        filled = fill_secrets(step, run.secrets.get(index, {}))
        env = None
        if isinstance(filled, CommandStep | ScriptStep):
            env = {**_target_env(run, index, asset), **{k: str(v) for k, v in filled.env.items()}}
        outcome = await run.connectors.execute(
            filled,
            asset,
            where=f"steps[{index}]",
            timeout_s=budget,
            cancel=run.abort,
            env=env,
            results=results,
        )
        if outcome.status == "cancelled":
            return _Attempt(
                run.abort_status,
                outcome.exit_code,
                outcome.output,
                outcome.stderr,
                run.abort_message,
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
        attempt_id = await steps.start_attempt_logged(
            self.db.batch,
            execution_id=run.id,
            tenant_id=run.tenant_id,
            step_index=index,
            step_name=step.name,
            step_type=step.type,
            asset_id=asset.asset_id,
            attempt=attempt,
            retry_count=attempt - 1,
            actor_id=self.actor_id,
            payload={
                "step_index": index,
                "step": step.name,
                "target": asset.asset_id,
                "attempt": attempt,
            },
            masker=run.masker,
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
        await steps.finish_attempt_logged(
            self.db.batch,
            attempt_id,
            execution_id=run.id,
            tenant_id=run.tenant_id,
            status=result.status,
            exit_code=result.exit_code,
            output=result.output,
            stderr=result.stderr,
            error=result.error,
            actor_id=self.actor_id,
            payload={
                "step_index": index,
                "step": step.name,
                "target": asset.asset_id,
                "attempt": attempt,
                "status": result.status,
                "exit_code": result.exit_code,
                "error": result.error,
            },
            masker=run.masker,
        )
        # Logged raw: the masking processor is the sink that masks it (see logs.py).
        log.info(
            "step_finished",
            execution_id=str(run.id),
            step=step.name,
            target=asset.asset_id,
            attempt=attempt,
            status=result.status,
            exit_code=result.exit_code,
            error=result.error,
            # Masked before the cut: a cut through a secret leaves pieces no masker knows.
            stdout_tail=run.masker.mask_output(result.output)[-500:],
            stderr_tail=run.masker.mask_output(result.stderr)[-500:],
        )
        detail = None if result.error is None else run.masker.mask(result.error)
        self.observer(
            StepEvent(index, step.name, asset.asset_id, result.status, attempt, detail, final)
        )

    # --- Resuming after a crash (background work only) ------------------------------------
    # A worker died with this execution running. The step records say what happened: a
    # finished attempt is never run again; an attempt that was in flight is re-run only if
    # its step is idempotent, otherwise the execution ends failed (reason "interrupted")
    # for a human to look at, because running a non-idempotent step twice is unsafe.

    async def _resume(self, run: _Run) -> tuple[Status, str | None] | None:
        """Prepare ``run.resume``; return a verdict when the execution must not go on."""
        self._resume_deadline(run)
        async with self.db.transaction() as conn:
            rows = await steps.list_for(conn, run.id)
            in_flight = [row for row in rows if row["status"] == "running"]
            unsafe = [r for r in in_flight if not run.plan.steps[r["step_index"]].is_idempotent]
            await self._close_in_flight(conn, run, in_flight, rerun=not unsafe)
            await executions.append_event(
                conn,
                run.execution,
                "resumed",
                self.actor_id,
                {
                    "worker_id": self.worker_id,
                    "attempt": run.lease.attempt if run.lease else None,
                    "in_flight": [_where(run, r) for r in in_flight],
                    "rerun": not unsafe,
                },
            )
        if unsafe:
            first = unsafe[0]
            return Status.FAILED, (
                f"{INTERRUPTED}: step {_where(run, first)} was in flight when its worker "
                "stopped and is not idempotent, so it was not run again"
            )
        run.resume = _resume_points(run, rows)
        return None

    def _resume_deadline(self, run: _Run) -> None:
        """The execution budget keeps counting from the first start, across workers."""
        timeout_at: datetime | None = run.execution["timeout_at"]
        if timeout_at is None:  # started by an older version that did not set it
            timeout_s = policies.execution_timeout(run.plan, run.execution["sla_class"], run.matrix)
            run.deadline = time.monotonic() + timeout_s
            return
        run.deadline = time.monotonic() + (timeout_at - datetime.now(UTC)).total_seconds()

    async def _close_in_flight(
        self, conn: Conn, run: _Run, in_flight: list[dict[str, Any]], *, rerun: bool
    ) -> None:
        """Record how each cut-short attempt ended, so none stays ``running`` forever."""
        if not in_flight:
            return
        if rerun:
            status = "cancelled"
            error = f"{INTERRUPTED}: its worker stopped; run again (the step is idempotent)"
        else:
            status = "failed"
            error = f"{INTERRUPTED}: its worker stopped; not run again (not idempotent)"
        await steps.close_attempts(conn, [row["id"] for row in in_flight], status, error)
        for row in in_flight:
            row["status"] = status


def _missing_reason(missing: set[str]) -> str:
    return f"assets no longer in the inventory: {', '.join(sorted(missing))}"


def _where(run: _Run, row: dict[str, Any]) -> str:
    return (
        f"{run.plan.steps[row['step_index']].name!r} on {row['target_asset_id']} "
        f"(attempt {row['attempt']})"
    )


def _resume_points(run: _Run, rows: list[dict[str, Any]]) -> dict[tuple[int, str], _ResumePoint]:
    """From every recorded attempt (closed by ``_close_in_flight``), where each target of
    each step starts again."""
    by_target: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_target.setdefault((row["step_index"], row["target_asset_id"]), []).append(row)
    points = {}
    for (index, asset_id), attempts in by_target.items():
        latest = max(attempts, key=lambda r: r["attempt"])
        interrupted = sum(1 for r in attempts if r["status"] == "cancelled")
        last = run.plan.steps[index].retries + 1 + interrupted
        if latest["status"] == "pending":
            point = _ResumePoint(latest["attempt"], None, interrupted)
        elif latest["status"] in ("completed", "skipped") or latest["attempt"] >= last:
            point = _ResumePoint(latest["attempt"], latest["status"], interrupted)
        else:  # failed with retries left, or cut short and idempotent: the next attempt
            point = _ResumePoint(latest["attempt"] + 1, None, interrupted)
        points[(index, asset_id)] = point
    return points
