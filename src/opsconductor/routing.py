"""Routing: estimated duration -> SLA class -> execution mode. Pure.

An estimate per step type alone lied: a plan of 12 x ``sleep 2`` was priced like 12 x
``true`` (the tenant's commands are mostly quick), classed ``fast`` and ended ``timeout``
inside the HTTP request. So each step is estimated from the history of *the same step*
(``step_key``: its type and a hash of what it runs) when there is one; otherwise from the
larger of the type's default and the type's observed p95 (never the optimistic side).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from opsconductor.inventory import Asset
from opsconductor.plan import Plan, Step, _StepBase
from opsconductor.plan_hash import canonical_json
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
    "ansible": 5.0,  # a controller starting, SSH and Python on each host
}

FAST_BELOW_S = 10.0
LONG_ABOVE_S = 30.0


@dataclass(frozen=True)
class Route:
    estimated_s: float
    sla_class: SlaClass
    mode: Mode


#: Fields that say how a step is run, not what it runs: left out of its history key, so
#: a renamed step or a new timeout keeps its history.
_NOT_WORK = ("name", "targets", "timeout_s", "retries", "concurrency", "action_class",
             "idempotent", "when")  # fmt: skip


_NOT_WORK_SET = set(_NOT_WORK)

#: One encoder for every call (``json.dumps`` with options builds a new one each time).
_KEY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _key_json(work: dict[str, Any]) -> str:
    """``_KEY_JSON.encode(work)``; canonical_json's prebuilt C encoder when the text is
    the same (no non-finite float: that encoder refuses one, this one writes it)."""
    try:
        return canonical_json(work)
    except ValueError:
        return _KEY_JSON.encode(work)


def step_key(step: _StepBase) -> str:
    """``command:<sha256 of what it runs>``: the same command text (script, URL, query...)
    in any plan shares one history."""
    work = step.model_dump(mode="json", by_alias=True, exclude=_NOT_WORK_SET)
    text = _key_json(work)
    return f"{work['type']}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _document_names(names: set[str]) -> frozenset[str]:
    """How the fields called ``names`` are written in a step's part of the plan document
    (by alias): the ones ``step_key`` leaves out, as it leaves them out (by field name).
    So not ``action_class``: no field has that name (it is ``declared_action_class``'s
    alias), so every stored key holds the class, and the memo's keys must too."""
    (union,) = get_args(Step)[:1]  # Annotated[CommandStep | ..., discriminator]
    return frozenset(
        info.alias or name
        for cls in get_args(union)
        for name, info in cls.model_fields.items()
        if name in names
    )


_NOT_WORK_WRITTEN = _document_names(_NOT_WORK_SET)


def step_keys_of(
    steps: Sequence[_StepBase], documents: Sequence[Mapping[str, Any]], memo: dict[str, str]
) -> tuple[str, ...]:
    """Each step's ``step_key``, given its part of the plan document (``plan_hash.
    dumped_text``: what the author set, as set) and a ``memo`` shared by the plans of one
    submission: steps that run the same thing are dumped and hashed once.

    Sound because a step's document determines the step (``parse_plan`` rebuilds it: what
    is not set holds its default, which is what the plan hash already relies on), so it
    determines its ``step_key``; and the fields ``step_key`` leaves out (name, targets...)
    change no other field's value, so the rest of the document, the memo's key, does too.
    """
    found = []
    for step, document in zip(steps, documents, strict=True):
        work = _key_json({k: v for k, v in document.items() if k not in _NOT_WORK_WRITTEN})
        key = memo.get(work)
        if key is None:
            key = memo[work] = step_key(step)
        found.append(key)
    return tuple(found)


@dataclass(frozen=True)
class History:
    """Observed p95 seconds per step key and per step type (db.steps.observed_p95)."""

    by_key: Mapping[str, float]
    by_type: Mapping[str, float]


NO_HISTORY = History({}, {})


@dataclass(frozen=True)
class StepEstimate:
    name: str
    per_target_s: float
    targets: int
    #: where ``per_target_s`` comes from, for ``opsc validate``
    source: str


@dataclass(frozen=True)
class Estimate:
    total_s: float
    steps: tuple[StepEstimate, ...]


def estimate(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    history: History = NO_HISTORY,
    keys: Sequence[str] | None = None,
) -> Estimate:
    """Steps run one after another; targets of one step are counted one after another too,
    which over-estimates fan-out but never sends a slow plan down the immediate path.
    ``keys``: the steps' ``step_key``s, when the caller has them already."""
    if keys is None:
        keys = [step_key(step) for step in plan.steps]
    found = []
    for step, step_targets, key in zip(plan.steps, targets, keys, strict=True):
        per, typed = _per_target(step.type, key, history)
        if typed is None:
            source = "p95 of this step's earlier runs"
        elif typed:
            source = f"p95 of this tenant's {step.type} steps (no history of this one)"
        else:
            source = f"default for a {step.type} step (no history of this one)"
        found.append(StepEstimate(step.name, per, max(1, len(step_targets)), source))
    return Estimate(sum(s.per_target_s * s.targets for s in found), tuple(found))


def _per_target(step_type: str, key: str, history: History) -> tuple[float, bool | None]:
    """Seconds per target of one step, and from where: its own history (None), its type's
    (True) or the type's default (False)."""
    if key in history.by_key:
        return history.by_key[key], None
    default = DEFAULT_STEP_SECONDS[step_type]
    typical = history.by_type.get(step_type)
    if typical is not None and typical > default:
        return typical, True
    return default, False


def total_seconds(
    plan: Plan, targets: Sequence[Sequence[Asset]], history: History, keys: Sequence[str]
) -> float:
    """``estimate(...).total_s`` without the per-step account (a submission routes by the
    total alone): the same sum, term by term, so the same float."""
    return sum(
        [  # a list, not a generator: cheaper for a step or two, and sum() sees the same
            _per_target(step.type, key, history)[0] * max(1, len(step_targets))
            for step, step_targets, key in zip(plan.steps, targets, keys, strict=True)
        ]
    )


def estimate_seconds(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    observed_p95: Mapping[str, float] | None = None,
) -> float:
    """``estimate`` with per-type history only."""
    return estimate(plan, targets, History({}, observed_p95 or {})).total_s


@functools.lru_cache(maxsize=256)  # pure, and a bulk routes alike plans alike
def classify(estimated_s: float) -> Route:
    if estimated_s < FAST_BELOW_S:
        return Route(estimated_s, SlaClass.FAST, Mode.IMMEDIATE)
    if estimated_s <= LONG_ABOVE_S:
        return Route(estimated_s, SlaClass.MEDIUM, Mode.BACKGROUND)
    return Route(estimated_s, SlaClass.LONG, Mode.BACKGROUND)
