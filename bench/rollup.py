"""What the metric roll-up (migration 0014, reworked in 0022) costs the workers' statements.

Every counter and histogram of ``/metrics`` is kept current by triggers, so a scrape reads a
few rows whatever the history; the price is paid on the writes. This measures it on the
statements a worker sends for every execution: the set-based ``transition`` (queued ->
running, running -> completed, as the engine sends them, in batches) on N queued
executions, with the roll-up triggers as installed and with them disabled, on fresh copies
of the same database, rounds alternating. Prints microseconds per execution for both and
the difference: the roll-up's share of these statements.

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


def cpu_ns(pid: int) -> int | None:
    """Time the server process ``pid`` has spent on a CPU (ns), where the server runs on
    this machine: unlike the wall time, it does not count the waits for a busy core."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def one_round(url: str, batch: int, *, rollup: bool) -> tuple[float, float | None]:
    """Seconds for both transitions of every queued execution in ``url``: wall time, and
    the server process's CPU time (None when it cannot be read)."""
    async with Database(url, max_size=2) as db, db.connection() as conn:
        if not rollup:
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
    times: dict[bool, list[tuple[float, float | None]]] = {True: [], False: []}
    try:
        for _ in range(args.rounds):
            for rollup in (True, False):
                name = f"rollup_{uuid.uuid4().hex[:8]}"
                create_db(server, name, template)
                try:
                    took = asyncio.run(one_round(with_db(server, name), args.batch, rollup=rollup))
                finally:
                    drop_db(server, name)
                times[rollup].append(took)
    finally:
        drop_db(server, template)

    def per(rollup: bool, what: int) -> float | None:
        got = [t[what] for t in times[rollup]]
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
        on, off = per(True, what), per(False, what)
        if on is None or off is None:
            print(f"  {title}: not readable here (the server runs elsewhere)")
            continue
        print(
            f"  {title:<10}  with the roll-up {on:7.1f} us/execution, without {off:7.1f}, "
            f"the roll-up's share {on - off:6.1f}"
        )


if __name__ == "__main__":
    main()
