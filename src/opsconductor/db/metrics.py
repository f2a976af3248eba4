"""What /metrics reads from the database at scrape time (see sql/metrics.sql): counters and
histograms from the roll-up table that triggers keep current, gauges from live rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("metrics")
Row = dict[str, Any]

# The bounds are repeated in SQL (metric_duration_bounds, metric_wait_bounds, migration 0014)
# and the event types in event_metric_rows; tests/test_metrics_rollup.py checks they agree.
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


async def _gauges(conn: Conn, found: Snapshot, stale_s: float) -> None:
    """Figures about live rows (unfinished executions, queue, pending approvals, dead
    letters, workers)."""
    found.queue = await _rows(conn, "queue_depth")
    found.approvals_pending = int((await _rows(conn, "approvals_pending"))[0]["n"])
    found.dlq = await _rows(conn, "dlq_open")
    workers = (await _rows(conn, "workers_alive", {"stale_s": stale_s}))[0]
    found.workers_alive = int(workers["alive"])
    found.workers_in_flight = int(workers["in_flight"])


@dataclass(frozen=True)
class RollUp:
    """The summed roll-up rows: (metric, labels) -> value (see migration 0014)."""

    values: dict[tuple[str, tuple[str, ...]], Decimal]

    def of(self, metric: str) -> list[tuple[tuple[str, ...], Decimal]]:
        return sorted((k[1], v) for k, v in self.values.items() if k[0] == metric)

    def get(self, metric: str, *labels: str) -> Decimal:
        return self.values.get((metric, labels), Decimal(0))


def _cumulative(
    rows: list[tuple[tuple[str, ...], Decimal]], bounds: tuple[float, ...]
) -> tuple[dict[float, int], int]:
    """Per-bucket counts (label: the bucket's bound or +Inf) as cumulative counts by bound."""
    per = {float(labels[-1]): int(n) for labels, n in rows}
    running, counts = 0, {}
    for le in bounds:
        running += per.get(le, 0)
        counts[le] = running
    return counts, sum(per.values())


def _wait(found: RollUp, metric: str) -> Histogram:
    counts, total = _cumulative(found.of(metric), WAIT_BUCKETS)
    return Histogram(counts, total, float(found.get(f"{metric}_sum")))


def from_rollup(found: RollUp) -> Snapshot:
    """The counters and histograms of a Snapshot, from the roll-up's rows."""
    snap = Snapshot()
    snap.executions = [
        {"tenant_id": t, "status": s, "n": int(n)} for (t, s), n in found.of("executions")
    ]
    kinds = sorted(
        {labels[0] for m in ("step_duration", "step_retries") for labels, _ in found.of(m)}
    )
    for kind in kinds:
        rows = [(labels, n) for labels, n in found.of("step_duration") if labels[0] == kind]
        counts, total = _cumulative(rows, DURATION_BUCKETS)
        snap.step_buckets[kind] = counts
        snap.step_totals.append(
            {
                "step_type": kind,
                "n": total,
                "seconds": found.get("step_duration_sum", kind),
                "retries": int(found.get("step_retries", kind)),
            }
        )
    snap.queue_wait = _wait(found, "queue_wait")
    snap.approval_wait = _wait(found, "approval_wait")
    snap.lease_renewals = int(found.get("lease_renewals"))
    pairs = {(labels[0], labels[1]) for labels, _ in found.of("sla_outcomes")}
    snap.sla_outcomes = [
        {
            "tenant_id": t,
            "sla_class": c,
            "met": int(found.get("sla_outcomes", t, c, "met")),
            "violated": int(found.get("sla_outcomes", t, c, "violated")),
        }
        for t, c in sorted(pairs)
    ]
    snap.sla_violations = [
        {"tenant_id": t, "sla_class": c, "n": int(n)} for (t, c), n in found.of("sla_violations")
    ]
    snap.events = [
        {"tenant_id": t, "event_type": e, "n": int(n)} for (t, e), n in found.of("events")
    ]
    return snap


async def rollup(conn: Conn) -> RollUp:
    rows = await _rows(conn, "rollup")
    return RollUp({(r["metric"], tuple(r["labels"])): r["value"] for r in rows})


async def snapshot(conn: Conn, *, stale_s: float) -> Snapshot:
    """Every database-held figure, read in one repeatable-read snapshot so they agree. The
    counters come from the roll-up (a few rows), the gauges from live rows only."""
    await conn.execute(Q["compact"])  # its own short transaction, before the snapshot
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        found = from_rollup(await rollup(conn))
        found.executions += await _rows(conn, "executions_live")
        await _gauges(conn, found, stale_s)
    return found


async def recount(conn: Conn, *, stale_s: float) -> Snapshot:
    """The same figures computed from every row (cost grows with history): the reference
    the roll-up is checked against. Scrapes never call this."""
    found = Snapshot()
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        found.executions = await _rows(conn, "recount_executions_by_status")
        buckets = {"buckets": list(DURATION_BUCKETS)}
        for row in await _rows(conn, "recount_step_duration_buckets", buckets):
            found.step_buckets.setdefault(row["step_type"], {})[float(row["le"])] = int(row["n"])
        found.step_totals = await _rows(conn, "recount_step_totals")
        waits = {"buckets": list(WAIT_BUCKETS)}
        found.queue_wait = _histogram(await _rows(conn, "recount_queue_wait_buckets", waits))
        found.approval_wait = _histogram(await _rows(conn, "recount_approval_wait_buckets", waits))
        misc = await _rows(conn, "recount_executions_misc")
        found.lease_renewals = int(misc[0]["lease_renewals"])
        found.sla_outcomes = await _rows(conn, "recount_sla_outcomes")
        found.sla_violations = await _rows(conn, "recount_sla_violations")
        types = {"types": list(COUNTED_EVENTS)}
        found.events = await _rows(conn, "recount_events_of_types", types)
        await _gauges(conn, found, stale_s)
    return found
