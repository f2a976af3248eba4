"""The dead-letter queue over HTTP: what ran out of attempts, and putting it back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from opsconductor.api import models
from opsconductor.api.auth import Db, Who
from opsconductor.services import executions

router = APIRouter(prefix="/dlq", tags=["dlq"])


@router.get("", response_model=list[models.DeadLetter], summary="Dead-lettered executions")
async def list_dead_letters(
    db: Db,
    who: Who,
    include_requeued: Annotated[bool, Query(description="Also entries already requeued")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[models.DeadLetter]:
    rows = await executions.dead_letters(db, who, include_requeued=include_requeued, limit=limit)
    return [models.DeadLetter.model_validate(row) for row in rows]


@router.post(
    "/{execution_id}/requeue",
    response_model=models.DeadLetter,
    summary="Queue a dead-lettered execution again with a fresh attempt budget",
)
async def requeue_dead_letter(execution_id: str, db: Db, who: Who) -> models.DeadLetter:
    execution = await executions.requeue(db, who, execution_id)
    rows = await executions.dead_letters(
        db, who, include_requeued=True, limit=1, execution_id=execution.id
    )
    return models.DeadLetter.model_validate(rows[0])
