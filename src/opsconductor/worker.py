"""The worker: runs queued executions, ``concurrency`` at once in one process.

Any number of workers on any number of machines share one database. A worker sleeps on
LISTEN/NOTIFY (a slow poll is only a safety net), claims with a lease, renews its leases
while it works, and on stop finishes what it holds within a grace period or hands the
leases back. Every worker runs a reaper; an advisory lock lets only one reap at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import structlog

from opsconductor import locking, status_machine
from opsconductor.approvals import gate
from opsconductor.db import executions, queue, workers
from opsconductor.db.connection import Database
from opsconductor.db.queue import Lease
from opsconductor.errors import (
    DatabaseError,
    IllegalTransition,
    LeaseLost,
    OpsError,
    StaleStatus,
)
from opsconductor.services.engines import build_engine
from opsconductor.status_machine import Status

log = structlog.get_logger("opsconductor.worker")

#: How long a worker trusts its copy of the timeout policy matrix.
POLICY_TTL_S = 30.0


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 4
    #: on stop, how long in-flight executions may take to finish before their leases go back
    grace_s: float = 30.0
    #: safety net only: how often an idle worker looks without having been notified
    poll_s: float = 5.0
    #: visibility timeout for every claim; None: each execution's own (set at enqueue)
    lease_s: float | None = None
    reap_every_s: float = 5.0
    #: how often the worker updates its row in the workers table
    presence_every_s: float = workers.HEARTBEAT_S
    #: rows of workers silent this long are deleted when a worker starts (where rows are born)
    retention_s: float = workers.RETENTION_S


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, db: Database, *, actor_id: str, options: WorkerOptions) -> None:
        self.db = db
        self.actor_id = actor_id
        self.options = options
        self.worker_id = new_worker_id()
        self.engine = build_engine(
            db, actor_id=actor_id, worker_id=self.worker_id, policy_ttl_s=POLICY_TTL_S
        )
        self.running: dict[uuid.UUID, tuple[Lease, asyncio.Task[None]]] = {}
        #: set by a notification, a finished execution or a stop: "look at the queue again"
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        #: a second stop signal: skip the rest of the grace period
        self.hurry = asyncio.Event()
        #: set when a claim needs renewing sooner than the heartbeat planned to wake
        self.renew_soon = asyncio.Event()
        self.renew_every = self._renew_every()
        self.handed_back = 0

    def stop(self) -> None:
        """First call: stop claiming and drain. Second call: hand back in-flight work now."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()
        self.wake.set()

    async def serve(self) -> None:
        me = workers.Identity.here(self.worker_id, self.options.concurrency)
        async with self.db.connection() as conn:
            await workers.register(conn, me)
            await workers.prune(conn, self.options.retention_s)
        helpers = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._reaper()),
            asyncio.create_task(self._presence()),
        ]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._quietly(self._signed_off())

    # --- presence (the workers table: `opsc workers`, /readyz, metrics) -------------------

    async def _presence(self) -> None:
        """Beat with the in-flight count; a missed beat only makes the worker look stale."""
        while True:
            await asyncio.sleep(self.options.presence_every_s)
            try:
                async with self.db.connection() as conn:
                    await workers.heartbeat(conn, self.worker_id, len(self.running))
            except DatabaseError as exc:
                log.warning("worker heartbeat failed", worker_id=self.worker_id, error=str(exc))

    async def _signed_off(self) -> None:
        async with self.db.connection() as conn:
            await workers.stopped(conn, self.worker_id)

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            free = self.options.concurrency - len(self.running)
            timeout: float | None = None  # all slots busy: a finishing execution wakes us
            if free > 0:
                leases = await self._claim(free)
                for lease in leases:
                    self._start(lease)
                if len(leases) == free:
                    continue  # there may be more: claim again as soon as a slot frees
                timeout = await self._idle_timeout()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _claim(self, free: int) -> list[Lease]:
        try:
            return await queue.claim(
                self.db, self.worker_id, limit=free, lease_s=self.options.lease_s
            )
        except DatabaseError as exc:
            log.warning("claim failed", worker_id=self.worker_id, error=str(exc))
            return []

    async def _idle_timeout(self) -> float:
        """Until the next poll, or sooner if a retry's back-off ends before it."""
        try:
            wait = await queue.next_available_in(self.db)
        except DatabaseError:
            return self.options.poll_s
        if wait is None:
            return self.options.poll_s
        return min(self.options.poll_s, max(wait, 0.01))

    def _start(self, lease: Lease) -> None:
        task = asyncio.create_task(self._execute(lease))
        self.running[lease.execution_id] = (lease, task)
        if lease.lease_s / 3 < self.renew_every:
            self.renew_soon.set()

        def done(finished: asyncio.Task[None]) -> None:
            # Only our own entry: after a lost lease the same execution may have been
            # claimed again by this worker while this task was still winding down.
            held = self.running.get(lease.execution_id)
            if held is not None and held[1] is finished:
                del self.running[lease.execution_id]
            self.wake.set()

        task.add_done_callback(done)

    async def _execute(self, lease: Lease) -> None:
        bound = log.bind(worker_id=self.worker_id, execution_id=str(lease.execution_id))
        try:
            status = await self.engine.run(lease.tenant_id, lease.execution_id, lease=lease)
            bound.info("execution ended", status=str(status), attempt=lease.attempt)
        except (IllegalTransition, StaleStatus) as exc:
            bound.info("execution moved under this worker", reason=str(exc))
            await self._quietly(self._settle_moved(lease, exc))
        except LeaseLost as exc:
            bound.warning("lease lost; result not recorded", error=str(exc))
        except Exception as exc:
            # No verdict was reached (database gone, unexpected error): the queue decides,
            # retry later with back-off or dead-letter once the attempts are spent.
            bound.warning("attempt failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            await self._quietly(
                queue.fail(self.db, lease, f"{type(exc).__name__}: {exc}", self.actor_id)
            )

    async def _settle_moved(self, lease: Lease, exc: Exception) -> None:
        """Its status changed under us. Ended, or back waiting for approval: nothing to run,
        drop the row. Still runnable (a worker with a stale lease raced us): an attempt
        without a verdict, so it is retried later and resumed then."""
        async with self.db.connection() as conn:
            execution = await executions.get(conn, lease.tenant_id, str(lease.execution_id))
        status = Status(execution["status"])
        if status_machine.is_terminal(status) or status is Status.PENDING_APPROVAL:
            await queue.discard(self.db, lease)
        else:
            await queue.fail(
                self.db, lease, f"status changed under this worker: {exc}", self.actor_id
            )

    async def _quietly(self, work: Awaitable[object]) -> None:
        """Best effort: if the database is gone the lease expires and the reaper recovers."""
        try:
            await work
        except OpsError as exc:
            log.warning("queue update failed", worker_id=self.worker_id, error=str(exc))

    # --- leases --------------------------------------------------------------------------

    def _renew_every(self) -> float:
        """A third of the shortest lease held, so two renewals can fail before it expires."""
        held = [lease.lease_s for lease, _ in self.running.values()]
        shortest = min(held, default=self.options.lease_s or 30.0)
        return max(0.05, shortest / 3)

    async def _heartbeat(self) -> None:
        while True:
            self.renew_every = self._renew_every()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.renew_soon.wait(), self.renew_every)
            self.renew_soon.clear()
            held = {lease.execution_id: (lease, task) for lease, task in self.running.values()}
            if not held:
                continue
            try:
                kept = await queue.renew(self.db, [lease for lease, _ in held.values()])
            except DatabaseError as exc:
                log.warning("lease renewal failed", worker_id=self.worker_id, error=str(exc))
                continue
            for execution_id, (_, task) in held.items():
                if execution_id not in kept and not task.done():
                    # Reaped and maybe claimed by another worker: stop at once, the new
                    # owner resumes it (and our end could not be recorded anyway).
                    log.warning(
                        "lease lost", worker_id=self.worker_id, execution_id=str(execution_id)
                    )
                    task.cancel()

    async def _reaper(self) -> None:
        while True:
            try:
                reaped = await queue.reap(self.db, self.actor_id)
                if reaped and (reaped.requeued or reaped.dead_lettered):
                    log.info("reaped expired leases", worker_id=self.worker_id, **vars(reaped))
                if reaped is not None:  # this worker is the reaper of this round
                    await locking.reap(self.db, self.actor_id)
                # Overdue approvals end here too (its own advisory lock: one sweep at a time).
                await gate.expire_overdue(self.db)
            except DatabaseError as exc:
                log.warning("reaper failed", worker_id=self.worker_id, error=str(exc))
            await asyncio.sleep(self.options.reap_every_s)

    async def _listen(self) -> None:
        while True:
            try:
                async for _ in self.db.notifications(queue.CHANNEL):
                    self.wake.set()
            except DatabaseError as exc:
                log.warning("LISTEN connection lost", worker_id=self.worker_id, error=str(exc))
            await asyncio.sleep(1.0)  # the poll covers the gap until we listen again

    # --- stopping ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let in-flight executions finish within the grace period; hand back the rest."""
        tasks = [task for _, task in self.running.values()]
        if not tasks:
            return
        all_done: asyncio.Future[list[object]] = asyncio.gather(*tasks, return_exceptions=True)
        hurry = asyncio.ensure_future(self.hurry.wait())
        waiters: list[asyncio.Future[Any]] = [all_done, hurry]
        await asyncio.wait(
            waiters, timeout=self.options.grace_s, return_when=asyncio.FIRST_COMPLETED
        )
        hurry.cancel()
        left = [(lease, task) for lease, task in self.running.values() if not task.done()]
        for _, task in left:
            task.cancel()  # stops its command (process group) and records nothing more
        await all_done
        try:
            released = await queue.release(self.db, [lease for lease, _ in left])
        except DatabaseError as exc:
            log.warning("hand-back failed; leases will expire", error=str(exc))
            return
        self.handed_back = len(released)
