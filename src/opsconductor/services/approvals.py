"""The approvals inbox: what waits for a decision in the caller's tenant, each with its
plan laid out for review (plan_review.py) and what changed since the last run of the same
job (a job run: the version before, or different params, is what an approver weighs), else
the last execution of the same plan name. Deciding stays in executions.decide (the one gate)."""

from __future__ import annotations

from dataclasses import dataclass

from opsconductor import plan_review
from opsconductor.db import approval_requests, reads
from opsconductor.db.connection import Conn, Database
from opsconductor.records import ApprovalRequest, Execution
from opsconductor.services.caller import Caller

#: Most approvals the inbox lists (soonest to expire first).
LIMIT = 100


@dataclass(frozen=True)
class Waiting:
    approval: ApprovalRequest
    execution: Execution
    steps: list[plan_review.ReviewStep]
    #: the newest earlier run of the same job, else of the same plan name, if any
    previous: Execution | None
    #: what changed since ``previous`` (empty: the same plan); None without one
    diff: list[plan_review.DiffLine] | None
    #: which of the two ``previous`` is; None without one
    basis: plan_review.Basis | None = None


async def _previous(
    conn: Conn, execution: Execution
) -> tuple[Execution | None, plan_review.Basis | None]:
    """The run to compare with: the same job's last, else the same plan name's last."""
    before = await reads.previous_job_run(conn, execution)
    if before is not None:
        return before, plan_review.Basis.JOB
    before = await reads.previous_run(conn, execution)
    return before, None if before is None else plan_review.Basis.PLAN_NAME


async def inbox(db: Database, who: Caller, limit: int = LIMIT) -> list[Waiting]:
    """Open approvals of the caller's tenant (``executions:view``: approvers and watchers
    alike see the queue; deciding checks ``executions:approve``)."""
    who.require("executions", "view")
    async with db.connection() as conn:
        open_ = await approval_requests.waiting(conn, who.tenant_id, limit)
        found = await reads.executions_by_id(
            conn, who.tenant_id, sorted({a.execution_id for a in open_})
        )
        previous = {e.id: await _previous(conn, e) for e in found.values()}
    items = []
    for approval in open_:
        execution = found.get(approval.execution_id)
        if execution is None:
            continue
        before, basis = previous[execution.id]
        diff = None
        if before is not None:
            diff = plan_review.diff(
                plan_review.lines(before.plan_snapshot), plan_review.lines(execution.plan_snapshot)
            )
        items.append(
            Waiting(
                approval,
                execution,
                plan_review.steps(execution.plan_snapshot),
                before,
                diff,
                basis,
            )
        )
    return items
