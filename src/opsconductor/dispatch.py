"""Hand-off of background executions (SPEC section 4: mode ``background``).

Until the PostgreSQL queue and its worker pool exist, the API process runs background work
itself, in an asyncio task, through the same engine and the same per-step RBAC check as
everything else; the queue replaces the body of ``enqueue_background`` with an enqueue.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import structlog

from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import OpsError

log = structlog.get_logger("opsconductor.dispatch")

#: Strong references: the event loop keeps only weak ones to tasks.
_running: set[asyncio.Task[None]] = set()


async def enqueue_background(db: Database, execution: dict[str, Any]) -> None:
    """Start running an ``approved`` execution without waiting for it."""
    task = asyncio.get_running_loop().create_task(
        _run(db, execution), name=f"execution-{execution['id']}"
    )
    _running.add(task)
    task.add_done_callback(_running.discard)


async def _run(db: Database, execution: dict[str, Any]) -> None:
    engine = Engine(
        db,
        actor_id=str(execution["actor_id"]),
        worker_id=f"api:{os.getpid()}",
        authorize=auth.step_authorizer(db),
    )
    try:
        await engine.run(str(execution["tenant_id"]), execution["id"])
    except OpsError as exc:
        # e.g. cancelled before it started: the compare-and-set refused to run it
        log.info("background execution not run", execution_id=str(execution["id"]), error=str(exc))
    except Exception:
        log.exception("background execution crashed", execution_id=str(execution["id"]))


def in_flight() -> int:
    return len(_running)


async def drain(timeout_s: float = 5.0) -> None:
    """On shutdown: give running work a moment, then cancel it (the engine records the
    execution as cancelled, reason ``interrupted``)."""
    if not _running:
        return
    _done, pending = await asyncio.wait(set(_running), timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
