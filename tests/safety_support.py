"""Helpers shared by the safety tests: run plans in-process, inspect the process table."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

from opsconductor.db import executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.locking import LockSettings
from opsconductor.plan import Plan
from opsconductor.records import Execution, StepAttempt
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import admin


async def submit_plan(db: Database, plan: Plan, actor: str = "alice") -> uuid.UUID:
    await admin(db, actor)
    submitted = await submit(db, Request(plan, "default", actor, uuid.uuid4().hex))
    return uuid.UUID(str(submitted.execution.id))


def engine(db: Database, worker: str, **lock: float) -> Engine:
    return Engine(db, actor_id="worker", worker_id=worker, lock_settings=LockSettings(**lock))


async def state(db: Database, execution_id: uuid.UUID) -> tuple[Execution, list[StepAttempt]]:
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution_id))
        return row, await steps.list_for(conn, execution_id)


async def lock_rows(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT * FROM execution.execution_locks ORDER BY asset_id")
        return await cur.fetchall()


def read_if_written(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path, within_s: float = 30.0) -> str:
    """Wait (generously) until a step has written ``path``; return its text."""
    for _ in range(int(within_s / 0.05)):
        text = await asyncio.to_thread(read_if_written, path)
        if text:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def sandbox_of(marker: str) -> str:
    """The PID namespace of the running local step whose command line mentions ``marker``
    (local steps run in a sandbox with a PID namespace of its own)."""
    ours = os.readlink("/proc/self/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            namespace = os.readlink(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        if marker.encode() in cmdline and namespace != ours:
            return namespace
    raise AssertionError(f"no sandboxed process mentions {marker}")


def live_in(namespace: str) -> list[int]:
    """Processes of a PID namespace (a step's sandbox) that are still alive."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2 :].split()[0] != "Z":
            alive.append(int(entry))
    return alive


async def sandbox_gone(namespace: str, within_s: float = 30.0) -> bool:
    """Wait (generously) until no process of the sandbox is left."""
    for _ in range(int(within_s / 0.05)):
        if not live_in(namespace):
            return True
        await asyncio.sleep(0.05)
    return False


FINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMEOUT, Status.PARTIAL)
