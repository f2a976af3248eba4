"""Routing: estimated duration -> SLA class -> execution mode. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opsconductor.inventory import Asset
from opsconductor.plan import Plan
from opsconductor.records import Mode, SlaClass

#: Typical duration of one step on one target, before any history exists.
DEFAULT_STEP_SECONDS: Mapping[str, float] = {
    "command": 1.0,
    "script": 1.5,  # an upload, a run and a clean-up
    "file": 1.0,
    "http": 0.5,
    "sql": 0.5,
    "noop": 0.01,  # nothing runs: the step's own bookkeeping
    "validate": 0.01,
}

FAST_BELOW_S = 10.0
LONG_ABOVE_S = 30.0


@dataclass(frozen=True)
class Route:
    estimated_s: float
    sla_class: SlaClass
    mode: Mode


def estimate_seconds(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    observed_p95: Mapping[str, float] | None = None,
) -> float:
    """Steps run one after another; targets of one step are counted one after another too,
    which over-estimates fan-out but never sends a slow plan down the immediate path."""
    history = observed_p95 or {}
    total = 0.0
    for step, step_targets in zip(plan.steps, targets, strict=True):
        per_target = history.get(step.type, DEFAULT_STEP_SECONDS[step.type])
        total += per_target * max(1, len(step_targets))
    return total


def classify(estimated_s: float) -> Route:
    if estimated_s < FAST_BELOW_S:
        return Route(estimated_s, SlaClass.FAST, Mode.IMMEDIATE)
    if estimated_s <= LONG_ABOVE_S:
        return Route(estimated_s, SlaClass.MEDIUM, Mode.BACKGROUND)
    return Route(estimated_s, SlaClass.LONG, Mode.BACKGROUND)
