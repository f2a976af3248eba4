"""``/api/v1/approvals``: the approvals inbox (deciding is POST /executions/{id}/approve)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from opsconductor import plan_review
from opsconductor.api import models
from opsconductor.api.auth import Db, Who
from opsconductor.services import approvals

router = APIRouter(prefix="/approvals", tags=["approvals"])


def _diff(lines: list[plan_review.DiffLine]) -> list[models.DiffLine]:
    return [models.DiffLine(op=d.op, text=d.text) for d in lines]


@router.get(
    "",
    response_model=list[models.WaitingApproval],
    summary="Open approvals, soonest to expire first, with the plan laid out for review",
)
async def list_waiting(db: Db, who: Who) -> list[models.WaitingApproval]:
    found = await approvals.inbox(db, who)
    now = datetime.now(UTC)
    return [
        models.WaitingApproval(
            approval=models.Approval.from_record(w.approval),
            execution=models.Execution.from_record(w.execution),
            steps=[
                models.ReviewStep(
                    index=s.index,
                    name=s.name,
                    type=s.type,
                    action_class=s.action_class,
                    targets=list(s.targets),
                    work=list(s.work),
                    settings=list(s.settings),
                )
                for s in w.steps
            ],
            params=w.execution.plan_snapshot.get("params") or {},
            previous=models.Execution.from_record(w.previous) if w.previous else None,
            diff=None
            if w.diff is None
            else [models.DiffLine(op=d.op, text=d.text) for d in w.diff],
            now=now,
            compared_with=None if w.basis is None else w.basis.value,
        )
        for w in found
    ]
