"""Schedule use cases: add, list, pause, resume, remove; and the workers' firing round.

Exactly once per slot, across any number of workers and API nodes: a round locks a due
schedule (``FOR UPDATE SKIP LOCKED``: a worker already firing it is left alone), inserts
one ``schedule_fires`` row per slot (its primary key is ``(schedule_id, slot)``), submits
the run with ``db.executions.submit_in`` and moves ``next_fire_at`` on, all in one
transaction: a crash before the commit fires nothing, and the next round fires the slot;
after it, the slot is taken for good. Each run's idempotency key names the slot, too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from opsconductor import jobs, schedule
from opsconductor.db import executions
from opsconductor.db import schedules as rows
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, Conflict, DatabaseError, NotFound, OpsError
from opsconductor.schedule import Fire, Missed, Schedule

__all__ = ["Fire", "Missed", "Schedule"]
from opsconductor.services import jobs as job_service
from opsconductor.services.caller import Caller, delegated

log = structlog.get_logger("opsconductor.schedules")

#: Schedules one round looks at, at most (the next round takes the rest).
ROUND_LIMIT = 100


async def add(
    db: Database,
    who: Caller,
    name: str,
    job_name: str,
    cron: str,
    *,
    timezone: str = "UTC",
    params: Mapping[str, Any] | None = None,
    missed: Missed = Missed.SKIP,
    version: int | None = None,
    follow_latest: bool = False,
) -> Schedule:
    """A schedule firing ``job_name`` as the caller, whose roles are read again at every
    fire. It runs one version: ``version``, or the job's latest now; ``follow_latest``:
    the job's latest at each fire instead (whatever a later saver wrote, as the caller)."""
    from opsconductor.params import bind
    from opsconductor.plan import parse_plan

    who.require("jobs", "save")
    who.require("jobs", "run")
    jobs.check_name(name, "schedule")
    spec = schedule.parse(cron, timezone)
    if follow_latest and version is not None:
        raise BadInput("version: a schedule runs one version or follows the latest, not both")
    given = dict(params or {})
    _, chosen = await job_service.show(db, who, job_name, version)
    bind(parse_plan(chosen.plan).params, given)  # a wrong value is refused now, not at 3 am
    new = Schedule(
        id=uuid.uuid4(),
        tenant_id=who.tenant_id,
        name=name,
        job_name=job_name,
        job_version=None if follow_latest else chosen.version,
        cron=spec.expression,
        timezone=spec.timezone,
        params=given,
        missed=missed,
        paused=False,
        next_fire_at=schedule.next_after(spec, datetime.now(UTC)),
        created_by=who.actor_id,
        created_at=datetime.now(UTC),
    )
    async with db.transaction() as conn:
        stored = await rows.insert(conn, new)
    if stored is None:
        raise Conflict(f"schedule {name!r} already exists")
    return stored


async def list_schedules(db: Database, who: Caller, name: str | None = None) -> list[Schedule]:
    who.require("jobs", "view")
    async with db.connection() as conn:
        found = await rows.list_all(conn, who.tenant_id, name)
    if name is not None and not found:
        raise NotFound(f"schedule {name!r} not found")
    return found


async def pause(db: Database, who: Caller, name: str) -> Schedule:
    return await _set_paused(db, who, name, True)


async def resume(db: Database, who: Caller, name: str) -> Schedule:
    """Resumed from the next slot after now: slots during a pause are not missed ones."""
    return await _set_paused(db, who, name, False)


async def _set_paused(db: Database, who: Caller, name: str, paused: bool) -> Schedule:
    who.require("jobs", "save")
    async with db.transaction() as conn:
        current = await rows.list_all(conn, who.tenant_id, name)
        if not current:
            raise NotFound(f"schedule {name!r} not found")
        upcoming = None if paused else schedule.next_after(current[0].cron_spec, datetime.now(UTC))
        changed = await rows.set_paused(conn, who.tenant_id, name, paused, upcoming)
    assert changed is not None
    return changed


async def remove(db: Database, who: Caller, name: str) -> None:
    who.require("jobs", "save")
    async with db.transaction() as conn:
        if not await rows.delete(conn, who.tenant_id, name):
            raise NotFound(f"schedule {name!r} not found")


async def fires(db: Database, who: Caller, name: str, limit: int = 50) -> list[Fire]:
    who.require("jobs", "view")
    async with db.connection() as conn:
        return await rows.fires(conn, who.tenant_id, name, min(max(limit, 1), 500))


def upcoming(found: Schedule, count: int = 3) -> list[datetime]:
    """The schedule's next fire times (none while paused)."""
    if found.paused:
        return []
    first = found.next_fire_at
    return [first, *schedule.upcoming(found.cron_spec, first, count - 1)] if count else []


# --- the workers' round -----------------------------------------------------------------


async def fire_due(
    db: Database, *, grace_s: float = schedule.DEFAULT_GRACE_S, fired_by: str | None = None
) -> int:
    """Fire every due slot of every due schedule; the number of runs submitted.
    ``fired_by``: the worker's id, recorded with each slot."""
    async with db.connection() as conn:
        due = await rows.due_ids(conn, ROUND_LIMIT)
    submitted = 0
    for schedule_id in due:
        submitted += await _fire(db, schedule_id, grace_s, fired_by)
    return submitted


async def _fire(db: Database, schedule_id: uuid.UUID, grace_s: float, fired_by: str | None) -> int:
    submitted = 0
    async with db.transaction() as conn:
        locked = await rows.lock_due(conn, schedule_id)
        if locked is None:
            return 0  # fired by another worker meanwhile, or being fired now
        found, now = locked
        plan = schedule.due(
            found.cron_spec, found.next_fire_at, now, policy=found.missed, grace_s=grace_s
        )
        if plan.missed:
            log.info(
                "schedule missed slots",
                schedule=found.name,
                tenant_id=found.tenant_id,
                policy=found.missed.value,
            )
        who: Caller | None = None
        for slot in plan.fire:
            if not await rows.claim_slot(conn, found.id, slot.at, slot.catch_up, fired_by):
                continue  # fired already (kept for good once its transaction committed)
            try:
                who = who or await delegated(db, found.tenant_id, found.created_by)
                new = await job_service.prepare_run(
                    db,
                    who,
                    found.job_name,
                    found.params,
                    version=found.job_version,
                    idempotency_key=f"schedule:{found.id}:{slot.at.isoformat()}",
                )
            except DatabaseError:
                raise  # nothing committed: the next round fires this slot
            except OpsError as exc:
                # Refused (RBAC, a parameter a newer version declares, no target...): the
                # slot is spent and says why; the schedule goes on.
                await rows.fire_result(conn, found.id, slot.at, error=str(exc)[:2000])
                log.warning("schedule run refused", schedule=found.name, error=str(exc))
                continue
            done = await executions.submit_in(conn, new)
            await rows.fire_result(conn, found.id, slot.at, execution_id=done.execution.id)
            submitted += 1
        await rows.advance(conn, found.id, plan.next_fire_at)
    return submitted
