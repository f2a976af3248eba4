"""Timeout policy matrix (SLA class x action class) and retry back-off. Pure."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsconductor.quick_init import quick_init

if TYPE_CHECKING:  # the queue uses the back-off; only an engine needs the plan models
    from opsconductor.plan import Plan, _StepBase


@dataclass(frozen=True)
class TimeoutPolicy:
    sla_class: str
    action_class: str
    step_timeout_s: float
    execution_timeout_s: float
    lease_timeout_s: float
    max_attempts: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TimeoutPolicy:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


PolicyMatrix = Mapping[tuple[str, str], TimeoutPolicy]


def step_timeout(step: _StepBase, sla_class: str, matrix: PolicyMatrix) -> float:
    """The plan's explicit value wins; otherwise the matrix decides."""
    if step.timeout_s is not None:
        return step.timeout_s
    return matrix[(sla_class, step.action_class)].step_timeout_s


@quick_init  # built for every plan of a bulk
@dataclass(frozen=True)
class PlanTimeout:
    """What ``execution_timeout`` reads of a plan; the rest comes from the matrix. Stored
    with the queue row at enqueue, so the claim can start an execution with the same
    budget from the policies table (execution.execution_timeout_s, migration 0037)."""

    #: the plan's own ``timeout_s`` (None: the policies decide)
    plan_s: float | None
    #: the sum of the explicit step timeouts, each times (retries + 1)
    steps_s: float
    #: the action classes of all its steps
    action_classes: tuple[str, ...]

    def resolve(self, sla_class: str, matrix: PolicyMatrix) -> float:
        if self.plan_s is not None:
            return self.plan_s
        policy = max(matrix[(sla_class, c)].execution_timeout_s for c in self.action_classes)
        return max(policy, self.steps_s)


def plan_timeout(plan: Plan) -> PlanTimeout:
    # One loop, no import: a bulk submission works this out for every plan. The same sum,
    # term by term in step order, as budget_reason's (a validate step's type is "validate").
    explicit = 0.0
    classes = set()
    for s in plan.steps:
        classes.add(s.action_class)
        if s.timeout_s is not None and s.type != "validate":
            explicit += s.timeout_s * (s.retries + 1)
    return PlanTimeout(plan.timeout_s, explicit, tuple(sorted(classes)))


def execution_timeout(plan: Plan, sla_class: str, matrix: PolicyMatrix) -> float:
    """Explicit plan value, else the longest policy budget among the plan's action classes,
    but never less than the sum of the explicit step timeouts (a plan that says how long its
    steps take must be allowed that long)."""
    return plan_timeout(plan).resolve(sla_class, matrix)


def budget_reason(plan: Plan, sla_class: str, matrix: PolicyMatrix) -> tuple[float, str]:
    """``execution_timeout`` and why, in words (``opsc validate``)."""
    from opsconductor.plan import ValidateStep

    explicit = sum(
        (s.timeout_s or 0) * (s.retries + 1) for s in plan.steps if not isinstance(s, ValidateStep)
    )
    if plan.timeout_s is not None:
        why = "the plan's own timeout_s"
        if explicit > plan.timeout_s:
            why += (
                f" (below the {explicit:g} s its steps declare, timeout_s x (retries + 1): "
                "it will stop them)"
            )
        return plan.timeout_s, why
    policy, action = max(
        (matrix[(sla_class, s.action_class)].execution_timeout_s, s.action_class)
        for s in plan.steps
    )
    if explicit > policy:
        return explicit, (
            f"the steps' declared timeout_s x (retries + 1); the {sla_class}/{action} "
            f"policy alone gives {policy:g} s"
        )
    return policy, f"the {sla_class}/{action} policy (longest among the plan's action classes)"


def backoff_s(
    retry: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential back-off with jitter: uniform in [c/2, c], c = min(cap, base * 2**retry)."""
    ceiling = min(cap, base * 2**retry)
    return (rng or random).uniform(ceiling / 2, ceiling)
