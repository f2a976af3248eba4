"""Cron schedules: which slots are due, which were missed, when the next one is. Pure.

An expression has five fields (minute hour day month weekday) or six, the sixth being
seconds (``* * * * * */5``: every five seconds), read in an IANA time zone
(``Europe/Paris``; daylight saving handled by ``croniter`` over ``zoneinfo``). Slots are
instants; they are stored in UTC.

A slot is *on time* while it is at most ``grace_s`` late, and fired then; later than
that it was *missed* (the workers were down). Missed slots follow the schedule's policy:
``skip`` fires none of them, ``run_once`` fires one run standing for all of them (at the
latest missed slot). Either way the schedule then continues with the next future slot.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opsconductor.errors import BadInput
from opsconductor.records import row_values

#: On-time slots fired in one round at most (a six-field cron far behind catches up over
#: a few rounds rather than in one huge transaction).
MAX_SLOTS_PER_ROUND = 100
#: Default lateness after which a slot counts as missed.
DEFAULT_GRACE_S = 60.0


class Missed(StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


@dataclass(frozen=True)
class Cron:
    expression: str
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse(expression: str, timezone: str = "UTC") -> Cron:
    """A checked cron expression and zone; ``BadInput`` naming the field at fault."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise BadInput(
            f"cron: {expression!r} has {len(fields)} fields; give 5 (minute hour day month "
            "weekday) or 6 (the sixth is seconds)"
        )
    from croniter import croniter  # on first use: opsc --help need not load it

    if not croniter.is_valid(" ".join(fields)):
        raise BadInput(f"cron: {expression!r} is not a valid cron expression")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"timezone: {timezone!r} is not an IANA time zone (e.g. Europe/Paris)"
        ) from None
    return Cron(" ".join(fields), timezone)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: schedules work in aware instants")
    return at.astimezone(UTC)


def next_after(cron: Cron, after: datetime) -> datetime:
    """The first slot strictly after ``after``."""
    from croniter import croniter

    found: datetime = croniter(cron.expression, after.astimezone(cron.zone)).get_next(datetime)
    return _utc(found)


def _last_before(cron: Cron, before: datetime) -> datetime:
    """The last slot strictly before ``before``."""
    from croniter import croniter

    found: datetime = croniter(cron.expression, before.astimezone(cron.zone)).get_prev(datetime)
    return _utc(found)


def upcoming(cron: Cron, after: datetime, count: int) -> list[datetime]:
    slots: list[datetime] = []
    at = after
    for _ in range(count):
        at = next_after(cron, at)
        slots.append(at)
    return slots


@dataclass(frozen=True)
class Slot:
    at: datetime
    #: a ``run_once`` run standing for every slot missed since the last fire
    catch_up: bool = False


@dataclass(frozen=True)
class Due:
    """What one round does with a schedule: the slots to fire, whether slots were missed
    (and left unfired by ``skip``), and the schedule's next slot afterwards."""

    fire: list[Slot]
    missed: bool
    next_fire_at: datetime


def due(
    cron: Cron,
    next_fire_at: datetime,
    now: datetime,
    *,
    policy: Missed,
    grace_s: float = DEFAULT_GRACE_S,
) -> Due:
    """Slots due at ``now`` for a schedule whose first unfired slot is ``next_fire_at``."""
    next_fire_at, now = _utc(next_fire_at), _utc(now)
    if next_fire_at > now:
        return Due([], False, next_fire_at)
    cutoff = now - timedelta(seconds=grace_s)
    fire: list[Slot] = []
    missed = next_fire_at < cutoff
    if missed:
        if policy is Missed.RUN_ONCE:
            # never before the first unfired slot (croniter rounds sub-second instants)
            latest = max(_last_before(cron, cutoff), next_fire_at)
            fire.append(Slot(latest, catch_up=True))
        # the first on-time slot: at or after the cutoff
        at = next_after(cron, cutoff - timedelta(microseconds=1))
    else:
        at = next_fire_at
    while at <= now:
        if len(fire) >= MAX_SLOTS_PER_ROUND:
            return Due(fire, missed, at)  # the rest next round
        fire.append(Slot(at))
        at = next_after(cron, at)
    return Due(fire, missed, at)


@dataclass(frozen=True)
class Schedule:
    """One ``execution.schedules`` row, with its last fire when read for a listing."""

    id: uuid.UUID
    tenant_id: str
    name: str
    job_name: str
    cron: str
    timezone: str
    params: dict[str, Any]
    missed: Missed
    paused: bool
    next_fire_at: datetime
    created_by: str
    created_at: datetime
    #: the version it runs; None: the job's latest at each fire
    job_version: int | None = None
    last_slot: datetime | None = None
    last_execution_id: uuid.UUID | None = None
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "schedules", {"missed": Missed}))

    @property
    def cron_spec(self) -> Cron:
        return Cron(self.cron, self.timezone)


@dataclass(frozen=True)
class Fire:
    """One ``execution.schedule_fires`` row: a slot fired, and what it started."""

    schedule_id: uuid.UUID
    slot: datetime
    catch_up: bool
    execution_id: uuid.UUID | None
    error: str | None
    fired_at: datetime
    fired_by: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "schedule_fires"))
