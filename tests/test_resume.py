"""Resuming after a crash takes nothing again for what already finished, and a secret that
disappeared meanwhile ends the execution ``failed`` with the reason (not a retry loop into
the dead-letter queue)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor import secret_store
from opsconductor.db import queue
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import admin
from tests.plans import command_step, plan_of

SECRET = "kv/app/token"
TOKEN = {"TOKEN": {"secret": SECRET}}


async def _fetch(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _wait_for(path: Path, text: str) -> None:
    for _ in range(1500):
        if text in _read(path):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


async def test_secret_deleted_between_crash_and_resume_fails_the_execution(
    db: Database, work_dir: Path, tmp_path: Path
) -> None:
    log, gate = work_dir / "log", work_dir / "gate"
    await secret_store.put(db, tmp_path, "default", SECRET, "s3cr3t-value", "alice")
    plan = plan_of(
        command_step("first", f"echo first >> {log}", action_class="modify", env=TOKEN),
        command_step(
            "wait",
            f"echo wait >> {log}; while [ ! -f {gate} ]; do sleep 0.02; done",
            env=TOKEN,
            timeout_s=60,
        ),
    )
    actor = await admin(db, "tester")
    submitted = await submit(db, Request(plan, "default", actor, uuid.uuid4().hex, enqueue=True))
    execution_id = submitted.execution.id
    (lease,) = await queue.claim(db, "w1", limit=1)
    resolver = SecretResolver(db, tmp_path)
    first = Engine(db, actor_id="w1", secrets=resolver)
    task = asyncio.create_task(first.run("default", execution_id, lease=lease))
    await _wait_for(log, "wait")
    task.cancel()  # the worker dies mid-step (its lease is handed back)
    with pytest.raises(asyncio.CancelledError):
        await task
    await queue.release(db, [lease])

    assert await secret_store.delete(db, "default", SECRET)
    (again,) = await queue.claim(db, "w2", limit=1)
    final = await Engine(db, actor_id="w2", secrets=resolver).run(
        "default", execution_id, lease=again
    )

    assert final is Status.FAILED
    (row,) = await _fetch(
        db, "SELECT status, status_reason FROM execution.executions WHERE id = %s", execution_id
    )
    assert row["status"] == "failed"
    assert SECRET in row["status_reason"] and "not found" in row["status_reason"]
    assert log.read_text().split() == ["first", "wait"]  # nothing ran again
    events = await _fetch(
        db,
        "SELECT event_type, payload FROM execution.execution_events WHERE execution_id = %s "
        "AND event_type IN ('secret_resolved', 'secret_unresolved') ORDER BY id",
        execution_id,
    )
    # step 0 finished before the crash: resumed, it takes no lock and no secret again
    assert [(e["event_type"], e["payload"]["step_index"]) for e in events] == [
        ("secret_resolved", 0),
        ("secret_resolved", 1),
        ("secret_unresolved", 1),
    ]
    assert await _fetch(db, "SELECT 1 FROM execution.execution_dlq") == []
    assert await _fetch(db, "SELECT 1 FROM execution.execution_queue") == []
    attempts = await _fetch(
        db,
        "SELECT step_index, attempt, status FROM execution.execution_steps "
        "WHERE execution_id = %s ORDER BY step_index, attempt",
        execution_id,
    )
    assert [(a["step_index"], a["attempt"], a["status"]) for a in attempts] == [
        (0, 1, "completed"),
        (1, 1, "cancelled"),
        (1, 2, "failed"),
    ]
