"""Progress counts, percent and ETA."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from opsconductor.progress import compute
from opsconductor.records import StepAttempt

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(
    step: int,
    target: str,
    status: str,
    attempt: int = 1,
    took: float | None = None,
    started: float | None = None,
) -> StepAttempt:
    start = T0 + timedelta(seconds=started) if started is not None else None
    if took is not None:
        start = start or T0
    return StepAttempt.from_row(
        {
            "id": 1,
            "execution_id": uuid.UUID(int=1),
            "tenant_id": "default",
            "step_name": f"s{step}",
            "retry_count": attempt - 1,
            "exit_code": None,
            "output": "",
            "stderr": "",
            "error": None,
            "step_index": step,
            "target_asset_id": target,
            "status": status,
            "attempt": attempt,
            "step_type": "command",
            "started_at": start,
            "finished_at": start + timedelta(seconds=took) if took is not None and start else None,
        }
    )


def test_counts_use_the_newest_attempt() -> None:
    rows = [
        _row(0, "a", "failed", 1, took=1),
        _row(0, "a", "completed", 2, took=1),
        _row(0, "b", "completed", took=3),
        _row(1, "a", "running", started=4),
        _row(1, "b", "pending"),
        _row(2, "a", "skipped"),
    ]
    p = compute(rows)
    assert (p.total, p.done, p.failed, p.running, p.pending, p.skipped) == (5, 2, 0, 1, 1, 1)
    assert p.percent == 60.0


def test_eta_from_typical_durations_and_elapsed_time() -> None:
    rows = [_row(0, "a", "running", started=0), _row(1, "a", "pending"), _row(1, "b", "pending")]
    p = compute(rows, {"command": 10.0}, now=T0 + timedelta(seconds=4))
    # step 0: 6 s left; step 1: two targets side by side, 10 s
    assert p.eta_s == 16.0


def test_eta_falls_back_to_this_execution_and_is_none_without_data() -> None:
    assert compute([_row(0, "a", "pending")]).eta_s is None
    rows = [_row(0, "a", "completed", took=2), _row(1, "a", "pending")]
    assert compute(rows).eta_s == 2.0


def test_finished_execution_is_100_percent() -> None:
    p = compute([_row(0, "a", "completed", took=1), _row(1, "a", "failed", took=1)])
    assert (p.percent, p.eta_s, p.failed) == (100.0, 0.0, 1)
