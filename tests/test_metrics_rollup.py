"""The metrics roll-up (migration 0014) against a from-scratch recount of every row: equal
after inserts, updates and concurrent writers; after a prune the counters keep what they
counted and the executions gauge follows the rows held."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsconductor import metrics
from opsconductor.db import metrics as db_metrics
from opsconductor.db.connection import Database
from opsconductor.services import history
from opsconductor.services.caller import local_admin
from opsconductor.status_machine import TERMINAL
from tests.helpers import run_plan
from tests.history_support import ACTIVITY, params

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
#: gauges that read the clock or live rows: the same query in both paths
LIVE = ("opsc_queue_oldest_wait_seconds",)


def _samples(found: db_metrics.Snapshot) -> Samples:
    text = metrics.exposition(found).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.name in LIVE:
            continue
        for s in family.samples:
            if s.value != 0:  # a label set at 0 and one never seen read the same
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _both(db: Database) -> tuple[Samples, Samples]:
    async with db.connection() as conn:
        fast = await db_metrics.snapshot(conn, stale_s=30)
        slow = await db_metrics.recount(conn, stale_s=30)
    return _samples(fast), _samples(slow)


async def _activity(db: Database, tenant: str, n: int, tag: str) -> None:
    async with db.transaction() as conn:
        for sql in ACTIVITY:
            await conn.execute(sql, params(tenant, n, tag))


def _assert_same(a: Samples, b: Samples) -> None:
    assert a.keys() == b.keys(), (a.keys() - b.keys(), b.keys() - a.keys())
    for key, value in a.items():
        assert value == pytest.approx(b[key], rel=1e-9), key


async def test_sql_buckets_terminal_statuses_and_counted_events_match_python(
    db: Database,
) -> None:
    async with db.connection() as conn:
        for name, bounds in (
            ("metric_duration_bucket", db_metrics.DURATION_BUCKETS),
            ("metric_wait_bucket", db_metrics.WAIT_BUCKETS),
        ):
            for i, le in enumerate(bounds):  # a bound is in its own bucket; just above, next
                above = bounds[i + 1] if i + 1 < len(bounds) else float("inf")
                cur = await conn.execute(
                    f"SELECT execution.{name}(%s::numeric) AS at, "
                    f"execution.{name}(%s::numeric + 0.000001) AS past",
                    (str(le), str(le)),
                )
                row = await cur.fetchone()
                assert row is not None
                assert float(row["at"]) == le and float(row["past"]) == above
        cur = await conn.execute("SELECT execution.terminal_statuses()::text[] AS t")
        row = await cur.fetchone()
        assert row is not None and set(row["t"]) == {str(s) for s in TERMINAL}
        cur = await conn.execute(
            "SELECT (execution.event_metric_rows(ROW(1, gen_random_uuid(), 't', t, NULL, NULL,"
            " 'a', '{}', now())::execution.execution_events)).metric AS m "
            "FROM unnest(%s::text[]) AS t",
            ([*db_metrics.COUNTED_EVENTS, "status"],),
        )
        assert len(await cur.fetchall()) == len(db_metrics.COUNTED_EVENTS)


async def test_rollup_equals_a_recount_through_writes_concurrency_and_prune(
    db: Database, tmp_path: Path
) -> None:
    for n in range(2):  # real runs through the engine: events, steps, locks as in production
        status, _, _ = await run_plan(
            db,
            {
                "name": f"real {n}",
                "steps": [{"name": "n", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
            },
        )
        assert status == "completed"
    await _activity(db, "default", 60, "a")
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO execution.tenants (tenant_id) VALUES ('acme')")
    await _activity(db, "acme", 25, "b")
    fast, slow = await _both(db)
    _assert_same(fast, slow)
    assert fast[("opsc_step_retries_total", (("step_type", "http"),))] > 0
    assert fast[("opsc_queue_wait_seconds_count", ())] > 0
    assert fast[("opsc_approval_wait_seconds_count", ())] == 2
    assert fast[("opsc_locks_reaped_total", (("tenant", "acme"),))] > 0

    # Writers on several connections at once (one roll-up slot each), folded by a scrape.
    await asyncio.gather(*(_activity(db, "acme", 10, f"c{i}") for i in range(4)))
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(DISTINCT slot) AS n FROM execution.metric_rollup WHERE slot <> 0"
        )
        row = await cur.fetchone()
        assert row is not None and row["n"] >= 1
    fast, slow = await _both(db)
    _assert_same(fast, slow)
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM execution.metric_rollup WHERE slot <> 0"
        )
        row = await cur.fetchone()
        assert row is not None and row["n"] == 0  # the scrape folded every idle slot

    # Prune the old half of 'default': counters keep their values, the gauge drops.
    who = await local_admin(db, "default")
    report = await history.prune(
        db,
        who,
        export=tmp_path / "pruned.jsonl",
        before=datetime.now(UTC) - timedelta(minutes=3),
        tenant_id="default",
    )
    assert report.executions > 0
    after_fast, after_slow = await _both(db)
    counters = {k: v for k, v in fast.items() if not k[0].startswith("opsc_executions")}
    assert {k: v for k, v in after_fast.items() if k in counters} == pytest.approx(counters)
    gauge = {k: v for k, v in after_fast.items() if k[0] == "opsc_executions"}
    assert gauge == {k: v for k, v in after_slow.items() if k[0] == "opsc_executions"}
    assert sum(gauge.values()) < sum(v for k, v in fast.items() if k[0] == "opsc_executions")

    # More work after the prune: the roll-up moves exactly as a recount does.
    await _activity(db, "default", 20, "d")
    later_fast, later_slow = await _both(db)
    for key in set(later_fast) | set(after_fast):
        if key[0] in ("opsc_sla_compliance_ratio",):
            continue  # a ratio, not additive
        grew = later_fast.get(key, 0) - after_fast.get(key, 0)
        assert grew == pytest.approx(later_slow.get(key, 0) - after_slow.get(key, 0)), key

    # A rebuild (the migration's back-fill) recounts from the rows held.
    async with db.connection() as conn:
        await conn.execute("SELECT execution.metric_rollup_rebuild()")
    rebuilt, recounted = await _both(db)
    _assert_same(rebuilt, recounted)


async def test_the_counted_event_types_are_the_ones_the_partial_index_holds(db: Database) -> None:
    """A rebuild recounts COUNTED_EVENTS through a partial index (migration 0030): a type
    added to the tuple but not to the index would be counted by a full scan of history."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'execution'"
            " AND indexname = 'execution_events_type_idx'"
        )
        row = await cur.fetchone()
    assert row is not None
    held = set(re.findall(r"'([a-z_]+)'::text", row["indexdef"]))
    assert held == set(db_metrics.COUNTED_EVENTS)


#: Moves the drain never makes, each in one statement over many rows: counted columns that
#: change again once set (0036 sums new rows minus old ones and probes events only for the
#: rows whose outcome or wait did not cancel out), mixed with rows that change nothing.
AGAIN = [
    # a started background execution starts again later; some become immediate
    """UPDATE execution.executions SET started_at = started_at + interval '75 seconds',
           mode = CASE WHEN abs(hashtext(id::text)) %% 3 = 0 THEN 'immediate'
                       ELSE mode END
       WHERE tenant_id = %(tenant)s AND started_at IS NOT NULL""",
    # finished ones: their end moves, their class moves, their SLA flag flips both ways
    """UPDATE execution.executions SET finished_at = finished_at + interval '1 second',
           sla_class = CASE WHEN abs(hashtext(id::text)) %% 2 = 0 THEN 'long'
                            ELSE sla_class END,
           sla_violated_at = CASE WHEN sla_violated_at IS NULL
                                       AND abs(hashtext(id::text)) %% 4 = 1 THEN finished_at
                                  WHEN abs(hashtext(id::text)) %% 4 = 2 THEN NULL
                                  ELSE sla_violated_at END
       WHERE tenant_id = %(tenant)s AND finished_at IS NOT NULL""",
    # every row, nothing counted moves (all cancel), and a few renewals taken back
    """UPDATE execution.executions SET cancel_checks_performed = cancel_checks_performed + 1,
           lease_renewals = CASE WHEN lease_renewals > 1 THEN lease_renewals - 1
                                 ELSE lease_renewals END
       WHERE tenant_id = %(tenant)s""",
    # finished attempts: start and end both move, some become retries, some lose their end
    """UPDATE execution.execution_steps SET started_at = started_at - interval '2 seconds',
           attempt = CASE WHEN id %% 3 = 0 THEN attempt + 10 ELSE attempt END,
           finished_at = CASE WHEN id %% 5 = 0 THEN NULL ELSE finished_at END
       WHERE tenant_id = %(tenant)s AND finished_at IS NOT NULL""",
]


async def test_rollup_equals_a_recount_when_counted_columns_move_again(db: Database) -> None:
    await _activity(db, "default", 40, "a")
    async with db.transaction() as conn:
        for sql in AGAIN:
            await conn.execute(sql, params("default", 0, ""))
    fast, slow = await _both(db)
    _assert_same(fast, slow)
    assert fast[("opsc_queue_wait_seconds_count", ())] > 0
