"""Progress counts, percent and ETA."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from opsconductor.progress import Observed, compute
from opsconductor.records import StepAttempt

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(
    step: int,
    target: str,
    status: str,
    attempt: int = 1,
    took: float | None = None,
    started: float | None = None,
    key: str | None = None,
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
            "step_key": key if key is not None else f"command:{step}",
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


def test_eta_from_the_history_of_the_same_steps_and_elapsed_time() -> None:
    rows = [_row(0, "a", "running", started=0), _row(1, "a", "pending"), _row(1, "b", "pending")]
    history = {"command:0": Observed(10.0, 5), "command:1": Observed(10.0, 8)}
    p = compute(rows, history, now=T0 + timedelta(seconds=4))
    # step 0: 6 s left; step 1: two targets side by side, 10 s
    assert p.eta_s == 16.0
    assert p.eta_basis is not None and "5 earlier runs" in p.eta_basis


def test_a_step_never_run_makes_the_eta_unknown_not_borrowed_from_another_step() -> None:
    """The bug this replaced: a slow step priced from a quick one's timing (``true`` took
    0.1 s, so ``sleep 30`` read "about 1.5 s left")."""
    rows = [_row(0, "a", "completed", took=0.1), _row(1, "a", "pending")]
    p = compute(rows, {"command:0": Observed(0.1, 50)})
    assert p.eta_s is None
    assert p.eta_basis == "unknown: step 2 's1' has no earlier run to go by"


def test_too_few_earlier_runs_are_no_basis() -> None:
    rows = [_row(0, "a", "pending")]
    assert compute(rows, {"command:0": Observed(3.0, 2)}).eta_s is None
    assert compute(rows, {"command:0": Observed(3.0, 3)}).eta_s == 3.0


def test_without_history_the_same_step_finished_here_is_the_basis() -> None:
    assert compute([_row(0, "a", "pending")]).eta_s is None
    rows = [
        _row(0, "a", "completed", took=2),
        _row(0, "b", "completed", took=4),
        _row(0, "c", "failed", took=30),
        _row(0, "d", "pending"),
    ]
    p = compute(rows)
    assert p.eta_s == 4.0  # the median of 2, 4 and 30
    assert p.eta_basis is not None and "3 finished here" in p.eta_basis


@pytest.mark.parametrize(
    ("pending", "running", "slots", "expected"),
    [
        (150, 0, 10, 150.0),  # 15 waves of 10 s
        (145, 5, 10, 150.0),  # 5 slots free now, then ceil(140 / 10) waves
        (5, 0, 10, 10.0),
        (0, 3, 10, 7.0),  # only the running, 3 s into 10
        (20, 0, 20, 10.0),
    ],
)
def test_targets_run_in_waves_of_the_step_concurrency(
    pending: int, running: int, slots: int, expected: float
) -> None:
    rows = [_row(0, f"t{i}", "pending") for i in range(pending)]
    rows += [_row(0, f"r{i}", "running", started=0) for i in range(running)]
    history = {"command:0": Observed(10.0, 10)}
    p = compute(rows, history, now=T0 + timedelta(seconds=3), concurrency={0: slots})
    assert p.eta_s == expected


def test_an_overrunning_target_leaves_no_negative_time() -> None:
    rows = [_row(0, "a", "running", started=0)]
    p = compute(rows, {"command:0": Observed(1.0, 9)}, now=T0 + timedelta(seconds=60))
    assert p.eta_s == 0.0


def test_finished_execution_is_100_percent() -> None:
    p = compute([_row(0, "a", "completed", took=1), _row(1, "a", "failed", took=1)])
    assert (p.percent, p.eta_s, p.failed, p.eta_basis) == (100.0, 0.0, 1, None)
