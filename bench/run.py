"""Benchmarks of the durable core, printed as figures (never asserted: machines are noisy).

Runs against ``DATABASE_URL`` when set, else a throw-away embedded PostgreSQL. Figures:
idempotency checks/s (duplicate submissions answered), status transitions with their audit
events/s, and end-to-end in-process executions/s of a one-step no-op plan.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from opsconductor.db import auth, connectors, embedded, executions, migrations
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import parse_plan
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit

PLAN = parse_plan(
    {
        "name": "no-op",
        "steps": [
            {
                "name": "noop",
                "type": "command",
                "command": "true",
                "targets": {"hostnames": ["localhost"]},
            }
        ],
    }
)


def _server() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return embedded.start(Path(tempfile.mkdtemp(prefix="opsc-bench-")) / "pgdata")


def _fresh_database(server: str) -> str:
    name = f"opsc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server, dbname=name)


async def _rate(label: str, count: int, work: Awaitable[None]) -> None:
    started = time.perf_counter()
    await work
    took = time.perf_counter() - started
    print(f"{label:<48} {count / took:>10.0f} /s   ({count} in {took:.2f} s)")


async def _duplicates(db: Database, n: int, concurrency: int) -> None:
    async def one(_: int) -> None:
        await submit(db, Request(PLAN, "default", "bench", "dup-key"))

    await submit(db, Request(PLAN, "default", "bench", "dup-key"))
    await _batched(one, n, concurrency)


async def _transitions(db: Database, ids: list[uuid.UUID], concurrency: int) -> None:
    async def one(i: int) -> None:
        async with db.connection() as conn:
            await executions.transition(
                conn, ids[i], Status.APPROVED, Status.CANCELLED, actor_id="bench"
            )

    await _batched(one, len(ids), concurrency)


async def _end_to_end(db: Database, n: int, concurrency: int) -> None:
    engine = Engine(db, actor_id="bench")

    async def one(i: int) -> None:
        submitted = await submit(db, Request(PLAN, "default", "bench", f"e2e-{i}"))
        status = await engine.run("default", submitted.execution.id)
        assert status is Status.COMPLETED, f"execution {submitted.execution.id}: {status}"

    await _batched(one, n, concurrency)


async def _batched(fn: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with slots:
            await fn(i)

    await asyncio.gather(*(guarded(i) for i in range(n)))


async def main() -> None:
    url = _fresh_database(_server())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    async with Database(url, min_size=8, max_size=8) as db:
        await migrations.migrate(db)
        async with db.transaction() as conn:  # as `opsc run` does: else RBAC denies every step
            await auth.ensure_local_admin(conn, "default", "bench")
            # its plan runs `true` on localhost: sandboxed local execution (root, bwrap)
            await connectors.set_local_execution(conn, "default", "bench", on=True)
        async with db.connection() as conn:
            cur = await conn.execute("SHOW server_version")
            row = await cur.fetchone()
        print(f"PostgreSQL {row['server_version'] if row else '?'}\n")
        await _rate("idempotency checks (duplicate submissions)", 2000, _duplicates(db, 2000, 8))
        ids = [
            uuid.UUID(
                str((await submit(db, Request(PLAN, "default", "bench", f"t{i}"))).execution.id)
            )
            for i in range(2000)
        ]
        await _rate("status transitions + audit event", len(ids), _transitions(db, ids, 8))
        await _rate("end-to-end executions (submit + run `true`)", 300, _end_to_end(db, 300, 8))


if __name__ == "__main__":
    asyncio.run(main())
