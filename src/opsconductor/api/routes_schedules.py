"""``/api/v1/schedules``: cron schedules of jobs (services/schedules.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from opsconductor.api.auth import Db, Who
from opsconductor.api.job_models import FireOut, ScheduleIn, ScheduleOut
from opsconductor.schedule import Missed
from opsconductor.services import schedules

router = APIRouter(prefix="/schedules", tags=["schedules"])

Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


def _out(found: schedules.Schedule) -> ScheduleOut:
    return ScheduleOut.of(found, schedules.upcoming(found))


@router.post("", status_code=201, response_model=ScheduleOut, summary="Schedule a job")
async def add_schedule(body: ScheduleIn, db: Db, who: Who) -> ScheduleOut:
    """Fires one version of the job (``version``, else its latest now; or, with
    ``follow_latest``, its latest at each fire) as the caller (roles read at each fire);
    409 if the name is taken."""
    found = await schedules.add(
        db,
        who,
        body.name,
        body.job,
        body.cron,
        timezone=body.timezone,
        params=body.params,
        missed=Missed(body.missed),
        version=body.version,
        follow_latest=body.follow_latest,
    )
    return _out(found)


@router.get("", response_model=list[ScheduleOut], summary="Schedules and their next fires")
async def list_schedules(db: Db, who: Who) -> list[ScheduleOut]:
    return [_out(s) for s in await schedules.list_schedules(db, who)]


@router.get("/{name}", response_model=ScheduleOut, summary="One schedule")
async def show_schedule(name: Name, db: Db, who: Who) -> ScheduleOut:
    return _out((await schedules.list_schedules(db, who, name))[0])


@router.get("/{name}/fires", response_model=list[FireOut], summary="Slots it fired")
async def schedule_fires(
    name: Name, db: Db, who: Who, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[FireOut]:
    found = await schedules.fires(db, who, name, limit)
    return [FireOut.model_validate(f, from_attributes=True) for f in found]


@router.post("/{name}/pause", response_model=ScheduleOut, summary="Pause")
async def pause_schedule(name: Name, db: Db, who: Who) -> ScheduleOut:
    return _out(await schedules.pause(db, who, name))


@router.post("/{name}/resume", response_model=ScheduleOut, summary="Resume from the next slot")
async def resume_schedule(name: Name, db: Db, who: Who) -> ScheduleOut:
    return _out(await schedules.resume(db, who, name))


@router.delete("/{name}", status_code=204, summary="Remove a schedule")
async def remove_schedule(name: Name, db: Db, who: Who) -> Response:
    await schedules.remove(db, who, name)
    return Response(status_code=204)
