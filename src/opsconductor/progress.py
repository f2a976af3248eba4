"""Progress of one execution: counts, percent, ETA. Pure.

The ETA is honest or absent. Each step still to run is priced from what *that same step*
took before (``routing.step_key``: its type and what it runs): the tenant's history of it
(``history``: median seconds and sample count by step key), else its finished targets in
this very execution. A step with neither has no basis, and then neither has the ETA: it
is ``None`` with a reason (``eta_basis``), never another step's timing passed off as this
one's (a run of ``sleep 30`` priced from a ``true`` read "about 1.5 s left").
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsconductor.records import StepAttempt
from opsconductor.status_machine import StepStatus

S = StepStatus
DONE = frozenset({S.COMPLETED})
FAILED = frozenset({S.FAILED, S.TIMEOUT, S.CANCELLED})


#: Targets of one step run this many at a time unless the step says (engine/core.py).
DEFAULT_CONCURRENCY = 10
#: Fewest earlier runs of a step its tenant history must hold to price it.
MIN_SAMPLES = 3


@dataclass(frozen=True)
class Observed:
    """What a step took before: median seconds over ``samples`` finished attempts."""

    median_s: float
    samples: int


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
    #: where ``eta_s`` comes from, or why there is none (None: nothing left to run)
    eta_basis: str | None = None

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
    history: Mapping[str, Observed] | None = None,
    now: datetime | None = None,
    concurrency: Mapping[int, int] | None = None,
) -> Progress:
    """Counts over (step, target) pairs at their latest attempt, and the ETA: ``history``
    maps a step key to its earlier runs in the tenant; ``concurrency`` a step index to its
    targets at a time (default ``DEFAULT_CONCURRENCY``)."""
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
    left, basis = time_left(pairs, history or {}, now, concurrency or {})
    return Progress(total=total, percent=percent, eta_s=left, eta_basis=basis, **count)


def _per_target(
    index: int, rows: list[StepAttempt], history: Mapping[str, Observed]
) -> tuple[float, str] | None:
    """Expected seconds of one target of step ``index``, and where that comes from."""
    key = next((r.step_key for r in rows if r.step_key), None)
    seen = history.get(key) if key else None
    if seen is not None and seen.samples >= MIN_SAMPLES:
        return seen.median_s, f"{seen.samples} earlier runs"
    here = [r.seconds for r in rows if r.seconds is not None and r.status in DONE | FAILED]
    if here:
        return statistics.median(here), f"{len(here)} finished here"
    return None


def time_left(
    pairs: list[StepAttempt],
    history: Mapping[str, Observed],
    now: datetime | None,
    concurrency: Mapping[int, int],
) -> tuple[float | None, str | None]:
    """Seconds left and their basis, or (None, why not). Steps run one after another; the
    targets of a step ``concurrency`` at a time, the running ones first."""
    by_step: dict[int, list[StepAttempt]] = {}
    for row in pairs:
        by_step.setdefault(row.step_index, []).append(row)
    total = 0.0
    bases: list[str] = []
    for index in sorted(by_step):
        rows = by_step[index]
        pending = sum(1 for r in rows if r.status is S.PENDING)
        running = [r for r in rows if r.status is S.RUNNING]
        if not pending and not running:
            continue
        priced = _per_target(index, rows, history)
        if priced is None:
            name = rows[0].step_name
            return None, f"unknown: step {index + 1} {name!r} has no earlier run to go by"
        expected, basis = priced
        bases.append(f"step {index + 1}: {basis}")
        slots = concurrency.get(index, DEFAULT_CONCURRENCY)
        first = 0.0
        for row in running:
            ran = (now - row.started_at).total_seconds() if now and row.started_at else 0.0
            first = max(first, expected - ran, 0.0)
        if pending:
            first = max(first, expected)  # the pending that start now, in the free slots
        queued = max(0, pending - max(0, slots - len(running)))
        total += first + -(-queued // slots) * expected
    if not bases:
        return 0.0, None
    return round(total, 2), "median of the same steps (" + "; ".join(bases) + ")"
