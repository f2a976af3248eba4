"""The worker: runs queued executions, ``concurrency`` at once in one process.

Any number of workers on any number of machines share one database. A worker holds a life
lock on a connection of its own (which also LISTENs: a slow poll is only a safety net),
claims with a lease, renews its leases while it works, and on stop finishes what it holds
within a grace period or hands the leases back. Every worker runs a reaper round each
second; an advisory lock lets only one reap at a time (``recovery.py``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from opsconductor import bounded, recovery, status_machine
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
#: Container objects allocated (net) between two young collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 7000
#: After a database error, how often and how many times to retry handing an attempt back.
RETRY_EVERY_S = 0.5
RETRIES = 30
#: After a claim that left claimable work in the queue (its hosts busy: migration 0042), the
#: next look waits this long, doubling up to the maximum while claims keep coming back short;
#: a run of this worker ending (its host freed) or new work wakes it at once. (Claiming
#: again 10 ms later walked the same busy rows over and over: with 10 hosts for 64 slots,
#: about 40% of the drain's server time went to claims.)
CLAIM_BACKOFF_MIN_S = 0.01
CLAIM_BACKOFF_MAX_S = 1.0


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 4
    #: on stop, how long in-flight executions may take to finish before their leases go back
    grace_s: float = 30.0
    #: safety net only: how often an idle worker looks without having been notified
    poll_s: float = 5.0
    #: visibility timeout for every claim; None: each execution's own (set at enqueue)
    lease_s: float | None = None
    #: how often the reaper sweeps for overdue approvals; expired leases and locks and dead
    #: workers are looked for every ``detect_every_s`` (or this, if shorter)
    reap_every_s: float = 5.0
    #: how often the worker updates its row in the workers table
    presence_every_s: float = workers.HEARTBEAT_S
    #: how often the reaper round looks at the workers' life locks (one statement)
    detect_every_s: float = 1.0
    #: a life lock must be found free this long (two rounds) before its worker is dead
    confirm_dead_s: float = 1.0
    #: after its own session (re)connects, a reaper declares nobody dead for this long:
    #: after a database restart every live worker needs a moment to take its lock again
    restart_grace_s: float = 3.0
    #: rows of workers silent this long are deleted when a worker starts (where rows are born)
    retention_s: float = workers.RETENTION_S
    #: how often the notification dispatcher fills its outbox and sends what is due
    notify_every_s: float = 1.0
    #: how often the worker looks for inventory sources whose scheduled sync is due
    inventory_every_s: float = 15.0
    #: how often to look for due schedule slots (services/schedules.py); None: never
    schedule_every_s: float | None = 1.0
    #: how late a slot may be and still fire as on time; later it was missed
    schedule_grace_s: float = 60.0


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
        #: the life lock's session while it is held (None: cut off, claim nothing)
        self.life: workers.Life | None = None
        self.alive = asyncio.Event()
        #: life sessions so far: the first is not a reconnection, and needs no grace
        self.sessions = 0
        #: ends the helper loops even if a cancellation is swallowed (bounded.py)
        self.halt = asyncio.Event()
        self._approvals_swept_at = 0.0
        self._claim_backoff_s = CLAIM_BACKOFF_MIN_S

    def stop(self) -> None:
        """First call: stop claiming and drain. Second call: hand back in-flight work now."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()
        self.wake.set()

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until stopped; ``on_ready`` is called once the worker is registered (and old
        rows pruned), so "ready" never shows before the workers table says so."""
        await self._register()
        if on_ready is not None:
            on_ready()
        # What start-up built (modules, settings, parsed SQL, pools) lives as long as the
        # process: frozen out of the collector, a full collection no longer walks ~90,000
        # objects every few hundred executions (measured: GC time per drained execution
        # down 4x, bench/drain_cost.py).
        gc.freeze()
        # A run leaves no cyclic garbage (bounded.Deferred lets go of its owner): objects die
        # by reference count, and the young collections the default threshold (700) ran
        # every ~5 executions found nothing while walking every running execution's
        # objects. Ten times fewer: cyclic garbage, if some path makes any, is still
        # collected after 7,000 objects (measured: ~30 us less CPU per drained execution).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        helpers = {
            "life": asyncio.create_task(self._life()),
            "heartbeat": asyncio.create_task(self._heartbeat()),
            "reaper": asyncio.create_task(self._reaper()),
            "presence": asyncio.create_task(self._presence()),
            "notifications": asyncio.create_task(self._notifications()),
            "inventory": asyncio.create_task(self._inventory_syncs()),
            "schedules": asyncio.create_task(self._schedules()),
        }
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            self.halt.set()
            # Signed off before the life lock goes: a reaper must not take a clean stop for
            # a death (there is nothing left to take back, but the record would be wrong).
            await self._quietly(self._signed_off())
            for name, helper in helpers.items():
                await bounded.stop(helper, what=f"worker {name}")

    async def _register(self) -> None:
        me = workers.Identity.here(self.worker_id, self.options.concurrency)
        async with self.db.connection() as conn:
            await workers.register(conn, me)
            # where rows are born: those of workers silent past retention go
            await workers.prune(conn, self.options.retention_s)

    # --- presence (the workers table: `opsc workers`, /readyz, metrics) -------------------

    async def _presence(self) -> None:
        """Beat with the in-flight count; a missed beat only makes the worker look stale."""
        while not await bounded.sleep_unless(self.halt, self.options.presence_every_s):
            try:
                async with self.db.connection() as conn:
                    await workers.heartbeat(conn, self.worker_id, len(self.running))
            except DatabaseError as exc:
                log.warning("worker heartbeat failed", worker_id=self.worker_id, error=str(exc))

    async def _signed_off(self) -> None:
        async with self.db.connection() as conn:
            await workers.stopped(conn, self.worker_id)

    async def _schedules(self) -> None:
        """Fire due schedule slots: every worker looks, each slot fires once (the round's
        transaction claims it, see services/schedules.py)."""
        from opsconductor.services import schedules

        every = self.options.schedule_every_s
        if every is None:
            return
        while not await bounded.sleep_unless(self.halt, every):
            try:
                async with asyncio.timeout(max(30.0, every)):
                    fired = await schedules.fire_due(
                        self.db, grace_s=self.options.schedule_grace_s, fired_by=self.worker_id
                    )
                if fired:
                    log.info("schedules fired", worker_id=self.worker_id, runs=fired)
            except Exception as exc:  # the loop must outlive any one bad round
                log.warning("schedule round failed", worker_id=self.worker_id, error=repr(exc))

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            if not self.alive.is_set():
                # Without its life lock a reaper may take back whatever this worker
                # claims: wait for the session (it sets wake when it is back).
                await bounded.sleep_unless(self.wake, self.options.poll_s)
                continue
            free = self.options.concurrency - len(self.running)
            timeout: float | None = None  # all slots busy: a finishing execution wakes us
            if free > 0:
                leases = await self._claim(free)
                for lease in leases:
                    self._start(lease)
                if len(leases) == free:
                    self._claim_backoff_s = CLAIM_BACKOFF_MIN_S
                    continue  # there may be more: claim again as soon as a slot frees
                timeout = self._backed_off(await self._idle_timeout())
            await bounded.sleep_unless(self.wake, timeout)

    def _backed_off(self, timeout: float) -> float:
        """``timeout`` after a claim that filled fewer slots than it could: work claimable
        now was left (busy hosts), so wait the back-off instead, and double it."""
        if timeout > CLAIM_BACKOFF_MIN_S:  # above _idle_timeout's floor: nothing claimable now
            self._claim_backoff_s = CLAIM_BACKOFF_MIN_S
            return timeout
        wait = min(self._claim_backoff_s, self.options.poll_s)  # never past a poll
        self._claim_backoff_s = min(2 * wait, CLAIM_BACKOFF_MAX_S)
        return wait

    async def _claim(self, free: int) -> list[Lease]:
        try:
            return await queue.claim(
                self.db,
                self.worker_id,
                limit=free,
                lease_s=self.options.lease_s,
                # the claim begins what the engine would (its worker and actor): one round
                # trip less per execution
                begin_as=self.actor_id,
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
        return min(self.options.poll_s, max(wait, CLAIM_BACKOFF_MIN_S))

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
        # Not ``log.bind``: a bound logger per execution cost ~2 % of a drained execution.
        ids = {"worker_id": self.worker_id, "execution_id": str(lease.execution_id)}
        try:
            status = await self.engine.run(lease.tenant_id, lease.execution_id, lease=lease)
            log.info("execution ended", status=str(status), attempt=lease.attempt, **ids)
        except (IllegalTransition, StaleStatus) as exc:
            log.info("execution moved under this worker", reason=str(exc), **ids)
            await self._quietly(self._settle_moved(lease, exc))
        except LeaseLost as exc:
            log.warning("lease lost; result not recorded", error=str(exc), **ids)
        except Exception as exc:
            # No verdict was reached (database gone, unexpected error): the queue decides,
            # retry later with back-off or dead-letter once the attempts are spent.
            error = f"{type(exc).__name__}: {exc}"
            log.warning("attempt failed", error=error, exc_info=exc, **ids)
            await self._persistently(lambda: queue.fail(self.db, lease, error, self.actor_id))

    async def _settle_moved(self, lease: Lease, exc: Exception) -> None:
        """Its status changed under us. Ended, or back waiting for approval: nothing to run,
        drop the row. Still runnable (a worker with a stale lease raced us): an attempt
        without a verdict, so it is retried later and resumed then."""
        async with self.db.connection() as conn:
            execution = await executions.get(conn, lease.tenant_id, str(lease.execution_id))
        status = execution.status
        if status_machine.is_terminal(status) or status is Status.PENDING_APPROVAL:
            await queue.discard(self.db, lease)
        else:
            await queue.fail(
                self.db, lease, f"status changed under this worker: {exc}", self.actor_id
            )

    async def _persistently(self, work: Callable[[], Awaitable[object]]) -> None:
        """Like ``_quietly``, but tries again for a while: after a database restart the
        execution is back in the queue in seconds instead of at its lease's expiry."""
        for _ in range(RETRIES):
            try:
                await work()
                return
            except DatabaseError as exc:
                log.warning("queue update failed; trying again", error=str(exc))
            await bounded.sleep_unless(self.halt, RETRY_EVERY_S)

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
        while not self.halt.is_set():
            self.renew_every = self._renew_every()
            await bounded.sleep_unless(self.renew_soon, self.renew_every)
            self.renew_soon.clear()
            held = {lease.execution_id: (lease, task) for lease, task in self.running.values()}
            if not held:
                continue
            try:
                # Bounded: a hung renewal must not hold back the next one.
                async with asyncio.timeout(max(1.0, self.renew_every)):
                    kept = await queue.renew(self.db, [lease for lease, _ in held.values()])
            except (DatabaseError, TimeoutError) as exc:
                log.warning("lease renewal failed", worker_id=self.worker_id, error=repr(exc))
                continue
            for execution_id, (_, task) in held.items():
                if execution_id not in kept and not task.done():
                    # Reaped and maybe claimed by another worker: stop at once, the new
                    # owner resumes it (and our end could not be recorded anyway).
                    log.warning(
                        "lease lost", worker_id=self.worker_id, execution_id=str(execution_id)
                    )
                    task.cancel()

    # --- life lock, wake-ups, reaping ----------------------------------------------------

    async def _life(self) -> None:
        """Hold the life lock on a connection of its own, which also LISTENs for wake-ups;
        take it again at once when the connection drops (a database restart)."""
        while not self.halt.is_set():
            try:
                async with workers.life(self.db.url, self.worker_id, queue.CHANNEL) as life:
                    if life.declared_dead:
                        await self._declared_dead()
                    self.life = life
                    self.sessions += 1
                    self.alive.set()
                    self.wake.set()  # look for anything queued while we were not listening
                    async for _ in life.notifications():
                        self.wake.set()
            except DatabaseError as exc:
                log.warning("worker session lost", worker_id=self.worker_id, error=str(exc))
            finally:
                self.alive.clear()
                self.life = None
            await bounded.sleep_unless(self.halt, 0.2)

    async def _declared_dead(self) -> None:
        """Cut off long enough to be declared dead: its leases and asset locks were taken
        back, and another worker may run its executions now. Stop them at once (the fence
        refuses their results anyway), then register again."""
        held = list(self.running.values())
        log.error("declared dead while cut off", worker_id=self.worker_id, stopping=len(held))
        for _, task in held:
            task.cancel()
        if held:
            await asyncio.wait([task for _, task in held], timeout=bounded.STOP_WITHIN_S)
        await self._quietly(queue.release(self.db, [lease for lease, _ in held]))
        await self._register()

    async def _reaper(self) -> None:
        every = min(self.options.reap_every_s, self.options.detect_every_s)
        while not self.halt.is_set():
            try:
                async with asyncio.timeout(max(10.0, every)):
                    await self._reap_round()
            except (DatabaseError, TimeoutError) as exc:
                log.warning("reaper failed", worker_id=self.worker_id, error=repr(exc))
            await bounded.sleep_unless(self.halt, every)

    async def _inventory_syncs(self) -> None:
        """Scheduled inventory syncs: any worker may run one; each due time is claimed once."""
        from opsconductor.services import inventory_sources

        while not await bounded.sleep_unless(self.halt, self.options.inventory_every_s):
            try:
                await inventory_sources.run_due(self.db, self.actor_id)
            except Exception as exc:
                log.warning("inventory syncs failed", worker_id=self.worker_id, error=repr(exc))

    async def _reap_round(self) -> None:
        seen = await recovery.watch(self.db, self.options.confirm_dead_s)
        if not seen.got:
            return  # another worker is the reaper of this round
        dead = [w for w in seen.dead if w != self.worker_id] if self._trusted() else []
        if dead or seen.sweep_due:
            swept = await recovery.sweep(self.db, self.actor_id, dead)
            if swept is not None and swept.anything:
                log.info("reaped", worker_id=self.worker_id, **vars(swept))
        now = time.monotonic()
        if now - self._approvals_swept_at >= self.options.reap_every_s:
            self._approvals_swept_at = now
            # Overdue approvals end here too (its own advisory lock: one sweep at a time).
            await gate.expire_overdue(self.db)

    async def _notifications(self) -> None:
        """Off the executions' path: events are read after the fact (notification_dispatch)."""
        from opsconductor.config import load_settings
        from opsconductor.notification_dispatch import Dispatcher

        dispatcher = Dispatcher(self.db, load_settings())
        every = self.options.notify_every_s
        while not self.halt.is_set():
            try:
                # Sends are bounded on their own (timeouts); this bounds a stuck database.
                async with asyncio.timeout(max(60.0, every)):
                    await dispatcher.round()
            except (OpsError, TimeoutError) as exc:
                log.warning("notification round failed", worker_id=self.worker_id, error=repr(exc))
            await bounded.sleep_unless(self.halt, every)

    def _trusted(self) -> bool:
        """May this reaper declare workers dead? Not right after its own session came back
        (a database restart): the other live workers may not have their locks back yet."""
        life = self.life
        if life is None:
            return False
        return self.sessions == 1 or time.monotonic() - life.since >= self.options.restart_grace_s

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
        # Bounded: a task that does not end still has its lease handed back below.
        await asyncio.wait([all_done], timeout=bounded.STOP_WITHIN_S)
        try:
            released = await queue.release(self.db, [lease for lease, _ in left])
        except DatabaseError as exc:
            log.warning("hand-back failed; leases will expire", error=str(exc))
            return
        self.handed_back = len(released)
