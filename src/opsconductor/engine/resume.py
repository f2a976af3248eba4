"""Resuming after a crash (background work only).

A worker died with this execution running. The step records say what happened: a finished
attempt is never run again; an attempt that was in flight is re-run only if its step is
idempotent, otherwise the execution ends failed (reason "interrupted") for a human to look
at, because running a non-idempotent step twice is unsafe.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

from opsconductor import policies
from opsconductor.db import executions, steps
from opsconductor.db.connection import Conn, Database
from opsconductor.engine.state import DONE, INTERRUPTED, ResumePoint, Run
from opsconductor.records import StepAttempt
from opsconductor.status_machine import Status, StepStatus


async def prepare(
    db: Database, run: Run, actor_id: str, worker_id: str | None
) -> tuple[Status, str | None] | None:
    """Fill ``run.resume`` and the deadline; a verdict when the execution must not go on."""
    _deadline(run)
    async with db.transaction() as conn:
        rows = await steps.list_for(conn, run.id)
        in_flight = [row for row in rows if row.status is StepStatus.RUNNING]
        unsafe = [r for r in in_flight if not run.plan.steps[r.step_index].is_idempotent]
        rows = await _close_in_flight(conn, rows, in_flight, rerun=not unsafe)
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
    timeout_at: datetime | None = run.execution.timeout_at
    if timeout_at is None:  # started by an older version that did not set it
        timeout_s = policies.execution_timeout(run.plan, run.execution.sla_class, run.matrix)
        run.deadline = time.monotonic() + timeout_s
        return
    run.deadline = time.monotonic() + (timeout_at - datetime.now(UTC)).total_seconds()


async def _close_in_flight(
    conn: Conn, rows: list[StepAttempt], in_flight: list[StepAttempt], *, rerun: bool
) -> list[StepAttempt]:
    """Record how each cut-short attempt ended, so none stays ``running`` forever; returns
    ``rows`` as they now stand."""
    if not in_flight:
        return rows
    if rerun:
        status = StepStatus.CANCELLED
        error = f"{INTERRUPTED}: its worker stopped; run again (the step is idempotent)"
    else:
        status = StepStatus.FAILED
        error = f"{INTERRUPTED}: its worker stopped; not run again (not idempotent)"
    closed = {row.id for row in in_flight}
    await steps.close_attempts(conn, sorted(closed), status, error)
    return [replace(row, status=status, error=error) if row.id in closed else row for row in rows]


def _where(run: Run, row: StepAttempt) -> str:
    return (
        f"{run.plan.steps[row.step_index].name!r} on {row.target_asset_id} (attempt {row.attempt})"
    )


def _points(run: Run, rows: list[StepAttempt]) -> dict[tuple[int, str], ResumePoint]:
    """From every recorded attempt (closed by ``_close_in_flight``), where each target of
    each step starts again."""
    by_target: dict[tuple[int, str], list[StepAttempt]] = {}
    for row in rows:
        by_target.setdefault((row.step_index, row.target_asset_id), []).append(row)
    points = {}
    for (index, asset_id), attempts in by_target.items():
        latest = max(attempts, key=lambda r: r.attempt)
        interrupted = sum(1 for r in attempts if r.status is StepStatus.CANCELLED)
        last = run.plan.steps[index].retries + 1 + interrupted
        if latest.status is StepStatus.PENDING:
            point = ResumePoint(latest.attempt, None, interrupted)
        elif latest.status in DONE or latest.attempt >= last:
            point = ResumePoint(latest.attempt, latest.status, interrupted)
        else:  # failed with retries left, or cut short and idempotent: the next attempt
            point = ResumePoint(latest.attempt + 1, None, interrupted)
        points[(index, asset_id)] = point
    return points
