"""What the metric roll-up (migration 0014, reworked in 0027) costs the workers' statements.

Every counter and histogram of ``/metrics`` is kept current by triggers, so a scrape reads a
few rows whatever the history; the price is paid on the writes. This measures it on the
statements a worker sends for every execution: the set-based ``transition`` (queued ->
running, running -> completed, as the engine sends them, in batches) on N queued
executions, with the roll-up triggers as installed, with 0014's row trigger on executions
put back, and with them all disabled, on fresh copies of the same database, rounds
alternating. Prints microseconds per execution for each and the roll-up's share.

    python bench/rollup.py [--executions N] [--batch B] [--rounds R]

The database: ``DATABASE_URL``, else a throw-away embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import ACTOR, create_db, drop_db, fill_ours, server_url, with_db

from opsconductor.db import batching
from opsconductor.db.connection import Database
from opsconductor.db.executions import Q, transition_item
from opsconductor.status_machine import Status

ROLLUP_TRIGGERS = (
    "SELECT tgrelid::regclass::text AS tbl, tgname FROM pg_trigger WHERE tgname LIKE '%metrics%'"
)
#: Migration 0014's row trigger on executions, as it was before 0027 (its function is kept).
ROW_TRIGGER_0014 = """
DROP TRIGGER executions_metrics_update ON execution.executions;
CREATE TRIGGER executions_metrics_update AFTER UPDATE ON execution.executions
    FOR EACH ROW WHEN (
        (OLD.status IS DISTINCT FROM NEW.status
         AND (NEW.status NOT IN ('pending_approval', 'approved', 'queued', 'running')
              OR OLD.status NOT IN ('pending_approval', 'approved', 'queued', 'running')))
        OR (OLD.started_at IS DISTINCT FROM NEW.started_at AND NEW.mode = 'background')
        OR OLD.lease_renewals IS DISTINCT FROM NEW.lease_renewals
        OR OLD.sla_violated_at IS DISTINCT FROM NEW.sla_violated_at
        OR OLD.finished_at IS DISTINCT FROM NEW.finished_at
        OR OLD.mode IS DISTINCT FROM NEW.mode
        OR OLD.sla_class IS DISTINCT FROM NEW.sla_class
        OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
"""
#: What is measured: the triggers as installed, 0014's row trigger instead, none at all.
VARIANTS = ("installed", "0014 row trigger", "no roll-up")


def cpu_ns(pid: int) -> int | None:
    """Time the server process ``pid`` has spent on a CPU (ns), where the server runs on
    this machine: unlike the wall time, it does not count the waits for a busy core."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def one_round(url: str, batch: int, variant: str) -> tuple[float, float | None]:
    """Seconds for both transitions of every queued execution in ``url``: wall time, and
    the server process's CPU time (None when it cannot be read)."""
    async with Database(url, max_size=2) as db, db.connection() as conn:
        if variant == "0014 row trigger":
            await conn.execute(ROW_TRIGGER_0014)
        if variant == "no roll-up":
            cur = await conn.execute(ROLLUP_TRIGGERS)
            for row in await cur.fetchall():
                await conn.execute(f'ALTER TABLE {row["tbl"]} DISABLE TRIGGER "{row["tgname"]}"')
        cur = await conn.execute(
            "SELECT id FROM execution.executions WHERE status = 'queued' ORDER BY id"
        )
        ids: list[uuid.UUID] = [row["id"] for row in await cur.fetchall()]
        await conn.execute("VACUUM ANALYZE")
        cur = await conn.execute("SELECT pg_backend_pid() AS pid")
        pid = (await cur.fetchall())[0]["pid"]
        cpu_before, start = cpu_ns(pid), time.perf_counter()
        for moves in ((Status.QUEUED, Status.RUNNING), (Status.RUNNING, Status.COMPLETED)):
            for at in range(0, len(ids), batch):
                items = [transition_item(i, *moves, actor_id=ACTOR) for i in ids[at : at + batch]]
                await batching.run(conn, Q["transition"], items)
        wall, cpu_after = time.perf_counter() - start, cpu_ns(pid)
        if cpu_before is None or cpu_after is None:
            return wall, None
        return wall, (cpu_after - cpu_before) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32, help="items per statement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = server_url()
    template = f"rollup_tpl_{os.getpid()}"
    create_db(server, template)
    asyncio.run(fill_ours(with_db(server, template), args.executions))
    times: dict[str, list[tuple[float, float | None]]] = {v: [] for v in VARIANTS}
    try:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                name = f"rollup_{uuid.uuid4().hex[:8]}"
                create_db(server, name, template)
                try:
                    took = asyncio.run(one_round(with_db(server, name), args.batch, variant))
                finally:
                    drop_db(server, name)
                times[variant].append(took)
    finally:
        drop_db(server, template)

    def per(variant: str, what: int) -> float | None:
        got = [t[what] for t in times[variant]]
        if any(t is None for t in got):
            return None
        return statistics.median(t for t in got if t is not None) / args.executions * 1e6

    load = os.getloadavg()
    print(
        f"roll-up cost on `transition` (queued -> running -> completed), {args.executions} "
        f"executions, {args.batch} per statement, median of {args.rounds} rounds"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    for what, title in ((1, "server CPU"), (0, "wall")):
        found = {variant: per(variant, what) for variant in VARIANTS}
        off = found["no roll-up"]
        if off is None:
            print(f"  {title}: not readable here (the server runs elsewhere)")
            continue
        for variant in VARIANTS:
            took = found[variant]
            assert took is not None
            print(
                f"  {title:<10}  {variant:<17} {took:7.1f} us/execution, "
                f"the roll-up's share {took - off:6.1f}"
            )


if __name__ == "__main__":
    main()
