"""Server CPU of a connection's first calls of the drain's batch statements, and of later ones.

Each server process plans the statements of the functions it calls (cached for the
connection, generically: migration 0033) and fills its own catalog caches. A worker's pool
opens connections as its batches need them, and each pays that once: a fixed cost per
connection, which a short drain (``bench/drain_cost.py``, ``bench/throughput.py``) feels per
job and a long-lived worker does not. This calls each batch function with no items (nothing
claimed, started or ended: their statement-level triggers still fire) on fresh connections
to a migrated database and reads the server process's CPU (``/proc/<pid>/schedstat``;
the server must run on this machine: ``DATABASE_URL``, else a throw-away embedded server).

    python bench/first_calls.py [--connections N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from drain_cost import cpu_ns
from throughput import SETUP, create_db, drop_db, server_url

#: The batch functions a drained execution goes through, in the order a worker calls them.
CALLS = {
    "claim_batch": "SELECT * FROM execution.claim_batch('bench:first', 20, 30, 'bench')",
    "start_attempt_batch": "SELECT * FROM execution.start_attempt_batch('[]'::jsonb)",
    "end_run_batch": "SELECT * FROM execution.end_run_batch('[]'::jsonb)",
}


def one_connection(url: str) -> dict[str, tuple[float, float]]:
    """(first, second) call's server CPU in ms, per function, on one fresh connection; under
    "connect", the server process's start to its first answer (SELECT 1), and a later one."""
    found: dict[str, tuple[float, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT 1").fetchall()
        started = cpu_ns(pid)
        conn.execute("SELECT 1").fetchall()
        found["connect"] = (started / 1e6, (cpu_ns(pid) - started) / 1e6)
        for name, sql in CALLS.items():
            before = cpu_ns(pid)
            conn.execute(sql).fetchall()
            between = cpu_ns(pid)
            conn.execute(sql).fetchall()
            found[name] = ((between - before) / 1e6, (cpu_ns(pid) - between) / 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args()
    server = server_url()
    name = f"fc_{uuid.uuid4().hex[:8]}"
    url = create_db(server, name)
    try:
        asyncio.run(SETUP["ours"](url))
        runs = [one_connection(url) for _ in range(args.connections)]
    finally:
        drop_db(server, name)
    load = os.getloadavg()
    print(f"server CPU per call, median of {args.connections} fresh connections (ms)")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"  {'':22} {'first':>7} {'second':>7}")
    total = 0.0
    for key in ["connect", *CALLS]:
        first = statistics.median(r[key][0] for r in runs)
        second = statistics.median(r[key][1] for r in runs)
        total += first
        print(f"  {key:22} {first:7.1f} {second:7.1f}")
    print(f"  {'a connection, in all':22} {total:7.1f}")


if __name__ == "__main__":
    main()
