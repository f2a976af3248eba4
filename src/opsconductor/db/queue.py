"""The background queue in PostgreSQL: enqueue, claim, renew, finish, retry,
dead-letter, requeue, reap. Every write by a worker is checked against its lease token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opsconductor import policies, status_machine
from opsconductor.db import executions, queries, runs
from opsconductor.db.connection import Conn, Database
from opsconductor.db.runs import StartContext
from opsconductor.errors import BadInput, NotFound
from opsconductor.records import Execution
from opsconductor.status_machine import Status

Q = queries.load("queue")
Row = dict[str, Any]

#: Channel of the wake-up notifications; the payload is empty, a wake-up only says "look".
CHANNEL = "opsc_queue"
#: Advisory lock that makes the reapers of all workers take turns (any constant, same everywhere).
REAPER_LOCK_KEY = 5_118_830_003


@dataclass(frozen=True)
class Lease:
    """What a worker holds on one claimed execution."""

    execution_id: uuid.UUID
    tenant_id: str
    token: uuid.UUID
    attempt: int
    max_attempts: int
    lease_s: float
    #: the execution row as read by the claim (saves the engine a round trip)
    execution: Row | None = field(default=None, compare=False, repr=False)
    #: what the engine reads to start it, read by the claim too (another round trip saved)
    context: StartContext | None = field(default=None, compare=False, repr=False)
    #: a resumed execution: how long it waited for this claim since its interruption
    recovered_after_s: float | None = None
    #: the latest interruption ("worker crash", "lease expiry", "worker shutdown", ...)
    interruption: str | None = None
    #: how many times it was interrupted, and the seconds it spent without a worker in all
    interruptions: int = 0
    recovery_s: float = 0.0
    #: begun by the claim (queued -> running, ``claim(begin_as=...)``): its execution
    #: budget's end on this process's monotonic clock, counted from before the claim was
    #: sent (never later than the ``timeout_at`` stored). None: not begun by the claim.
    deadline: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Reaped:
    requeued: int
    dead_lettered: int


async def enqueue(
    conn: Conn,
    execution_id: uuid.UUID,
    action_classes: Iterable[str],
    *,
    min_lease_s: float = 0.0,
    plan_timeout: policies.PlanTimeout | None = None,
) -> None:
    """Queue an execution (its policies come from its SLA class and ``action_classes``);
    call inside the transaction that made it ``queued``. Workers are notified at commit.
    ``plan_timeout``: its plan's part of the execution budget, with which the claim begins
    it (None: the engine begins it, one round trip later)."""
    await conn.execute(
        Q["enqueue"],
        {
            "execution_id": execution_id,
            "action_classes": sorted(set(action_classes)),
            "min_lease_s": min_lease_s,
            "plan_timeout_s": None if plan_timeout is None else plan_timeout.plan_s,
            "steps_timeout_s": None if plan_timeout is None else plan_timeout.steps_s,
        },
    )


async def enqueue_plan(conn: Conn, execution: Execution) -> None:
    """``enqueue`` with what it needs read from the execution's plan."""
    from opsconductor.plan import parse_plan  # pydantic: not for every queue reader

    timeout = policies.plan_timeout(parse_plan(execution.plan_snapshot["plan"]))
    await enqueue(conn, execution.id, timeout.action_classes, plan_timeout=timeout)


async def enqueue_approved(conn: Conn, execution: Execution, actor_id: str) -> None:
    """Background work that was just approved goes to the workers (``approved -> queued``),
    in the transaction that approved it."""
    await executions.transition(
        conn, execution.id, Status.APPROVED, Status.QUEUED, actor_id=actor_id
    )
    await enqueue_plan(conn, execution)


async def claim(
    db: Database,
    worker_id: str,
    *,
    limit: int,
    lease_s: float | None = None,
    begin_as: str | None = None,
) -> list[Lease]:
    """Lease up to ``limit`` available executions, best priority and oldest first.

    ``lease_s`` overrides the per-row visibility timeout (set at enqueue from the policies).
    ``begin_as``: the claim also begins, as this actor and ``worker_id``, the new work the
    engine would begin at once (queued, approval level 0, budget stored at enqueue); those
    leases carry a ``deadline`` and the engine does not begin them again.
    """
    async with db.connection() as conn:
        sent = time.monotonic()
        cur = await conn.execute(
            Q["claim"],
            {"limit": limit, "worker_id": worker_id, "lease_s": lease_s, "begin_actor": begin_as},
            prepare=True,  # every claim of every worker: parsed once per connection
        )
        rows = await cur.fetchall()
    return [_lease(row, sent) for row in rows]


def _lease(row: Row, sent: float) -> Lease:
    context = row.pop("start_context")
    extended = row.pop("extended_timeout_at")
    if extended is not None:  # the claim moved the deadline past the time without a worker
        row["timeout_at"] = extended
    begun_s = row.pop("begun_timeout_s")
    return Lease(
        execution_id=row["id"],
        tenant_id=row["tenant_id"],
        token=row.pop("lease_token"),
        attempt=row.pop("attempt_count"),
        max_attempts=row.pop("max_attempts"),
        lease_s=row.pop("lease_s"),
        execution=row,
        context=None if context is None else runs.context_of(context),
        recovered_after_s=row.pop("recovered_after_s"),
        interruption=row.pop("interruption"),
        interruptions=row.pop("interruptions"),
        recovery_s=row.pop("recovery_s"),
        deadline=None if begun_s is None else sent + begun_s,
    )


async def renew(db: Database, leases: Sequence[Lease]) -> set[uuid.UUID]:
    """Extend every lease still held; return the ids still held (the others were lost)."""
    if not leases:
        return set()
    async with db.connection() as conn:
        cur = await conn.execute(
            Q["renew"],
            {
                "ids": [lease.execution_id for lease in leases],
                "tokens": [lease.token for lease in leases],
                "secs": [float(lease.lease_s) for lease in leases],
            },
        )
        return {row["execution_id"] for row in await cur.fetchall()}


async def discard(db: Database, lease: Lease) -> bool:
    """Drop a queue row whose execution needs no run (already ended elsewhere)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            Q["complete"], {"execution_id": lease.execution_id, "lease_token": lease.token}
        )
        return await cur.fetchone() is not None


async def fail(db: Database, lease: Lease, error: str, actor_id: str) -> str | None:
    """The attempt ended without a verdict (crash, lost database): retry it later with
    back-off, or dead-letter it once its attempts are spent. Returns ``"retry"``,
    ``"dead_letter"``, or ``None`` when the lease was no longer ours (nothing changed)."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            Q["lock_owned"], {"execution_id": lease.execution_id, "lease_token": lease.token}
        )
        row = await cur.fetchone()
        if row is None:
            return None
        return await _retry_or_dead_letter(conn, row, error, actor_id)


async def _retry_or_dead_letter(conn: Conn, row: Row, error: str, actor_id: str) -> str:
    execution = {"id": row["execution_id"], "tenant_id": row["tenant_id"]}
    attempts = int(row["attempt_count"])
    if attempts >= row["max_attempts"]:
        reason = f"{error} (attempt {attempts} of {row['max_attempts']})"
        await conn.execute(
            Q["dead_letter"], {"execution_id": row["execution_id"], "reason": reason}
        )
        await executions.append_event(
            conn, execution, "dead_lettered", actor_id, {"reason": reason, "attempts": attempts}
        )
        return "dead_letter"
    delay = policies.backoff_s(attempts - 1)
    await conn.execute(
        Q["retry_later"],
        {"execution_id": row["execution_id"], "backoff_s": delay, "error": error},
    )
    await executions.append_event(
        conn,
        execution,
        "retry_scheduled",
        actor_id,
        {"error": error, "attempt": attempts, "backoff_s": round(delay, 3)},
    )
    return "retry"


async def release(db: Database, leases: Sequence[Lease]) -> set[uuid.UUID]:
    """Hand leases back so another worker takes the work at once (graceful shutdown)."""
    if not leases:
        return set()
    async with db.connection() as conn:
        cur = await conn.execute(
            Q["release"],
            {
                "ids": [lease.execution_id for lease in leases],
                "tokens": [lease.token for lease in leases],
            },
        )
        return {row["execution_id"] for row in await cur.fetchall()}


async def reap(db: Database, actor_id: str, *, limit: int = 500) -> Reaped | None:
    """Take back expired leases and those of dead workers (or dead-letter them when their
    attempts are spent). One reaper at a time in the whole cluster: ``None`` if another
    one runs. Workers sweep through ``recovery.sweep``, which frees asset locks too."""
    async with db.transaction() as conn:
        if not await try_reaper_lock(conn):
            return None
        return await reap_in(conn, actor_id, limit=limit)


async def try_reaper_lock(conn: Conn) -> bool:
    """Inside a transaction: this one is the reaper until it ends, or another one is."""
    cur = await conn.execute(Q["try_reaper_lock"], {"key": REAPER_LOCK_KEY})
    got = await cur.fetchone()
    return got is not None and bool(got["got"])


async def reap_in(conn: Conn, actor_id: str, *, limit: int = 500) -> Reaped:
    """``reap`` inside the caller's transaction, which holds the reaper lock."""
    cur = await conn.execute(Q["recoverable_leases"], {"limit": limit})
    outcomes = [await _recover(conn, row, actor_id) for row in await cur.fetchall()]
    if "retry" in outcomes:
        await conn.execute(Q["notify"])
    return Reaped(outcomes.count("retry"), outcomes.count("dead_letter"))


async def _recover(conn: Conn, row: Row, actor_id: str) -> str:
    """A lease whose worker is gone: claimable at once (before new work), or dead-lettered
    once its attempts are spent (an execution that kills every worker it lands on; see
    ``recoverable_leases`` for which crashes are charged)."""
    if row["cause"] == "worker crash":
        error = f"worker {row['worker_id']} died (its database session ended)"
    else:
        error = f"lease expired on worker {row['worker_id']}"
    attempts = int(row["attempt_count"])
    if row["charged"] and attempts >= row["max_attempts"]:
        return await _retry_or_dead_letter(conn, row, error, actor_id)
    await conn.execute(
        Q["recover"],
        {
            "execution_id": row["execution_id"],
            "error": error,
            "cause": row["cause"],
            "interrupted_at": row["interrupted_at"],
            "charged": row["charged"],
        },
    )
    await executions.append_event(
        conn,
        {"id": row["execution_id"], "tenant_id": row["tenant_id"]},
        "retry_scheduled",
        actor_id,
        {
            "error": error,
            "cause": row["cause"],
            "attempt": attempts,
            "charged": row["charged"],
            "backoff_s": 0,
        },
    )
    return "retry"


async def next_available_in(db: Database) -> float | None:
    """Seconds until the earliest waiting row becomes claimable (<= 0: now); None if none."""
    async with db.connection() as conn:
        cur = await conn.execute(Q["next_available_in"])
        row = await cur.fetchone()
    return None if row is None or row["wait_s"] is None else float(row["wait_s"])


async def dead_letters(
    conn: Conn,
    tenant_id: str,
    *,
    include_requeued: bool = False,
    limit: int = 50,
    execution_id: uuid.UUID | None = None,
) -> list[Row]:
    cur = await conn.execute(
        Q["list_dlq"],
        {
            "tenant_id": tenant_id,
            "include_requeued": include_requeued,
            "limit": limit,
            "execution_id": execution_id,
        },
    )
    return await cur.fetchall()


async def requeue(db: Database, tenant_id: str, execution_id: str, actor_id: str) -> Execution:
    """Put a dead-lettered execution back in the queue with a fresh attempt budget."""
    async with db.transaction() as conn:
        execution = await executions.get(conn, tenant_id, execution_id)
        if status_machine.is_terminal(execution.status):
            raise BadInput(
                f"execution {execution.id} is {execution.status}: it has ended, "
                "there is nothing to requeue"
            )
        cur = await conn.execute(
            Q["mark_requeued"], {"execution_id": execution.id, "actor_id": actor_id}
        )
        entry = await cur.fetchone()
        if entry is None:
            raise NotFound(f"execution {execution.id} is not in the dead-letter queue")
        await conn.execute(Q["clear_dead_letter_reason"], {"execution_id": execution.id})
        await enqueue_plan(conn, execution)
        await executions.append_event(
            conn, execution, "requeued", actor_id, {"dlq_id": entry["id"]}
        )
    return execution


async def depth(db: Database) -> Row:
    async with db.connection() as conn:
        cur = await conn.execute(Q["depth"])
        row = await cur.fetchone()
    assert row is not None
    return row


async def park(db: Database, lease: Lease) -> bool:
    """Hand the lease back and keep the row asleep until ``unpark`` (a person decides)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            Q["park"], {"execution_id": lease.execution_id, "lease_token": lease.token}
        )
        return await cur.fetchone() is not None


async def unpark(conn: Conn, execution_id: uuid.UUID) -> None:
    await conn.execute(Q["unpark"], {"execution_id": execution_id})


async def drop_parked(conn: Conn, execution_id: uuid.UUID) -> None:
    await conn.execute(Q["drop_parked"], {"execution_id": execution_id})
