"""Safety-layer figures: lock acquisitions/s (acquire + heartbeat start + release, on
distinct assets and on one contended asset) and cancel latency of a running ``sleep 600``.

Runs against ``DATABASE_URL`` when set, else a throw-away embedded PostgreSQL. Printed,
never asserted: machines are noisy. Design targets: > 50 lock acquisitions/s (seed ~500/s).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from opsconductor import logs
from opsconductor.cancellation import request_cancel
from opsconductor.db import assets, connectors, embedded, migrations
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.inventory import Asset
from opsconductor.locking import LeaseHold, LockSettings
from opsconductor.plan import parse_plan
from opsconductor.submission import Request, submit

ASSETS = 200
SETTINGS = LockSettings(ttl_s=30, wait_s=60, poll_s=0.005)


def _database_url() -> str:
    server = os.environ.get("DATABASE_URL") or embedded.start(
        Path(tempfile.mkdtemp(prefix="opsc-bench-")) / "pgdata"
    )
    name = f"opsc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server, dbname=name)


async def _hold(db: Database, asset_id: str, owner: str) -> None:
    async with LeaseHold(
        db, "default", [asset_id], owner=owner, execution_id=None, settings=SETTINGS
    ):
        pass


async def _locks(db: Database, *, contended: bool, n: int) -> float:
    slots = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with slots:
            await _hold(db, "asset-0" if contended else f"asset-{i % ASSETS}", f"bench:{i}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def _cancel_latency(db: Database, runs: int) -> list[float]:
    plan = parse_plan(
        {
            "name": "hang",
            "steps": [
                {
                    "name": "hang",
                    "type": "command",
                    "command": "sleep 600",
                    "timeout_s": 600,
                    "targets": {"hostnames": ["localhost"]},
                }
            ],
        }
    )
    took = []
    for i in range(runs):
        submitted = await submit(db, Request(plan, "default", "bench", f"hang-{i}"))
        execution_id = submitted.execution.id
        running = asyncio.create_task(Engine(db, actor_id="bench").run("default", execution_id))
        await asyncio.sleep(0.5 + 0.07 * i)  # let it start; vary the phase of the checks
        asked = time.perf_counter()
        await request_cancel(db, "default", str(execution_id), "bench")
        await running
        took.append(time.perf_counter() - asked)
    return took


async def main() -> None:
    logs.configure()
    async with Database(_database_url(), min_size=8, max_size=8) as db:
        await migrations.migrate(db)
        async with db.connection() as conn:
            # the cancel benchmark sleeps on localhost: sandboxed local execution (root, bwrap)
            await connectors.set_local_execution(conn, "default", "bench", on=True)
            for i in range(ASSETS):
                await assets.add(
                    conn, "default", Asset(f"asset-{i}", f"asset-{i}", "10.0.0.1", "dev")
                )
        rate = await _locks(db, contended=False, n=2000)
        print(f"{'lock acquire+release, distinct assets, 8 at once':<52} {rate:>9.0f} /s")
        rate = await _locks(db, contended=True, n=500)
        print(f"{'lock acquire+release, one contended asset, 8 at once':<52} {rate:>9.0f} /s")
        took = await _cancel_latency(db, 5)
        print(
            f"{'cancel of a running sleep 600 (request -> cancelled)':<52} "
            f"median {statistics.median(took):.2f} s, max {max(took):.2f} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
