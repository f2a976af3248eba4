"""Counts the statements (round trips) and the CPU one background execution costs.

    .venv/bin/python bench/experiments/round_trips.py [--jobs 500] [--rounds 2] [--sh]

Starts a throw-away embedded server, submits ``--jobs`` one-step plans the way
``bench/throughput.py`` does (a ``type: noop`` step; with ``--sh`` a ``command: "true"``
step that spawns ``/bin/sh -c true``, its ``ours-sh`` diagnostic), and drains them with
one in-process ``Worker`` at concurrency 8 while every statement psycopg sends is counted
(by its named block in ``db/sql/*.sql``; ``BEGIN``/``COMMIT`` of ``Database.transaction``
counted apart). CPU per execution as in ``fewer_round_trips.py``: the worker from
``getrusage``, PostgreSQL from this server's backends in ``/proc``. A measuring tool, not
product code.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fewer_round_trips import backend_cpu_s, cpu
from throughput import PENDING, STEP, check_ours, create_db, fill_ours, with_db

from opsconductor import logs
from opsconductor.db import embedded, queries
from opsconductor.db.connection import Database
from opsconductor.worker import Worker, WorkerOptions

CONCURRENCY = 8
COUNTS: collections.Counter[str] = collections.Counter()
NAMES: dict[str, str] = {}


def _names() -> dict[str, str]:
    sql = Path(queries.__file__).parent / "sql"
    found = {}
    for path in sql.glob("*.sql"):
        for name, body in queries.load(path.stem).items():
            found[body] = f"{path.stem}.{name}"
    return found


def _install_counters() -> None:
    execute = psycopg.AsyncCursor.execute
    transaction = psycopg.AsyncConnection.transaction

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else str(query)
        COUNTS[NAMES.get(text, text.split("\n")[0][:60])] += 1
        return await execute(self, query, *args, **kwargs)

    def counted_tx(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS["BEGIN"] += 1
        COUNTS["COMMIT"] += 1
        return transaction(self, *args, **kwargs)

    psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign]
    psycopg.AsyncConnection.transaction = counted_tx  # type: ignore[method-assign]


async def drain(server: str, pgdata: Path, n: int, kind: str) -> str:
    url = create_db(server, "rt_run", "rt_tpl")
    async with Database(url, min_size=CONCURRENCY + 3, max_size=CONCURRENCY + 3) as db:
        COUNTS.clear()
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        backends, started = backend_cpu_s(pgdata), time.perf_counter()
        worker = Worker(db, actor_id="bench", options=WorkerOptions(concurrency=CONCURRENCY))
        task = asyncio.create_task(worker.serve())
        while True:
            async with db.connection() as conn:
                row = await (await conn.execute(PENDING["ours"])).fetchone()
            COUNTS["(drain poll)"] -= 1
            if row is not None and next(iter(row.values())) == 0:
                break
            await asyncio.sleep(0.01)
        took = time.perf_counter() - started
        worker_ms = (cpu(resource.getrusage(resource.RUSAGE_SELF)) - cpu(own)) / n * 1000
        sh_ms = (cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - cpu(kids)) / n * 1000
        pg_ms = (backend_cpu_s(pgdata) - backends) / n * 1000
        counts = dict(COUNTS)
        worker.stop()
        await task
    counts.pop("(drain poll)", None)
    poll = PENDING["ours"].split("\n")[0][:60]
    counts.pop(poll, None)
    lines = [
        f"{STEP[kind]['type']}: {n / took:.0f}/s; CPU per execution: worker "
        f"{worker_ms:.2f} ms, sh {sh_ms:.2f} ms, PostgreSQL {pg_ms:.2f} ms, total "
        f"{worker_ms + sh_ms + pg_ms:.2f} ms ({check_ours(url, n, STEP[kind]['type'])})",
        f"  round trips per execution: {sum(counts.values()) / n:.2f}",
    ]
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {count / n:6.2f}  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--sh", action="store_true", help='a command: "true" step (spawns sh) instead of noop'
    )
    args = parser.parse_args()
    kind = "ours-sh" if args.sh else "ours"
    logs.configure()
    NAMES.update(_names())
    pgdata = Path(tempfile.mkdtemp(prefix="opsc-rt-")) / "pgdata"
    server = embedded.start(pgdata)
    try:
        create_db(server, "rt_tpl")
        asyncio.run(fill_ours(with_db(server, "rt_tpl"), args.jobs, kind=kind))
        _install_counters()
        for _ in range(args.rounds):
            print(asyncio.run(drain(server, pgdata, args.jobs, kind)), flush=True)
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        embedded.stop(pgdata)


if __name__ == "__main__":
    main()
