"""Scale benchmark (issue 16): what stays flat as the history grows.

Prints, from one run on one PostgreSQL server (``DATABASE_URL``, else a throw-away embedded
server):

1. scrape time of ``/metrics``' database part (``db.metrics.snapshot``) at 10k / 100k / 1M
   finished executions (each with one step attempt, three events, and an approval for one in
   ten), and the from-scratch recount it replaced (``db.metrics.recount``) up to
   ``--recount-max``;
2. what the roll-up triggers cost a writer: one execution's life (insert, start, a step
   attempt started and finished, finish, two events; one statement each, in one
   transaction, synchronous_commit off) with the metric triggers on and off, in two fresh
   databases, alternating;
3. (added by the lead) submission latency at 1k / 10k / 100k assets: see
   ``submission_latency``.

History is generated set-based (``INSERT ... SELECT generate_series``) with the database's
triggers off for the load (``session_replication_role = replica``: needs a superuser, as the
embedded server gives), then the roll-up is rebuilt by the migration's own back-fill and the
tables are analysed. Only the scrape is timed, never the load.

    python bench/scale.py [--max 1000000] [--scrapes 20] [--recount-max 100000] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from opsconductor.db import embedded, migrations
from opsconductor.db import metrics as db_metrics
from opsconductor.db.connection import Database

LEVELS = (10_000, 100_000, 1_000_000)
CHUNK = 100_000
DB = "opsc_scale_bench"

# %(lo)s..%(hi)s: the ordinals of the executions to add; every one finished, background.
FILL = [
    """
    INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key, plan_name,
        plan_snapshot, plan_hash, status, mode, sla_class, approval_level, priority,
        estimated_duration_s, trace_id, created_at, started_at, finished_at, lease_renewals,
        sla_violated_at)
    SELECT md5('e' || g)::uuid, 't' || (g %% 10), 'bench', 'k' || g, 'plan ' || (g %% 50),
           '{"name": "bench"}', repeat('a', 64), 'completed', 'background',
           (ARRAY['fast', 'medium', 'long'])[1 + g %% 3]::execution.sla_class, 0, 5, 1,
           't' || g, ts, ts + interval '2 seconds', ts + make_interval(secs => 3 + g %% 40),
           g %% 3, CASE WHEN g %% 20 = 0 THEN ts + interval '1 minute' END
    FROM generate_series(%(lo)s::int, %(hi)s::int) AS g,
         LATERAL (SELECT now() - make_interval(secs => g) AS ts) AS t
    """,
    """
    INSERT INTO execution.execution_steps (execution_id, step_index, step_name, step_type,
        tenant_id, target_asset_id, status, attempt, started_at, finished_at)
    SELECT md5('e' || g)::uuid, 0, 'step', (ARRAY['command', 'noop', 'http'])[1 + g %% 3],
           't' || (g %% 10), 'localhost', 'completed', 1 + (g %% 50 = 0)::int,
           now() - make_interval(secs => g) + interval '2 seconds',
           now() - make_interval(secs => g) + make_interval(secs => 2 + (g %% 400) / 100.0)
    FROM generate_series(%(lo)s::int, %(hi)s::int) AS g
    """,
    """
    INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, from_status,
        to_status, actor_id, created_at)
    SELECT md5('e' || g)::uuid, 't' || (g %% 10), 'status', f::execution.execution_status,
           s::execution.execution_status, 'bench',
           now() - make_interval(secs => g) + make_interval(secs => o)
    FROM generate_series(%(lo)s::int, %(hi)s::int) AS g,
         (VALUES (NULL, 'approved', 0), ('approved', 'running', 2),
                 ('running', 'completed', 3)) AS v (f, s, o)
    """,
    """
    INSERT INTO execution.approvals (execution_id, level, plan_hash, state, requested_by,
        decided_by, decided_at, expires_at, created_at)
    SELECT md5('e' || g)::uuid, 1, repeat('a', 64), 'approved', 'bench', 'ann',
           now() - make_interval(secs => g) + make_interval(secs => g %% 600),
           now() + interval '1 hour', now() - make_interval(secs => g)
    FROM generate_series(%(lo)s::int, %(hi)s::int) AS g WHERE g %% 10 = 0
    """,
]


def server_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return embedded.start(Path(tempfile.mkdtemp(prefix="opsc-scale-")) / "pgdata")


def fresh_db(server: str, name: str = DB) -> str:
    drop_db(server, name)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(server, dbname=name)


def drop_db(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def grow(url: str, have: int, want: int) -> float:
    """Add executions have+1..want (untimed for the figures; returned for the record)."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for lo in range(have + 1, want + 1, CHUNK):
            hi = min(lo + CHUNK - 1, want)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO execution.tenants (tenant_id) SELECT 't' || n "
                    "FROM generate_series(0, 9) n ON CONFLICT DO NOTHING"
                )
                for sql in FILL:
                    conn.execute(sql, {"lo": lo, "hi": hi})
        conn.execute("SET session_replication_role = origin")
        conn.execute("SELECT execution.metric_rollup_rebuild()")
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


async def time_scrapes(url: str, n: int, *, recount: bool = False) -> list[float]:
    took = []
    async with Database(url, max_size=1) as db, db.connection() as conn:
        for _ in range(n):
            t = time.perf_counter()
            if recount:
                await db_metrics.recount(conn, stale_s=30)
            else:
                await db_metrics.snapshot(conn, stale_s=30)
            took.append(time.perf_counter() - t)
    return took


LIFE = [
    """INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key, plan_name,
        plan_snapshot, plan_hash, status, mode, sla_class, approval_level, priority,
        estimated_duration_s, trace_id)
       VALUES (%(id)s, 't0', 'bench', %(key)s, 'life', '{}', repeat('a', 64), 'approved',
               'immediate', 'fast', 0, 5, 1, 't')""",
    """INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, to_status,
        actor_id) VALUES (%(id)s, 't0', 'status', 'approved', 'bench')""",
    """UPDATE execution.executions SET status = 'running', started_at = now()
       WHERE id = %(id)s""",
    """INSERT INTO execution.execution_steps (execution_id, step_index, step_name, step_type,
        tenant_id, target_asset_id, status, attempt, started_at)
       VALUES (%(id)s, 0, 's', 'noop', 't0', 'localhost', 'running', 1, now())""",
    """UPDATE execution.execution_steps SET status = 'completed', finished_at = now()
       WHERE execution_id = %(id)s""",
    """UPDATE execution.executions SET status = 'completed', finished_at = now()
       WHERE id = %(id)s""",
    """INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, to_status,
        actor_id) VALUES (%(id)s, 't0', 'status', 'completed', 'bench')""",
]
METRIC_TRIGGERS = {
    "execution.executions": ("executions_metrics_insert", "executions_metrics_update"),
    "execution.execution_steps": (
        "execution_steps_metrics_insert",
        "execution_steps_metrics_update",
    ),
    "execution.execution_events": ("execution_events_metrics",),
    "execution.approvals": ("approvals_metrics_insert", "approvals_metrics_update"),
}


def write_cost(server: str, n: int) -> dict[str, float]:
    """Microseconds per execution life (median, and 10th percentile), triggers on and off:
    two fresh databases, lives alternating between them so both see the same load."""
    found: dict[str, list[float]] = {"on": [], "off": []}
    conns = {}
    for state in ("on", "off"):
        url = fresh_db(server, f"{DB}_{state}")
        asyncio.run(_migrate(url))
        conns[state] = psycopg.connect(url, autocommit=True)
        conns[state].execute("INSERT INTO execution.tenants (tenant_id) VALUES ('t0')")
        # The commit's disk flush is the same on both sides and its noise on a shared disk
        # would hide the difference: measure the statements' work.
        conns[state].execute("SET synchronous_commit = off")
    for table, names in METRIC_TRIGGERS.items():
        for name in names:
            conns["off"].execute(f"ALTER TABLE {table} DISABLE TRIGGER {name}")
    try:
        for i in range(2 * n):
            order = ("on", "off") if i % 2 else ("off", "on")
            for state in order:
                conn = conns[state]
                p = {"id": uuid.uuid4(), "key": f"life-{i}"}
                t = time.perf_counter()
                with conn.transaction():
                    for sql in LIFE:
                        conn.execute(sql, p)
                if i >= n // 5:  # the first lives warm the caches up
                    found[state].append((time.perf_counter() - t) * 1e6)
    finally:
        for state, conn in conns.items():
            conn.close()
            drop_db(server, f"{DB}_{state}")
    out = {}
    for state, values in found.items():
        values.sort()
        out[state] = statistics.median(values)
        out[f"{state}_p10"] = values[len(values) // 10]
    return out


#: Inventory sizes for the submission-latency part, and submissions timed per size.
ASSET_LEVELS = (1_000, 10_000, 100_000)
SUBMISSIONS = 30


async def _submission_times(url: str, size: int, n: int) -> tuple[list[float], list[float]]:
    """One-target noop plans submitted one at a time, each to another asset: (today's
    path, targets chosen in SQL by index; the path before, the whole inventory read and
    filtered in Python), timed alike."""
    from opsconductor.db import assets
    from opsconductor.inventory import resolve_plan
    from opsconductor.plan import parse_plan
    from opsconductor.submission import Request, submit

    async with Database(url, max_size=2) as db:
        async with db.connection() as conn:
            await conn.execute(
                "INSERT INTO execution.tenants (tenant_id) VALUES ('inv') ON CONFLICT DO NOTHING"
            )
            await conn.execute(
                "INSERT INTO execution.assets (tenant_id, asset_id, hostname, address,"
                " environment, tags) SELECT 'inv', 'host-' || g, 'host-' || g || '.example',"
                " '10.0.0.1', CASE WHEN g %% 10 = 0 THEN 'prod' ELSE 'dev' END,"
                " jsonb_build_object('role', 'r' || (g %% 100))"
                " FROM generate_series(1, %s) g",
                (size,),
            )
            await conn.execute("ANALYZE execution.assets")
        now, before = [], []
        for i in range(n):
            target = f"host-{(i * 7919) % size + 1}"
            plan = parse_plan(
                {"name": "p", "steps": [{"name": "s", "type": "noop",
                                         "targets": {"assets": [target]}}]}
            )  # fmt: skip
            started = time.perf_counter()
            await submit(
                db,
                Request(plan, "inv", "bench", idempotency_key=uuid.uuid4().hex, enqueue=True),
            )
            now.append(time.perf_counter() - started)
            started = time.perf_counter()
            async with db.connection() as conn:  # what submission read before (issue 16)
                resolve_plan(plan, await assets.list_all(conn, "inv"))
            before.append(time.perf_counter() - started)
    return now, before


def submission_latency(server: str, levels: tuple[int, ...] = ASSET_LEVELS) -> None:
    """Submission latency against inventories of 1k / 10k / 100k assets: flat, since each
    selector is looked up by index (db/assets.py ``matching``)."""
    print("\n| assets | submit (targets in SQL) | whole-inventory read (before) |")
    print("|---:|---:|---:|")
    for size in levels:
        url = fresh_db(server)
        asyncio.run(_migrate(url))
        now, before = asyncio.run(_submission_times(url, size, SUBMISSIONS))
        print(f"| {size:,} | {ms(now)} | {ms(before)} |", flush=True)
        drop_db(server, DB)


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"{statistics.median(values) * 1000:.1f} ms (p95 {p95 * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=LEVELS[-1], help="largest history level")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes timed per level")
    parser.add_argument("--recount-max", type=int, default=100_000)
    parser.add_argument("--lives", type=int, default=1000, help="executions per write-cost side")
    parser.add_argument("--keep", action="store_true", help="keep the database (EXPLAIN)")
    parser.add_argument(
        "--max-assets", type=int, default=ASSET_LEVELS[-1], help="largest inventory level"
    )
    args = parser.parse_args()
    server = server_url()
    url = fresh_db(server)
    asyncio.run(_migrate(url))
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at start: {load}; cores: {os.cpu_count()}")
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {version[0] if version else '?'}")
    print("\n| finished executions | scrape (roll-up) | recount (before) | load s |")
    print("|---:|---:|---:|---:|")
    have = 0
    for level in [lv for lv in LEVELS if lv <= args.max] or [args.max]:
        loaded = grow(url, have, level)
        have = level
        fast = asyncio.run(time_scrapes(url, args.scrapes))
        slow = (
            ms(asyncio.run(time_scrapes(url, 3, recount=True)))
            if level <= args.recount_max
            else "not run"
        )
        print(f"| {level:,} | {ms(fast)} | {slow} | {loaded:.0f} |", flush=True)
    cost = write_cost(server, args.lives)
    print(
        "\nwrite cost per execution life (7 statements, 1 transaction), median (p10): "
        f"triggers on {cost['on']:.0f} us ({cost['on_p10']:.0f}), "
        f"off {cost['off']:.0f} us ({cost['off_p10']:.0f}): "
        f"+{cost['on'] - cost['off']:.0f} us ({cost['on_p10'] - cost['off_p10']:+.0f})"
    )
    if not args.keep:
        drop_db(server, DB)
    submission_latency(server, tuple(a for a in ASSET_LEVELS if a <= args.max_assets))
    print(f"load average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.keep:
        print(f"kept: {url}")


async def _migrate(url: str) -> None:
    async with Database(url, max_size=1) as db:
        await migrations.migrate(db)


if __name__ == "__main__":
    main()
