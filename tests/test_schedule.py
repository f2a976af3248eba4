"""Cron schedules, pure: parsing, time zones, due slots and the missed-slot policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsconductor import schedule
from opsconductor.errors import BadInput
from opsconductor.schedule import Missed, Slot

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def test_parse_names_the_field_at_fault() -> None:
    with pytest.raises(BadInput, match=r"cron: .* has 3 fields"):
        schedule.parse("* * *")
    with pytest.raises(BadInput, match="cron: '61 \\* \\* \\* \\*' is not a valid"):
        schedule.parse("61 * * * *")
    with pytest.raises(BadInput, match="timezone: 'Mars/Olympus'"):
        schedule.parse("0 9 * * *", "Mars/Olympus")
    with pytest.raises(BadInput, match="7 fields"):
        schedule.parse("* * * * * * 2026")
    assert schedule.parse("  0  9 * * 1-5 ", "Europe/Paris").expression == "0 9 * * 1-5"


def test_slots_follow_the_time_zone_across_daylight_saving() -> None:
    cron = schedule.parse("0 9 * * *", "Europe/Paris")
    before = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    winter, summer = schedule.upcoming(cron, before, 2)
    assert winter == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert summer == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert schedule.next_after(cron, datetime(2026, 1, 10, tzinfo=UTC)).hour == 8  # CET


def test_six_fields_are_seconds() -> None:
    cron = schedule.parse("* * * * * */2")
    assert schedule.upcoming(cron, T0, 3) == [T0 + timedelta(seconds=s) for s in (2, 4, 6)]


def test_nothing_is_due_before_the_slot() -> None:
    cron = schedule.parse("* * * * * *")
    found = schedule.due(cron, T0 + timedelta(seconds=1), T0, policy=Missed.SKIP)
    assert found.fire == [] and found.next_fire_at == T0 + timedelta(seconds=1)


def test_on_time_slots_fire_each_once_in_order() -> None:
    cron = schedule.parse("* * * * * *")
    now = T0 + timedelta(seconds=2, milliseconds=400)
    found = schedule.due(cron, T0, now, policy=Missed.SKIP, grace_s=60)
    assert found.fire == [Slot(T0 + timedelta(seconds=s)) for s in range(3)]
    assert not found.missed and found.next_fire_at == T0 + timedelta(seconds=3)


def test_skip_fires_nothing_for_missed_slots() -> None:
    cron = schedule.parse("*/5 * * * *")  # every five minutes
    now = T0 + timedelta(hours=3, minutes=2)
    found = schedule.due(cron, T0, now, policy=Missed.SKIP, grace_s=60)
    assert found.missed and found.fire == []
    assert found.next_fire_at == T0 + timedelta(hours=3, minutes=5)


def test_run_once_fires_one_run_for_all_missed_slots() -> None:
    cron = schedule.parse("*/5 * * * *")
    now = T0 + timedelta(hours=3, minutes=2)
    found = schedule.due(cron, T0, now, policy=Missed.RUN_ONCE, grace_s=60)
    assert found.fire == [Slot(T0 + timedelta(hours=3), catch_up=True)]
    assert found.next_fire_at == T0 + timedelta(hours=3, minutes=5)


def test_a_slot_within_the_grace_still_fires_after_a_catch_up() -> None:
    cron = schedule.parse("* * * * * *")
    now = T0 + timedelta(seconds=100)
    found = schedule.due(cron, T0, now, policy=Missed.RUN_ONCE, grace_s=2)
    assert found.fire[0] == Slot(T0 + timedelta(seconds=97), catch_up=True)
    assert [s.at for s in found.fire[1:]] == [T0 + timedelta(seconds=s) for s in (98, 99, 100)]
    assert found.next_fire_at == T0 + timedelta(seconds=101)


def test_a_round_fires_a_bounded_number_of_slots() -> None:
    cron = schedule.parse("* * * * * *")
    now = T0 + timedelta(seconds=1000)
    found = schedule.due(cron, T0, now, policy=Missed.SKIP, grace_s=10_000)
    assert len(found.fire) == schedule.MAX_SLOTS_PER_ROUND
    assert found.next_fire_at == T0 + timedelta(seconds=schedule.MAX_SLOTS_PER_ROUND)
