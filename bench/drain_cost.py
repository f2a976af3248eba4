"""CPU per execution of a drain: the worker processes' and the server's, apart.

The drain figure of ``bench/throughput.py`` is wall time, and on a shared 2-core machine
wall time moves 2-4x with the load. CPU time moves far less: this drains N queued no-op
executions through ``opsc worker`` processes (as throughput.py does) and reads, from
``/proc/<pid>/schedstat``, the time the worker processes and this database's server
processes spent on a CPU. Their sum bounds the drain on an idle machine: 2 cores /
(CPU per execution). The server must run on this machine (``DATABASE_URL``, else a
throw-away embedded server); ``--source DIR`` measures another checkout's ``src``.
It also counts the transactions the workers committed in the drained database
(``pg_stat_database``, less this script's own polls): with autocommit statements, about
their round trips. Batched statements serve many executions each, so this also moves with
how full the batches run (a drain's pace), less than CPU time does but not nothing.

``--systems ours pgqueuer`` measures PgQueuer's drain the same way in the same run (its
workers as ``throughput.py`` runs them, their rounds alternating with ours): the peer's
CPU per job is the budget a same-run throughput ratio has to meet.

    python bench/drain_cost.py [--jobs N] [--processes P] [--rounds R] [--source DIR]
                               [--systems ours pgqueuer] [--analyze] [--assets N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--source" in sys.argv[:-1]:
    # the other checkout's code in this process too (its migrations build the database),
    # and in the workers, which inherit the variable
    _source = str(Path(sys.argv[sys.argv.index("--source") + 1]).resolve())
    if os.environ.get("PYTHONPATH") != _source:
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONPATH": _source}
        )

import psycopg
import throughput
from throughput import (
    ENQUEUE,
    PENDING,
    SETUP,
    Workers,
    create_db,
    drop_db,
    server_url,
)

#: What each system's worker processes run at once (as throughput.py runs them).
CONCURRENCY = {"ours": 32, "pgqueuer": 32}


def cpu_ns(pid: int) -> int:
    """Nanoseconds process ``pid`` has run on a CPU (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def backends(server: str, database: str) -> list[int]:
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [row[0] for row in rows]


def transactions(server: str, database: str) -> int:
    """Transactions committed or rolled back in ``database`` (its sessions' flushed stats)."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def drained(url: str, workers: Workers, timeout_s: float) -> tuple[float, int]:
    """throughput.wait_drained that also says how many polls (transactions) it made."""
    deadline = time.perf_counter() + timeout_s
    polls = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            if any(proc.poll() is not None for proc in workers.procs):
                raise RuntimeError(f"a worker process died; see {workers.logs}")
            polls += 1
            row = conn.execute(PENDING[workers.kind]).fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter(), polls
            time.sleep(0.01)
    raise TimeoutError(f"queue not drained after {timeout_s:.0f} s")


def one_drain(
    kind: str, server: str, template: str, n: int, processes: int, logs: Path
) -> tuple[float, float, float, float]:
    """(jobs/s, server CPU s, workers' CPU s, transactions) of one drain of a fresh
    copy; the transactions are from the workers' start to their stop (their start-up and
    shutdown included, a few dozen)."""
    name = f"dc_{uuid.uuid4().hex[:8]}"
    url = create_db(server, name, template)
    workers = Workers(kind, url, processes, CONCURRENCY[kind], logs)
    try:
        xacts_before = transactions(server, name)
        workers.start()
        server_before = {pid: cpu_ns(pid) for pid in backends(server, name)}
        workers_before = {p.pid: cpu_ns(p.pid) for p in workers.procs}
        start = time.perf_counter()
        workers.go()
        ended, polls = drained(url, workers, timeout_s=300)
        # connections opened during the drain count whole (they started at 0)
        server_cpu = sum(cpu_ns(pid) - server_before.get(pid, 0) for pid in backends(server, name))
        workers_cpu = sum(cpu_ns(p.pid) - workers_before[p.pid] for p in workers.procs)
        workers.stop()
        for _ in range(500):  # a session's counts are flushed when it ends
            if not backends(server, name):
                break
            time.sleep(0.01)
        xacts = transactions(server, name) - xacts_before - polls
    finally:
        workers.kill()
        drop_db(server, name)
    return n / (ended - start), server_cpu / 1e9, workers_cpu / 1e9, xacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", type=Path, help="a checkout's src/ to measure instead")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=sorted(CONCURRENCY),
        default=["ours"],
        help="also drain a peer's no-op jobs the same way, rounds alternating",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE each filled template, so every drain plans with current statistics "
        "(as a long-lived database does); without it, whether autovacuum got there first "
        "is left to chance",
    )
    parser.add_argument(
        "--assets",
        type=int,
        default=throughput.ASSETS,
        help="local assets our plans are spread over, round robin (each run locks its own "
        "for its step: fewer assets than runs in flight make runs wait for one another)",
    )
    args = parser.parse_args()
    throughput.ASSETS = args.assets
    server = server_url()
    templates = {kind: f"dc_tpl_{kind}_{os.getpid()}" for kind in args.systems}
    logs = Path(tempfile.mkdtemp(prefix="opsc-drain-cost-"))
    runs: dict[str, list[tuple[float, float, float, float]]] = {kind: [] for kind in args.systems}
    try:
        for kind, template in templates.items():
            url = create_db(server, template)
            asyncio.run(SETUP[kind](url))
            asyncio.run(ENQUEUE[kind](url, args.jobs))
            if args.analyze:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("ANALYZE")
        for _ in range(args.rounds):
            for kind, template in templates.items():
                runs[kind].append(
                    one_drain(kind, server, template, args.jobs, args.processes, logs)
                )
    finally:
        for template in templates.values():
            drop_db(server, template)
    load = os.getloadavg()
    print(
        f"drain cost, {args.jobs} no-op jobs, {args.processes} worker processes, "
        f"median of {args.rounds}{f', source {args.source}' if args.source else ''}, "
        f"{args.assets} assets"
        f"{', analysed' if args.analyze else ''}"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    for kind, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        pg = statistics.median(r[1] for r in results) / args.jobs * 1e6
        py = statistics.median(r[2] for r in results) / args.jobs * 1e6
        xacts = statistics.median(r[3] for r in results) / args.jobs
        print(f"{kind}:")
        print(f"  server CPU   {pg:7.0f} us per job")
        print(f"  workers CPU  {py:7.0f} us per job")
        print(
            f"  together     {pg + py:7.0f} us: at most {2e6 / (pg + py):,.0f}/s on 2 idle "
            f"cores (measured here: {rate:,.0f}/s at this load)"
        )
        print(f"  transactions {xacts:7.2f} per job (the workers', in the drained database)")


if __name__ == "__main__":
    main()
