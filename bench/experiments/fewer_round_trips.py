"""Experiment (not product code): the same durable writes per execution in ~3 round trips.

Our worker spends about 17.5 database round trips on a one-step execution (21 since the
safety work; see ``bench/RESULTS.md``). This prototype writes exactly the same rows (status
changes with their events, the step attempt with ``step_started``/``step_finished``, the
queue row deleted only under the worker's lease token) in four statements: a batched claim
that also returns the execution, an asset read, one statement that starts the execution and
its step, and one that records the step, ends the execution and completes the lease (nothing
is written when the lease is no longer held). It leaves out the approval re-check (level 0
here), the policy-table read, the heartbeat, the reaper and, since the safety and RBAC work,
the asset lock, the role and masking-pattern reads and the cancellation-check counter: an
upper bound.

It drains the same queued executions with the real ``Worker`` and with the prototype, with
and without the ``sh -c true`` spawn, checks each run like the benchmark does, and prints
throughput and CPU per execution (worker, ``sh`` children, this server's backends).

    python bench/experiments/fewer_round_trips.py [--jobs 1000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import PENDING, check_ours, create_db, fill_ours, with_db

from opsconductor import logs
from opsconductor.connectors import local
from opsconductor.connectors.local import CommandResult, run_command, run_process
from opsconductor.db import embedded
from opsconductor.db.connection import Database
from opsconductor.worker import Worker, WorkerOptions

CONCURRENCY = 8
ACTOR = "bench"

CLAIM = """
WITH picked AS (
    SELECT execution_id FROM execution.execution_queue
    WHERE lease_token IS NULL AND available_at <= now()
    ORDER BY priority, available_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
UPDATE execution.execution_queue q SET
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => q.lease_timeout_s),
    worker_id = %(worker)s, attempt_count = q.attempt_count + 1
FROM picked, execution.executions e
WHERE q.execution_id = picked.execution_id AND e.id = q.execution_id
RETURNING q.execution_id, q.lease_token, e.tenant_id, e.plan_snapshot
"""
ASSETS = "SELECT * FROM execution.assets WHERE tenant_id = %(tenant)s AND asset_id = ANY(%(ids)s)"
START = """
WITH moved AS (
    UPDATE execution.executions SET status = 'running', started_at = coalesce(started_at, now()),
        timeout_at = now() + interval '1 hour', worker_id = %(worker)s
    WHERE id = %(id)s AND status = 'queued' RETURNING id, tenant_id
), changed AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
    SELECT id, tenant_id, 'status_changed', 'queued', 'running', %(actor)s, '{}' FROM moved
), step AS (
    UPDATE execution.execution_steps SET status = 'running', started_at = now()
    WHERE execution_id IN (SELECT id FROM moved) AND step_index = 0
      AND target_asset_id = %(asset)s AND attempt = 1 AND status = 'pending'
    RETURNING id
), started AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, actor_id, payload)
    SELECT id, tenant_id, 'step_started', %(actor)s, %(payload)s FROM moved
)
SELECT (SELECT id FROM step) AS step_id
"""
FINISH = """
WITH done AS (
    DELETE FROM execution.execution_queue
    WHERE execution_id = %(id)s AND lease_token = %(token)s RETURNING execution_id
), step AS (
    UPDATE execution.execution_steps SET status = 'completed', finished_at = now(),
        exit_code = 0, output = '', stderr = ''
    WHERE id = %(step_id)s AND status = 'running' AND EXISTS (SELECT 1 FROM done)
), finished AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, actor_id, payload)
    SELECT execution_id, %(tenant)s, 'step_finished', %(actor)s, %(payload)s FROM done
), skipped AS (
    UPDATE execution.execution_steps SET status = 'skipped', finished_at = now()
    WHERE execution_id IN (SELECT execution_id FROM done) AND status = 'pending'
      AND id <> %(step_id)s
), moved AS (
    UPDATE execution.executions SET status = 'completed', finished_at = now()
    WHERE id IN (SELECT execution_id FROM done) AND status = 'running'
    RETURNING id, tenant_id
), changed AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
    SELECT id, tenant_id, 'status_changed', 'running', 'completed', %(actor)s, '{}' FROM moved
)
SELECT count(*) AS held FROM done
"""


async def no_spawn(*_: Any, **__: Any) -> CommandResult:
    return CommandResult(0, "", "", timed_out=False, cancelled=False, duration_s=0.0)


async def prototype(db: Database, spawn: bool) -> None:
    """Claim in batches up to the free slots, run each execution in 3 round trips."""
    slots = asyncio.Semaphore(CONCURRENCY)
    running: set[asyncio.Task[None]] = set()

    async def one(row: dict[str, Any]) -> None:
        try:
            asset = row["plan_snapshot"]["targets"][0][0]
            where = {"step_index": 0, "step": "noop", "target": asset, "attempt": 1}
            async with db.connection() as conn:
                cur = await conn.execute(ASSETS, {"tenant": row["tenant_id"], "ids": [asset]})
                await cur.fetchall()
                cur = await conn.execute(
                    START,
                    {
                        "worker": "proto",
                        "id": row["execution_id"],
                        "actor": ACTOR,
                        "asset": asset,
                        "payload": Jsonb(where),
                    },
                )
                started = await cur.fetchone()
            assert started is not None
            result = await (run_process if spawn else no_spawn)(
                ["/bin/sh", "-c", "true"], timeout_s=30
            )
            outcome = {**where, "status": "completed", "exit_code": result.exit_code}
            async with db.connection() as conn:
                cur = await conn.execute(
                    FINISH,
                    {
                        "id": row["execution_id"],
                        "token": row["lease_token"],
                        "step_id": started["step_id"],
                        "tenant": row["tenant_id"],
                        "actor": ACTOR,
                        "payload": Jsonb(outcome),
                    },
                )
                held = await cur.fetchone()
            assert held is not None and held["held"] == 1, "lease lost"
        finally:
            slots.release()

    while True:
        await slots.acquire()
        free = 1
        while not slots.locked() and free < CONCURRENCY:
            await slots.acquire()
            free += 1
        async with db.connection() as conn:
            cur = await conn.execute(CLAIM, {"limit": free, "worker": "proto"})
            rows = await cur.fetchall()
        for _ in range(free - len(rows)):
            slots.release()
        if not rows:
            await asyncio.gather(*running)
            return
        for row in rows:
            task = asyncio.create_task(one(row))
            running.add(task)
            task.add_done_callback(running.discard)


def backend_cpu_s(pgdata: Path) -> float:
    """CPU seconds used so far by this server's postmaster and its backends."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(pid) == postmaster or int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


async def drain(server: str, pgdata: Path, kind: str, spawn: bool, n: int) -> str:
    url = create_db(server, "fewer_rt_run", "fewer_rt_tpl")
    async with Database(url, min_size=CONCURRENCY + 3, max_size=CONCURRENCY + 3) as db:
        own, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        backends, started = backend_cpu_s(pgdata), time.perf_counter()
        worker: Worker | None = None
        if kind == "engine":
            # the local connector looks ``run_command`` up in its module at every call
            local.run_command = run_command if spawn else no_spawn  # type: ignore[assignment]
            worker = Worker(db, actor_id=ACTOR, options=WorkerOptions(concurrency=CONCURRENCY))
            task = asyncio.create_task(worker.serve())
        else:
            task = asyncio.create_task(prototype(db, spawn))
        while True:
            async with db.connection() as conn:
                row = await (await conn.execute(PENDING["ours"])).fetchone()
            if row is not None and next(iter(row.values())) == 0:
                break
            await asyncio.sleep(0.01)
        took = time.perf_counter() - started
        worker_ms = (cpu(resource.getrusage(resource.RUSAGE_SELF)) - cpu(own)) / n * 1000
        sh_ms = (cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - cpu(kids)) / n * 1000
        pg_ms = (backend_cpu_s(pgdata) - backends) / n * 1000
        if worker is not None:
            worker.stop()
        await task
    check = check_ours(url, n)
    return (
        f"{kind:<9} {'spawn' if spawn else 'no spawn':<9} {n / took:>6.0f}/s   CPU per "
        f"execution: worker {worker_ms:.2f} ms, sh {sh_ms:.2f} ms, PostgreSQL {pg_ms:.2f} ms, "
        f"total {worker_ms + sh_ms + pg_ms:.2f} ms   ({check})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    logs.configure()
    pgdata = Path(tempfile.mkdtemp(prefix="opsc-fewer-rt-")) / "pgdata"
    server = embedded.start(pgdata)
    create_db(server, "fewer_rt_tpl")
    # command: "true" plans (``ours-sh``): the spawn is what this experiment turns on and off
    asyncio.run(fill_ours(with_db(server, "fewer_rt_tpl"), args.jobs, kind="ours-sh"))
    for _ in range(args.rounds):
        for kind in ("engine", "prototype"):
            for spawn in (False, True):
                print(asyncio.run(drain(server, pgdata, kind, spawn, args.jobs)), flush=True)
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
