"""Progress of one execution: counts, percent, ETA. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsconductor.records import StepAttempt
from opsconductor.status_machine import StepStatus

S = StepStatus
DONE = frozenset({S.COMPLETED})
FAILED = frozenset({S.FAILED, S.TIMEOUT, S.CANCELLED})


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    failed: int
    running: int
    pending: int
    skipped: int
    percent: float
    eta_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def latest_attempts(rows: Iterable[StepAttempt]) -> list[StepAttempt]:
    """One row per (step, target): the newest attempt."""
    newest: dict[tuple[int, str], StepAttempt] = {}
    for row in rows:
        key = (row.step_index, row.target_asset_id)
        if key not in newest or row.attempt > newest[key].attempt:
            newest[key] = row
    return [newest[k] for k in sorted(newest)]


def compute(
    rows: Iterable[StepAttempt],
    typical_s: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> Progress:
    """``typical_s`` maps step type to an observed duration (p50 or p95); without one, the
    mean of this execution's finished steps stands in; without either there is no ETA."""
    pairs = latest_attempts(rows)
    count = {"done": 0, "failed": 0, "running": 0, "pending": 0, "skipped": 0}
    for row in pairs:
        if row.status in DONE:
            count["done"] += 1
        elif row.status in FAILED:
            count["failed"] += 1
        elif row.status is S.RUNNING:
            count["running"] += 1
        elif row.status is S.SKIPPED:
            count["skipped"] += 1
        else:
            count["pending"] += 1
    total = len(pairs)
    finished = count["done"] + count["failed"] + count["skipped"]
    percent = round(100.0 * finished / total, 1) if total else 100.0
    return Progress(total=total, percent=percent, eta_s=_eta(pairs, typical_s or {}, now), **count)


def _eta(
    pairs: list[StepAttempt],
    typical: Mapping[str, float],
    now: datetime | None,
    concurrency: int = 10,
) -> float | None:
    """Steps run one after another, the targets of a step ``concurrency`` at a time."""
    durations = [row.seconds for row in pairs if row.seconds is not None]
    fallback = sum(durations) / len(durations) if durations else None
    left_by_step: dict[int, list[float]] = {}
    for row in pairs:
        if row.status not in (S.PENDING, S.RUNNING):
            continue
        expected = typical.get(row.step_type, fallback)
        if expected is None:
            return None
        if row.status is S.RUNNING and now is not None and row.started_at is not None:
            expected = max(0.0, expected - (now - row.started_at).total_seconds())
        left_by_step.setdefault(row.step_index, []).append(expected)
    total = 0.0
    for left in left_by_step.values():
        waves = -(-len(left) // concurrency)  # ceil
        total += max(left) * waves
    return round(total, 2)
