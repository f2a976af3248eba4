"""CPU per submitted plan of a bulk enqueue: the submitting process's and the server's, apart.

The enqueue figure of ``bench/throughput.py`` is wall time, which moves 2-4x with the load
of a shared machine. CPU time moves far less: this submits N one-step no-op plans the way
throughput.py fills its queue (``submission.submit_many``, 500 plans a call, 2 at once,
every check) into a fresh copy of a migrated database, and reads from ``/proc`` the time
this process and the database's server processes spent on a CPU. Their sum bounds the
enqueue rate on an idle machine: 2 cores / (CPU per plan). The server must run on this
machine (``DATABASE_URL``, else a throw-away embedded server); ``--source DIR`` measures
another checkout's ``src``; ``--profile FILE`` writes a cProfile of the last round.
``--systems ours pgqueuer`` measures PgQueuer's enqueue (throughput.py's way: 1,000 jobs a
call on one connection) the same way in the same run, rounds alternating.

    python bench/enqueue_cost.py [--jobs N] [--rounds R] [--source DIR] [--profile FILE]
                                 [--systems ours pgqueuer]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--source" in sys.argv[:-1]:
    # the other checkout's code in this process (its migrations build the database)
    _source = str(Path(sys.argv[sys.argv.index("--source") + 1]).resolve())
    if os.environ.get("PYTHONPATH") != _source:
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONPATH": _source}
        )

from drain_cost import backends, cpu_ns
from throughput import (
    PENDING,
    SETUP,
    _migrate,
    create_db,
    drop_db,
    scalar,
    server_url,
    submit_plans,
)

from opsconductor.db.connection import Database

#: Bulk calls in flight at once, as throughput.py fills its queue.
CONCURRENCY = 2


async def timed(
    server: str, url: str, name: str, n: int, profile: Path | None
) -> tuple[float, float, float]:
    async with Database(url, min_size=CONCURRENCY, max_size=CONCURRENCY) as db:
        pids = backends(server, name)  # the pool's connections, open now
        server_before = {pid: cpu_ns(pid) for pid in pids}
        client_before = time.process_time()
        start = time.perf_counter()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        await submit_plans(db, n, CONCURRENCY)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        ended = time.perf_counter()
        client_cpu = time.process_time() - client_before
        server_cpu = sum(cpu_ns(pid) - server_before[pid] for pid in pids)
    return n / (ended - start), server_cpu / 1e9, client_cpu


async def timed_pgqueuer(server: str, url: str, name: str, n: int) -> tuple[float, float, float]:
    """PgQueuer's enqueue as throughput.py times it, measured as ``timed`` measures ours."""
    import psycopg
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        pids = backends(server, name)
        server_before = {pid: cpu_ns(pid) for pid in pids}
        client_before = time.process_time()
        start = time.perf_counter()
        for first in range(0, n, 1000):
            k = min(1000, n - first)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        ended = time.perf_counter()
        client_cpu = time.process_time() - client_before
        server_cpu = sum(cpu_ns(pid) - server_before[pid] for pid in pids)
    return n / (ended - start), server_cpu / 1e9, client_cpu


def one_enqueue(
    kind: str, server: str, template: str, n: int, profile: Path | None
) -> tuple[float, float, float]:
    """(plans/s, server CPU s, client CPU s) of one enqueue into a fresh copy."""
    name = f"ec_{uuid.uuid4().hex[:8]}"
    url = create_db(server, name, template)
    try:
        if kind == "ours":
            result = asyncio.run(timed(server, url, name, n, profile))
        else:
            result = asyncio.run(timed_pgqueuer(server, url, name, n))
        queued = scalar(url, PENDING[kind])
        if queued != n:
            raise AssertionError(f"{queued} of {n} plans queued")
    finally:
        drop_db(server, name)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", type=Path, help="a checkout's src/ to measure instead")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the last round here")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=["ours", "pgqueuer"],
        default=["ours"],
        help="also enqueue a peer's no-op jobs the same way, rounds alternating",
    )
    args = parser.parse_args()
    server = server_url()
    templates = {kind: f"ec_tpl_{kind}_{os.getpid()}" for kind in args.systems}
    runs: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in args.systems}
    try:
        for kind, template in templates.items():
            url = create_db(server, template)
            asyncio.run(_migrate(url) if kind == "ours" else SETUP[kind](url))
        for r in range(args.rounds):
            profile = args.profile if r == args.rounds - 1 else None
            for kind, template in templates.items():
                runs[kind].append(one_enqueue(kind, server, template, args.jobs, profile))
    finally:
        for template in templates.values():
            drop_db(server, template)
    load = os.getloadavg()
    print(
        f"enqueue cost, {args.jobs} one-step plans, {CONCURRENCY} bulk calls at once "
        f"(PgQueuer: 1,000 jobs a call), median of {args.rounds}"
        f"{f', source {args.source}' if args.source else ''}"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    for kind, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        pg = statistics.median(r[1] for r in results) / args.jobs * 1e6
        py = statistics.median(r[2] for r in results) / args.jobs * 1e6
        print(f"{kind}:")
        print(f"  server CPU   {pg:7.0f} us per job")
        print(f"  client CPU   {py:7.0f} us per job")
        print(
            f"  together     {pg + py:7.0f} us: at most {2e6 / (pg + py):,.0f}/s on 2 idle "
            f"cores (measured here: {rate:,.0f}/s at this load)"
        )


if __name__ == "__main__":
    main()
