"""Resuming after a crash (background work only).

A worker died with this execution running. The step records say what happened: a finished
attempt is never run again; an attempt that was in flight is re-run only if its step is
idempotent, otherwise the execution ends failed (reason "interrupted") for a human to look
at, because running a non-idempotent step twice is unsafe.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from opsconductor import policies
from opsconductor.db import executions, steps
from opsconductor.db.connection import Conn, Database
from opsconductor.engine.state import INTERRUPTED, ResumePoint, Run
from opsconductor.status_machine import Status

Row = dict[str, Any]


async def prepare(
    db: Database, run: Run, actor_id: str, worker_id: str | None
) -> tuple[Status, str | None] | None:
    """Fill ``run.resume`` and the deadline; a verdict when the execution must not go on."""
    _deadline(run)
    async with db.transaction() as conn:
        rows = await steps.list_for(conn, run.id)
        in_flight = [row for row in rows if row["status"] == "running"]
        unsafe = [r for r in in_flight if not run.plan.steps[r["step_index"]].is_idempotent]
        await _close_in_flight(conn, run, in_flight, rerun=not unsafe)
        await executions.append_event(
            conn,
            run.execution,
            "resumed",
            actor_id,
            {
                "worker_id": worker_id,
                "attempt": run.lease.attempt if run.lease else None,
                "in_flight": [_where(run, r) for r in in_flight],
                "rerun": not unsafe,
            },
        )
    if unsafe:
        first = unsafe[0]
        return Status.FAILED, (
            f"{INTERRUPTED}: step {_where(run, first)} was in flight when its worker "
            "stopped and is not idempotent, so it was not run again"
        )
    run.resume = _points(run, rows)
    return None


def _deadline(run: Run) -> None:
    """The execution budget keeps counting from the first start, across workers."""
    timeout_at: datetime | None = run.execution["timeout_at"]
    if timeout_at is None:  # started by an older version that did not set it
        timeout_s = policies.execution_timeout(run.plan, run.execution["sla_class"], run.matrix)
        run.deadline = time.monotonic() + timeout_s
        return
    run.deadline = time.monotonic() + (timeout_at - datetime.now(UTC)).total_seconds()


async def _close_in_flight(conn: Conn, run: Run, in_flight: list[Row], *, rerun: bool) -> None:
    """Record how each cut-short attempt ended, so none stays ``running`` forever."""
    if not in_flight:
        return
    if rerun:
        status = "cancelled"
        error = f"{INTERRUPTED}: its worker stopped; run again (the step is idempotent)"
    else:
        status = "failed"
        error = f"{INTERRUPTED}: its worker stopped; not run again (not idempotent)"
    await steps.close_attempts(conn, [row["id"] for row in in_flight], status, error)
    for row in in_flight:
        row["status"] = status


def _where(run: Run, row: Row) -> str:
    return (
        f"{run.plan.steps[row['step_index']].name!r} on {row['target_asset_id']} "
        f"(attempt {row['attempt']})"
    )


def _points(run: Run, rows: list[Row]) -> dict[tuple[int, str], ResumePoint]:
    """From every recorded attempt (closed by ``_close_in_flight``), where each target of
    each step starts again."""
    by_target: dict[tuple[int, str], list[Row]] = {}
    for row in rows:
        by_target.setdefault((row["step_index"], row["target_asset_id"]), []).append(row)
    points = {}
    for (index, asset_id), attempts in by_target.items():
        latest = max(attempts, key=lambda r: r["attempt"])
        interrupted = sum(1 for r in attempts if r["status"] == "cancelled")
        last = run.plan.steps[index].retries + 1 + interrupted
        if latest["status"] == "pending":
            point = ResumePoint(latest["attempt"], None, interrupted)
        elif latest["status"] in ("completed", "skipped") or latest["attempt"] >= last:
            point = ResumePoint(latest["attempt"], latest["status"], interrupted)
        else:  # failed with retries left, or cut short and idempotent: the next attempt
            point = ResumePoint(latest["attempt"] + 1, None, interrupted)
        points[(index, asset_id)] = point
    return points
