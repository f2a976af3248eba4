"""What /metrics reads from the database at scrape time (see sql/metrics.sql)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("metrics")
Row = dict[str, Any]

#: Seconds; wide enough for fast commands and for half-hour deploys.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1800.0)
#: Seconds a human or a queue may keep work waiting.
WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
#: Event types counted as alerts and audit figures.
COUNTED_EVENTS = ("rbac_violation", "sla_violation", "lock_reaped")


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound, with the total count and sum."""

    buckets: dict[float, int]
    count: int
    total_s: float


@dataclass
class Snapshot:
    executions: list[Row] = field(default_factory=list)
    step_buckets: dict[str, dict[float, int]] = field(default_factory=dict)
    step_totals: list[Row] = field(default_factory=list)
    queue: list[Row] = field(default_factory=list)
    queue_wait: Histogram | None = None
    approval_wait: Histogram | None = None
    approvals_pending: int = 0
    lease_renewals: int = 0
    dlq: list[Row] = field(default_factory=list)
    sla_outcomes: list[Row] = field(default_factory=list)
    sla_violations: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)
    workers_alive: int = 0
    workers_in_flight: int = 0


async def _rows(conn: Conn, name: str, params: dict[str, Any] | None = None) -> list[Row]:
    cur = await conn.execute(Q[name], params or {})
    return await cur.fetchall()


def _histogram(rows: list[Row]) -> Histogram:
    if not rows:
        return Histogram({b: 0 for b in WAIT_BUCKETS}, 0, 0.0)
    return Histogram(
        {float(r["le"]): int(r["n"]) for r in rows},
        int(rows[0]["total"]),
        float(rows[0]["seconds"]),
    )


async def snapshot(conn: Conn, *, stale_s: float) -> Snapshot:
    """Every database-held figure, read in one repeatable-read snapshot so they agree."""
    found = Snapshot()
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        found.executions = await _rows(conn, "executions_by_status")
        buckets = {"buckets": list(DURATION_BUCKETS)}
        for row in await _rows(conn, "step_duration_buckets", buckets):
            found.step_buckets.setdefault(row["step_type"], {})[float(row["le"])] = int(row["n"])
        found.step_totals = await _rows(conn, "step_totals")
        found.queue = await _rows(conn, "queue_depth")
        waits = {"buckets": list(WAIT_BUCKETS)}
        found.queue_wait = _histogram(await _rows(conn, "queue_wait_buckets", waits))
        found.approval_wait = _histogram(await _rows(conn, "approval_wait_buckets", waits))
        found.approvals_pending = int((await _rows(conn, "approvals_pending"))[0]["n"])
        found.lease_renewals = int((await _rows(conn, "executions_misc"))[0]["lease_renewals"])
        found.dlq = await _rows(conn, "dlq_open")
        found.sla_outcomes = await _rows(conn, "sla_outcomes")
        found.sla_violations = await _rows(conn, "sla_violations")
        found.events = await _rows(conn, "events_of_types", {"types": list(COUNTED_EVENTS)})
        workers = (await _rows(conn, "workers_alive", {"stale_s": stale_s}))[0]
        found.workers_alive = int(workers["alive"])
        found.workers_in_flight = int(workers["in_flight"])
    return found
