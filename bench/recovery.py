"""Crash recovery, measured with real ``opsc worker`` processes (figures, never asserted).

1. kill -> resumed: a step is running on one of 3 workers; that worker is SIGKILLed; the
   time until the step runs again on another worker (the step writes its own start time).
   p50 / p99 / max over ``--trials`` kills. Goal: p99 under 5 s.
2. a storm, the issue's operator's bad day: ``--storm-executions`` two-step plans on 16
   assets, 4 workers at ``--concurrency 8``, one SIGKILLed every 1-3 s for ``--storm-s``
   seconds and restarted; then the outcome counts, non-idempotent steps started twice
   (from the steps' own writes), the drain time after the storm, and kill -> resumed of
   every execution the kills hit (from the kill times and the ``resumed`` events).

Runs against ``DATABASE_URL`` when set, else a throw-away embedded PostgreSQL. Local steps
run sandboxed: needs root and bubblewrap, like the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from opsconductor.db import assets, auth, connectors, embedded, migrations
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.plan import Plan, parse_plan
from opsconductor.submission import Request, submit

ACTOR = "bench"
ASSETS = 16


def _server() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return embedded.start(Path(tempfile.mkdtemp(prefix="opsc-bench-")) / "pgdata")


def _fresh_database(server: str) -> str:
    name = f"opsc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server, dbname=name)


async def _prepare(url: str) -> None:
    async with Database(url, max_size=1) as db:
        await migrations.migrate(db)
        async with db.transaction() as conn:
            await auth.ensure_local_admin(conn, "default", ACTOR)
            await connectors.set_local_execution(conn, "default", ACTOR, on=True)
            for i in range(ASSETS):
                name = f"node-{i:02d}"
                await assets.add(conn, "default", Asset(name, name, "127.0.0.1", "bench"))


async def _submit(url: str, plans: list[Plan]) -> list[str]:
    async with Database(url, max_size=4) as db:
        ids = []
        for plan in plans:
            done = await submit(db, Request(plan, "default", ACTOR, enqueue=True))
            ids.append(str(done.execution["id"]))
        return ids


def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


class Pool:
    def __init__(self, url: str, root: Path, concurrency: int) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OPSC_")}
        self.env.update(
            DATABASE_URL=url,
            OPSC_HOME=str(root / "home"),
            OPSC_WORK_ROOT=str(root / "work"),
            OPSC_FILES_ROOT=str(root / "files"),
        )
        self.root = root
        self.concurrency = concurrency
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.root / f"worker-{len(self.procs)}.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opsconductor.cli",
                "worker",
                "--concurrency",
                str(self.concurrency),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def by_pid(self, pid: int) -> subprocess.Popen[bytes] | None:
        return next((p for p in self.procs if p.pid == pid and p.poll() is None), None)

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc in self.live():
            proc.kill()
            proc.wait()


def _wait(check: Any, timeout_s: float) -> bool:
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if check():
            return True
        time.sleep(0.02)
    return False


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def kill_to_resumed(url: str, root: Path, trials: int) -> list[float]:
    work = root / "work" / "default"
    work.mkdir(parents=True, exist_ok=True)
    pool = Pool(url, root, concurrency=4)
    for _ in range(3):
        pool.start()
    gaps: list[float] = []
    try:
        for trial in range(trials):
            log, marker = work / f"trial-{trial}.log", work / f"trial-{trial}.marker"
            command = f"date +%s.%N >> {log}; [ -f {marker} ] || {{ touch {marker}; sleep 300; }}"
            plan = parse_plan(
                {
                    "name": f"recovery trial {trial}",
                    "timeout_s": 600,
                    "steps": [
                        {
                            "name": "hang",
                            "type": "command",
                            "action_class": "read",  # idempotent: run again on resume
                            "command": command,
                            "targets": {"hostnames": [f"node-{trial % ASSETS:02d}"]},
                        }
                    ],
                }
            )
            (execution_id,) = asyncio.run(_submit(url, [plan]))
            if not _wait(lambda log=log: log.exists() and log.read_text().strip(), 120):
                raise RuntimeError(f"trial {trial}: the step never started; see {root}")
            ((worker_id,),) = _query(
                url, "SELECT worker_id FROM execution.executions WHERE id = %s", execution_id
            )
            victim = pool.by_pid(int(str(worker_id).split(":")[1]))
            assert victim is not None, worker_id
            killed = time.time()
            victim.kill()
            victim.wait()
            if not _wait(lambda log=log: len(log.read_text().split()) >= 2, 120):
                raise RuntimeError(f"trial {trial}: never resumed; see {root}")
            gaps.append(float(log.read_text().split()[1]) - killed)
            pool.start()  # back to 3
            time.sleep(0.5)  # let the new one connect: kills land on settled workers
    finally:
        pool.stop()
    return gaps


def _storm_plan(i: int, work: Path) -> Plan:
    host = {"hostnames": [f"node-{i % ASSETS:02d}"]}
    log = work / "storm.log"
    return parse_plan(
        {
            "name": f"storm {i}",
            "steps": [
                {
                    "name": "probe",
                    "type": "command",
                    "action_class": "read",
                    "command": f'echo "probe $OPSC_EXECUTION_ID" >> {log}; sleep 0.3',
                    "targets": host,
                },
                {
                    "name": "apply",
                    "type": "command",
                    "action_class": "modify",
                    "command": f'echo "start $OPSC_EXECUTION_ID" >> {log}; sleep 0.5',
                    "targets": host,
                },
            ],
        }
    )


def storm(url: str, root: Path, executions: int, storm_s: float) -> dict[str, Any]:
    work = root / "work" / "default"
    work.mkdir(parents=True, exist_ok=True)
    ids = asyncio.run(_submit(url, [_storm_plan(i, work) for i in range(executions)]))
    pool = Pool(url, root, concurrency=8)
    slots = [pool.start() for _ in range(4)]
    rng = random.Random(15)
    kills: dict[int, float] = {}
    started = time.monotonic()
    try:
        while time.monotonic() - started < storm_s:
            time.sleep(rng.uniform(1.0, 3.0))
            victim = rng.randrange(len(slots))
            kills[slots[victim].pid] = time.time()
            slots[victim].send_signal(signal.SIGKILL)
            slots[victim].wait()
            slots[victim] = pool.start()
        storm_over = time.monotonic()
        terminal = ("completed", "failed", "cancelled", "timeout", "partial")

        def drained() -> bool:
            ((n,),) = _query(
                url,
                "SELECT count(*) FROM execution.executions "
                "WHERE status::text = ANY(%s) AND id = ANY(%s::uuid[])",
                list(terminal),
                ids,
            )
            return int(n) == executions

        _wait(drained, 600)
        drain_s = time.monotonic() - storm_over
    finally:
        pool.stop()
    outcome = dict(
        _query(
            url,
            "SELECT status::text, count(*) FROM execution.executions "
            "WHERE id = ANY(%s::uuid[]) GROUP BY 1",
            ids,
        )
    )
    reasons = [
        r
        for (r,) in _query(
            url, "SELECT status_reason FROM execution.executions WHERE id = ANY(%s::uuid[])", ids
        )
        if r
    ]
    lines = (work / "storm.log").read_text().split("\n")
    starts = Counter(line.split()[1] for line in lines if line.startswith("start "))
    # kill -> resumed for each execution a kill hit: the kill of the worker named in its
    # retry_scheduled event, to its next resumed event
    rows = _query(
        url,
        "SELECT r.execution_id, r.payload->>'error', extract(epoch FROM ("
        "  SELECT min(v.created_at) FROM execution.execution_events v"
        "  WHERE v.execution_id = r.execution_id AND v.event_type = 'resumed'"
        "    AND v.id > r.id))::float8 "
        "FROM execution.execution_events r "
        "WHERE r.event_type = 'retry_scheduled' AND r.payload->>'cause' = 'worker crash' "
        "AND r.execution_id = ANY(%s::uuid[])",
        ids,
    )
    gaps = []
    for _, error, resumed_at in rows:
        pid = int(str(error).split()[1].split(":")[1])
        if pid in kills and resumed_at is not None:
            gaps.append(resumed_at - kills[pid])
    return {
        "executions": len(ids),
        "kills": len(kills),
        "outcome": outcome,
        "timeout": outcome.get("timeout", 0),
        "asset_locked": sum("asset_locked" in r for r in reasons),
        "interrupted (not idempotent, left for a person)": sum(
            r.startswith("interrupted:") for r in reasons
        ),
        "resumed after a crash": sum("worker crash" in r for r in reasons),
        "dead-lettered": _query(url, "SELECT count(*) FROM execution.execution_dlq")[0][0],
        "non-idempotent steps started twice": sum(1 for n in starts.values() if n > 1),
        "drained after the storm (s)": round(drain_s, 1),
        "kill -> resumed in the storm": gaps,
    }


def _figures(label: str, gaps: list[float]) -> str:
    if not gaps:
        return f"{label}: no samples"
    return (
        f"{label}: n={len(gaps)} p50 {_pct(gaps, 0.5):.2f} s, p99 {_pct(gaps, 0.99):.2f} s, "
        f"max {max(gaps):.2f} s, mean {statistics.mean(gaps):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--storm-executions", type=int, default=600)
    parser.add_argument("--storm-s", type=float, default=60.0)
    args = parser.parse_args()
    url = _fresh_database(_server())
    asyncio.run(_prepare(url))
    root = Path(tempfile.mkdtemp(prefix="opsc-bench-recovery-"))
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    gaps = kill_to_resumed(url, root / "trials", args.trials)
    print(_figures("kill -> resumed (3 workers, one killed mid-step)", gaps))
    if args.storm_executions:
        result = storm(url, root / "storm", args.storm_executions, args.storm_s)
        storm_gaps = result.pop("kill -> resumed in the storm")
        for key, value in result.items():
            print(f"storm: {key}: {value}")
        print(_figures("storm: kill -> resumed", storm_gaps))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
