"""Staged enablement, the pure rules (staging.py): per-level modes and the canary share."""

from __future__ import annotations

import uuid

import pytest

from opsconductor.errors import BadInput
from opsconductor.staging import (
    LevelMode,
    StagedRefusal,
    Staging,
    canary_slot,
    decide,
    parse_mode,
)


def test_everything_runs_for_real_by_default() -> None:
    for level in (0, 1, 2, 3):
        assert decide(Staging(), "t", level, uuid.uuid4()).record_only is False
    assert not Staging().staged


def test_a_level_forced_record_only_says_why_and_others_are_untouched() -> None:
    staged = Staging().with_level(2, LevelMode.RECORD_ONLY)
    found = decide(staged, "acme", 2, uuid.uuid4())
    assert found.record_only
    assert found.reason == "record-only: level 2 not enabled for real in tenant acme"
    assert decide(staged, "acme", 1, uuid.uuid4()).record_only is False


def test_a_refused_level_names_the_level_and_the_tenant() -> None:
    staged = Staging().with_level(3, LevelMode.REFUSE)
    with pytest.raises(StagedRefusal, match="level 3 executions are refused in tenant acme"):
        decide(staged, "acme", 3, uuid.uuid4())
    assert StagedRefusal.exit_code == 2  # a BadInput: 400, exit code 2


def test_the_canary_choice_is_fixed_per_id_and_about_the_share() -> None:
    staged = Staging().with_canary(50)
    ids = [uuid.UUID(int=i * 7919 + 1) for i in range(2000)]  # not random: reproducible
    first = [decide(staged, "t", 0, i) for i in ids]
    assert [decide(staged, "t", 0, i) for i in ids] == first  # same id, same choice
    real = sum(not d.record_only for d in first)
    assert 850 <= real <= 1150
    skipped = next(d for d in first if d.record_only)
    assert skipped.reason == "record-only: canary 50% (this execution not selected)"
    # 0 % runs nothing for real, 100 % everything; slots are 0-99
    assert all(decide(Staging().with_canary(0), "t", 0, i).record_only for i in ids[:200])
    assert {canary_slot(i) for i in ids} <= set(range(100))


def test_the_canary_only_applies_to_levels_that_run_for_real() -> None:
    staged = Staging().with_canary(100).with_level(1, LevelMode.RECORD_ONLY).with_canary(0)
    found = decide(staged, "t", 1, uuid.uuid4())
    assert found.reason is not None and "level 1" in found.reason  # the level, not the canary


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(BadInput, match="canary: 101%"):
        Staging().with_canary(101)
    with pytest.raises(BadInput, match="level: 4"):
        Staging().with_level(4, LevelMode.REAL)
    with pytest.raises(BadInput, match="mode: 'dark'"):
        parse_mode("dark")
