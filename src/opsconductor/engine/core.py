"""The engine: runs one execution's steps over their targets and records every move.

One engine serves both paths: ``opsc run`` (and the API, for fast plans) calls it
in-process (immediate), workers call it for queued executions (background). Built only by
``services.engines.build_engine``; it re-checks RBAC before every step on every target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from opsconductor import bounded, first_locks, logs, masking, policies, pushed_files, rbac
from opsconductor.approvals import gate
from opsconductor.cancellation import CHECK_INTERVAL_S, CancelWatcher
from opsconductor.config import Settings, load_settings
from opsconductor.connectors.access import TenantAccess, local_refusal
from opsconductor.connectors.session import Connectors
from opsconductor.connectors.ssh import CredentialResolver
from opsconductor.db import assets, auth, connectors, executions, queue, runs
from opsconductor.db.connection import Database
from opsconductor.engine import (
    dispatch,
    known_plans,
    playbooks,
    resume,
    roles_ahead,
    rolling,
    sources,
    verdict,
)
from opsconductor.engine.attempts import Attempts
from opsconductor.engine.secrets import StepSecrets, step_credentials
from opsconductor.engine.slots import (
    DEFAULT_STEP_CONCURRENCY,
    DEFAULT_TARGET_CONCURRENCY,
    target_slots,
)
from opsconductor.engine.state import DONE, INTERRUPTED, Observer, Parked, Run
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.locking import AssetLocked, LeaseHold, LockSettings, LockWaitAborted, owner_tag
from opsconductor.plan import AnsibleStep
from opsconductor.records import Execution
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status


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
        settings: Settings | None = None,
    ) -> None:
        self.db = db
        #: read once: a run must not re-read the environment (it cost ~0.2 ms per execution)
        self.settings = settings or load_settings()
        #: RBAC checked again before every step on every target (defense in depth: roles
        #: may change after submission). Always on: there is no way to build an engine
        #: without it.
        self.authorize: rbac.StepAuthorizer = auth.step_authorizer(db)
        self.actor_id = actor_id
        self.worker_id = worker_id
        self.observer = observer or (lambda _event: None)
        self.target_slots = target_slots(target_concurrency)
        self.policy_ttl_s = policy_ttl_s
        self._matrix: policies.PolicyMatrix | None = None
        self._matrix_until = 0.0
        self.secrets = StepSecrets(db, secrets)
        self.attempts = Attempts(db, self.observer)
        #: SSH credentials: None resolves them like secrets (audited, masked), per step
        self.resolve_credential = resolve_credential
        #: record-only for everything this engine runs (besides per tenant / execution)
        self.record_only = record_only
        self.lock_settings = lock_settings or LockSettings.from_settings(self.settings)
        #: TenantAccess by what it is made of (its paths cost ~25 us to build per run)
        self._access: dict[tuple[str, bool, bool], TenantAccess] = {}

    async def run(
        self,
        tenant_id: str,
        execution_id: uuid.UUID,
        *,
        lease: queue.Lease | None = None,
        actor_id: str | None = None,
    ) -> Status:
        """Run an ``approved`` (or ``queued``) execution to its end; return its final status.

        With a queue ``lease`` (background work) a ``running`` execution is resumed where
        its previous worker died, and the end is recorded only while the lease holds
        (``LeaseLost`` otherwise). ``actor_id``: who runs it this time, for its events
        (default: the engine's own actor; the API's shared engine runs as its caller).
        """
        acting = actor_id or self.actor_id
        if lease is not None and lease.execution is not None:
            execution = Execution.from_row(lease.execution)  # read by the claim
        else:
            async with self.db.connection() as conn:
                execution = await executions.get(conn, tenant_id, str(execution_id))
        current = execution.status
        if execution.approval_level == 3 and lease is None:
            # They wait for a person between steps, which only the queue can do without
            # pinning a process: refuse before anything starts.
            raise BadInput("approval_level 3 executions run on workers: use opsc submit")
        begun_until = None if lease is None else lease.deadline  # begun by the claim (level 0)
        resuming = lease is not None and current is Status.RUNNING and begun_until is None
        if execution.approval_level >= 1 and not resuming:
            moved = await gate.still_valid(self.db, execution, acting)
            if moved is not None:
                if lease is not None:  # no longer queued: not this worker's to run
                    await queue.discard(self.db, lease)
                return moved  # what was approved is not what would run now
        run, missing = await self._load(execution, acting, lease.context if lease else None)
        run.lease = lease
        ending: tuple[Status, str | None] | None = None
        if resuming:
            assert lease is not None
            run.recovery = verdict.recovery(lease)
            ending = await resume.prepare(self.db, run, acting, self.worker_id)
        elif begun_until is not None:  # the claim began it as _begin would: not again
            run.deadline = begun_until
        else:
            await self._begin(run, current)
        if missing and ending is None:
            ending = Status.FAILED, verdict.missing_assets(missing)
        if ending is None:  # a tenant without the capability: no step of it runs
            refusal = local_refusal(run.connectors.access, run.plan.steps, run.targets)
            ending = None if refusal is None else (Status.FAILED, refusal)
        try:
            return await self._run_to_end(run, ending)
        finally:  # ended without _finish (handed back, an error): written apart, as before
            if run.ending.pending:
                await asyncio.shield(run.ending.flush(self.db))

    async def _run_to_end(self, run: Run, ending: tuple[Status, str | None] | None) -> Status:
        lease = run.lease
        with logs.masking_with(run.cell):
            if ending is not None:
                await self._close_connectors(run)
                await self._finish(run, *ending)
                return ending[0]
            requested_by = run.execution.cancel_requested_by
            if requested_by is not None:  # asked before this worker took it (a resume)
                run.abort_with("cancelled", requested_by)
            watcher = self._watcher(run)
            watcher.start()
            try:
                final, reason = await self._run_locked(run)
            except Parked:
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
                await self._close_connectors(run)
            await self._finish(run, final, reason)
        return final

    @staticmethod
    async def _close_connectors(run: Run) -> None:
        # Shielded, which costs a task: only when something is open (most runs open none).
        if run.connectors.holding:
            await asyncio.shield(run.connectors.aclose())

    async def _begin(self, run: Run, current: Status) -> None:
        timeout_s = policies.execution_timeout(run.plan, run.execution.sla_class, run.matrix)
        run.deadline = time.monotonic() + timeout_s
        await executions.transition(
            self.db.batch,
            run.id,
            current,
            Status.RUNNING,
            actor_id=run.actor_id,
            timeout_at=datetime.now(UTC) + timedelta(seconds=timeout_s),
            worker_id=self.worker_id,
            masker=run.masker,
        )

    async def _load(
        self, execution: Execution, acting: str, context: runs.StartContext | None
    ) -> tuple[Run, set[str]]:
        tenant_id = execution.tenant_id
        snapshot = execution.plan_snapshot
        wanted = {a for step_targets in snapshot["targets"] for a in step_targets}
        matrix = await self._policies()
        if context is None:  # else read by the claim, with the lease
            context = await runs.start_context(self.db.batch, tenant_id, wanted)
        found, tenant, patterns = context.assets, context.tenant, context.patterns
        parsed = known_plans.known(snapshot["plan"])
        plan = parsed.plan
        targets = [
            [found[a] for a in step_targets if a in found] for step_targets in snapshot["targets"]
        ]
        # Any one of the three makes the run record-only: safe wins over fast.
        record_only = execution.record_only or tenant.record_only or self.record_only
        known_hosts = connectors.KnownHosts(self.db, tenant_id, tenant.host_key_policy, acting)
        live: dict[str, str] = {}
        made_of = (tenant_id, tenant.local_execution, tenant.local_network)
        access = self._access.get(made_of)
        if access is None:
            access = self._access[made_of] = TenantAccess.of(self.settings, tenant_id, tenant)
        session = Connectors(
            known_hosts,
            resolve_credential=self.resolve_credential or step_credentials(live, access.files_root),
            record_only=record_only,
            access=access,
            jump_hosts=await assets.with_bastions(self.db, tenant_id, found),
        )
        run = Run(
            execution,
            plan,
            targets,
            deadline=0.0,
            matrix=matrix,
            connectors=session,
            credentials=live,
            files=pushed_files.from_snapshot(snapshot),
            actor_id=acting,
            secret_paths=parsed.secret_paths,
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

    async def _finish(self, run: Run, final: Status, reason: str | None) -> None:
        # A cancelled execution records who asked (cancelled_by) as the actor of its end.
        actor = run.cancelled_by if final is Status.CANCELLED and run.cancelled_by else None
        # One statement: with a lease the end is recorded (and the queue row deleted)
        # only while the lease is ours, else LeaseLost and nothing changed, so the new
        # owner's work can never be overwritten by ours. The last attempt's result and the
        # locks still held go with it (engine/ending.py), whatever the lease.
        await run.ending.close(
            executions.transition(
                self.db.batch,
                run.id,
                Status.RUNNING,
                final,
                actor_id=actor or run.actor_id,
                reason=verdict.with_recovery(reason, run.recovery),
                masker=run.masker,
                lease_token=None if run.lease is None else run.lease.token,
                skip_pending=True,
                closing=run.ending.closing(run.tenant_id),
            )
        )

    async def _run_steps(self, run: Run) -> tuple[Status, str | None]:
        if run.plan.serial is not None:  # a rolling update: batch by batch
            return await rolling.run_batches(self.db, run, self._run_step, self._step_approved)
        for index in range(len(run.plan.steps)):
            if run.abort.is_set() and run.unfinished(index):
                # Aborted before this step began (a resume past its deadline finds its
                # earlier steps done): the verdict names this step, not a finished one.
                return verdict.after_abort(run, index)
            await self._step_approved(run, index)
            run.results[index] = await self._run_step(run, index)
            bad = {a: s for a, s in run.results[index].items() if s not in DONE}
            if run.abort.is_set() and (bad or index == len(run.plan.steps) - 1):
                return verdict.after_abort(run, index)
            if bad:
                return verdict.after_step(run, index, bad)
        return Status.COMPLETED, None

    async def _step_approved(self, run: Run, index: int) -> None:
        """Level 3: every step waits for its own approval. Waiting happens off the worker:
        ``_Parked`` ends this run and the queue row sleeps until the step is approved."""
        if run.execution.approval_level != 3:
            return
        answer = await gate.step_gate(self.db, run.execution, index, run.actor_id)
        if answer != "go":
            raise Parked(index)

    # -- safety hooks: cancellation, timeouts, locks, secrets (issue 6) -----------------

    def _watcher(self, run: Run) -> CancelWatcher:
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

    async def _run_locked(self, run: Run) -> tuple[Status, str | None]:
        """``lock: execution`` holds every target of every step for the whole run."""
        if not first_locks.holds_whole_run(run.plan):
            return await self._run_steps(run)
        wanted = first_locks.run_assets(
            run.plan, [[a.asset_id for a in targets] for targets in run.targets]
        )
        try:
            async with self._lease(run, wanted):
                return await self._run_steps(run)
        except AssetLocked as exc:
            return Status.FAILED, str(exc)
        except LockWaitAborted:
            return verdict.after_abort(run, 0)

    def _lease(self, run: Run, asset_ids: list[str]) -> LeaseHold:
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
            hand_off=run.ending.adopt,
        )

    def _step_lease(self, run: Run, index: int) -> AbstractAsyncContextManager[Any]:
        if not first_locks.step_locks(run.plan, index):
            return contextlib.nullcontext()  # held already, or touches no asset
        return self._lease(run, [a.asset_id for a in run.step_targets(index)])

    async def _pause(self, run: Run, seconds: float) -> None:
        """Sleep between retries, but not past an abort."""
        await bounded.sleep_unless(run.abort, max(0.0, seconds))

    # -- steps and targets ----------------------------------------------------------------

    async def _run_step(self, run: Run, index: int) -> dict[str, str]:
        """Take the step's asset locks, resolve its secrets, run its targets; always let go.
        A step every target of which finished before a crash is not touched again: no
        lock, no secret, no event (the resume check comes before anything is taken)."""
        if not run.unfinished(index):
            return {
                a.asset_id: str(run.point(index, a.asset_id).outcome)
                for a in run.step_targets(index)
            }
        changed = await sources.changed(self.db, self.settings.files_root, run, index)
        if changed is not None:
            return await self.attempts.fail_step(run, index, changed)
        lease = self._step_lease(run, index)
        if isinstance(lease, LeaseHold):
            roles_ahead.start(self.db, run, index)
        try:
            async with lease:
                if isinstance(lease, LeaseHold) and lease.waited:
                    roles_ahead.drop(run)  # read before the wait: read again
                problem = await self.secrets.resolve(run, index)
                if problem is not None:
                    return await self.attempts.fail_step(run, index, problem)
                try:
                    if isinstance(run.plan.steps[index], AnsibleStep):  # one run, all targets
                        return await playbooks.run_step(
                            self.db, run, index, self.attempts, self._denied, self._pause
                        )
                    return await self._run_targets(run, index)
                finally:
                    self.secrets.forget(run, index)
        except AssetLocked as exc:
            return await self.attempts.fail_step(run, index, str(exc))
        except LockWaitAborted:
            return {a.asset_id: run.abort_status for a in run.step_targets(index)}
        finally:
            roles_ahead.drop(run)

    async def _run_targets(self, run: Run, index: int) -> dict[str, str]:
        """All targets of one step, at most the step's ``concurrency`` at once and at most
        ``target_slots`` over the whole engine; outcome by asset id, in target order."""
        targets = run.step_targets(index)
        slots = asyncio.Semaphore(run.plan.steps[index].concurrency or DEFAULT_STEP_CONCURRENCY)

        if index == len(run.plan.steps) - 1 and run.plan.serial is None:
            run.ending.open = len(targets)  # the last of them writes with the end

        async def one(asset: Asset) -> str:
            try:
                async with slots, self.target_slots:
                    return await self._run_on_target(run, index, asset)
            finally:
                run.ending.open -= 1

        if len(targets) == 1:  # awaited here: gather would make it a task of its own
            return {targets[0].asset_id: await one(targets[0])}
        outcomes = await asyncio.gather(*(one(a) for a in targets))
        return {a.asset_id: s for a, s in zip(targets, outcomes, strict=True)}

    async def _run_on_target(self, run: Run, index: int, asset: Asset) -> str:
        step = run.plan.steps[index]
        point = run.point(index, asset.asset_id)
        if point.outcome is not None:
            return point.outcome  # finished before a crash: never run it again
        instead = await dispatch.unless(self.db, run, index, step, asset)
        if instead is not None:  # ``when`` is false here (or cannot be evaluated)
            attempt_id = await self.attempts.start(run, index, asset, point.next_attempt)
            await self.attempts.finish(
                run, index, asset, point.next_attempt, attempt_id, instead, True
            )
            return instead.status
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
            attempt_id = await self.attempts.start(run, index, asset, attempt)
            result = await dispatch.execute(self.db, run, index, step, asset, attempt)
            status = result.status
            final = status in DONE or attempt >= last or run.deadline_hit or run.abort.is_set()
            await self.attempts.finish(run, index, asset, attempt, attempt_id, result, final)
            if final:
                break
            await self._pause(run, min(policies.backoff_s(attempt - 1), run.remaining()))
        return status

    async def _denied(self, run: Run, index: int, asset: Asset) -> bool:
        """Ask RBAC about this step on this target; on a denial fail the step without
        running anything and record an ``rbac_violation`` event (who, what, where)."""
        step = run.plan.steps[index]
        check = rbac.StepCheck(
            tenant_id=run.tenant_id,
            actor_id=run.execution.actor_id,
            execution_id=run.id,
            step_index=index,
            step_name=step.name,
            action_class=step.action_class,
            asset_id=asset.asset_id,
            environment=asset.environment,
        )
        ahead = roles_ahead.take(run, index)
        if ahead is None:
            reason = await self.authorize(check)
        else:  # read with the step's lock, moments ago (engine/roles_ahead.py)
            reason = auth.step_refusal(await ahead, check)
        if reason is None:
            return False
        await self.attempts.denied(run, index, asset, check, reason)
        return True
