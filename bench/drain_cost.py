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
how full the batches run (a drain's pace), less than CPU time does but not nothing. The
server process of this script's own queue polls is left out of the server's CPU.

``--functions`` also turns ``track_functions`` on in each drained copy (superuser) and prints,
per job, the self time of the database's functions that took the most (the batch
statements' functions and the roll-up and notification triggers: where the server's time
went, by function; wall time, so it moves with the load) and how many server connections
the workers used (each plans and caches every statement anew).

``--systems ours pgqueuer`` measures PgQueuer's drain the same way in the same run (its
workers as ``throughput.py`` runs them, their rounds alternating with ours): the peer's
CPU per job is the budget a same-run throughput ratio has to meet.

    python bench/drain_cost.py [--jobs N] [--processes P] [--rounds R] [--source DIR]
                               [--systems ours pgqueuer] [--analyze] [--functions]
                               [--assets N]
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
from dataclasses import dataclass, field
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


def drained(url: str, workers: Workers, timeout_s: float) -> tuple[float, int, int]:
    """throughput.wait_drained that also says how many polls (transactions) it made and
    the pid of its server process (not the drain's: its CPU is left out)."""
    deadline = time.perf_counter() + timeout_s
    polls = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            if any(proc.poll() is not None for proc in workers.procs):
                raise RuntimeError(f"a worker process died; see {workers.logs}")
            polls += 1
            row = conn.execute(PENDING[workers.kind]).fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter(), polls, conn.info.backend_pid
            time.sleep(0.01)
    raise TimeoutError(f"queue not drained after {timeout_s:.0f} s")


@dataclass
class Drain:
    rate: float  # jobs/s
    server_s: float  # CPU of the server processes serving the workers
    workers_s: float
    xacts: float  # the workers' transactions, start-up and shutdown included (a few dozen)
    connections: int  # server processes that served the workers during the drain
    functions: dict[str, float] = field(default_factory=dict)  # self time s (--functions)


def function_times(url: str) -> dict[str, float]:
    """Self time (s) of each function the drained database tracked, by name."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT schemaname || '.' || funcname, sum(self_time) / 1e3"
            " FROM pg_stat_user_functions GROUP BY 1"
        ).fetchall()
    return {name: float(s) for name, s in rows}


def one_drain(
    kind: str, server: str, template: str, n: int, processes: int, logs: Path, functions: bool
) -> Drain:
    """One drain of a fresh copy of ``template``."""
    name = f"dc_{uuid.uuid4().hex[:8]}"
    url = create_db(server, name, template)
    if functions:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE \"{name}\" SET track_functions = 'all'")
    workers = Workers(kind, url, processes, CONCURRENCY[kind], logs)
    try:
        xacts_before = transactions(server, name)
        workers.start()
        server_before = {pid: cpu_ns(pid) for pid in backends(server, name)}
        workers_before = {p.pid: cpu_ns(p.pid) for p in workers.procs}
        start = time.perf_counter()
        workers.go()
        ended, polls, poller = drained(url, workers, timeout_s=300)
        # connections opened during the drain count whole (they started at 0); the poller's
        # process may still be ending
        serving = [pid for pid in backends(server, name) if pid != poller]
        server_cpu = sum(cpu_ns(pid) - server_before.get(pid, 0) for pid in serving)
        workers_cpu = sum(cpu_ns(p.pid) - workers_before[p.pid] for p in workers.procs)
        workers.stop()
        for _ in range(500):  # a session's counts are flushed when it ends
            if not backends(server, name):
                break
            time.sleep(0.01)
        xacts = transactions(server, name) - xacts_before - polls
        found = function_times(url) if functions else {}
    finally:
        workers.kill()
        drop_db(server, name)
    return Drain(
        n / (ended - start), server_cpu / 1e9, workers_cpu / 1e9, xacts, len(serving), found
    )


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
        "--functions",
        action="store_true",
        help="track_functions in each drained copy: per job, the self time of its "
        "functions that took the most, and the server connections the workers used",
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
    runs: dict[str, list[Drain]] = {kind: [] for kind in args.systems}
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
                    one_drain(
                        kind, server, template, args.jobs, args.processes, logs, args.functions
                    )
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
        rate = statistics.median(r.rate for r in results)
        pg = statistics.median(r.server_s for r in results) / args.jobs * 1e6
        py = statistics.median(r.workers_s for r in results) / args.jobs * 1e6
        xacts = statistics.median(r.xacts for r in results) / args.jobs
        print(f"{kind}:")
        print(f"  server CPU   {pg:7.0f} us per job")
        print(f"  workers CPU  {py:7.0f} us per job")
        print(
            f"  together     {pg + py:7.0f} us: at most {2e6 / (pg + py):,.0f}/s on 2 idle "
            f"cores (measured here: {rate:,.0f}/s at this load)"
        )
        print(f"  transactions {xacts:7.2f} per job (the workers', in the drained database)")
        if args.functions:
            report_functions(results, args.jobs)


def report_functions(results: list[Drain], jobs: int) -> None:
    connections = statistics.median(r.connections for r in results)
    print(f"  server connections serving the workers: {connections:.0f}")
    names = {name for r in results for name in r.functions}
    per_job = {
        name: statistics.median(r.functions.get(name, 0.0) for r in results) / jobs * 1e6
        for name in names
    }
    print("  functions' self time per job (wall, median; track_functions):")
    for name, us in sorted(per_job.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {us:7.1f} us  {name}")


if __name__ == "__main__":
    main()
