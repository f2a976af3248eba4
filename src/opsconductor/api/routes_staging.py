"""``/api/v1/tenant/staging``: the tenant's staged enablement (staging.py): what each
approval level may do for real, and the canary share of the eligible executions that do."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from opsconductor.api.auth import Db, Who
from opsconductor.api.inputs import CleanInput
from opsconductor.errors import BadInput
from opsconductor.services import staging as service
from opsconductor.staging import LevelMode, Staging

router = APIRouter(tags=["tenant"])


class StagingOut(BaseModel):
    #: by approval level 0..3: real | record-only | refuse
    level_modes: list[str]
    canary_percent: int


class StagingPatch(CleanInput):
    #: with ``mode``: what executions of this approval level do
    # strict: JSON true is not level 1
    level: int | None = Field(default=None, ge=0, le=3, strict=True)
    mode: Literal["real", "record-only", "refuse"] | None = None
    canary_percent: int | None = Field(default=None, ge=0, le=100, strict=True)


def _out(found: Staging) -> StagingOut:
    return StagingOut(
        level_modes=[m.value for m in found.level_modes], canary_percent=found.canary_percent
    )


@router.get("/tenant/staging", response_model=StagingOut, summary="Staged enablement")
async def get_staging(db: Db, who: Who) -> StagingOut:
    return _out(await service.get(db, who))


@router.patch(
    "/tenant/staging",
    response_model=StagingOut,
    summary="Change staged enablement (tenant admins; audited as staging_changed)",
)
async def patch_staging(body: StagingPatch, db: Db, who: Who) -> StagingOut:
    if (body.level is None) != (body.mode is None):
        raise BadInput("level, mode: give both (which approval level, and what it does)")
    found: Staging | None = None
    if body.level is not None and body.mode is not None:
        found = await service.set_level(db, who, body.level, LevelMode(body.mode))
    if body.canary_percent is not None:
        found = await service.set_canary(db, who, body.canary_percent)
    return _out(found if found is not None else await service.get(db, who))
