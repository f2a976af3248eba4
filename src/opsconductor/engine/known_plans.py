"""Plans as a worker runs them: each distinct plan document parsed (validated) once, and
each step's secret references found once.

A worker runs the same few plans over and over (schedules, jobs, fleets of one plan): it
parsed the same snapshot, and walked every step for references, for every execution.
Keyed by the document's ``repr`` (decoded JSON: strings, numbers, booleans, null, lists,
mappings; its repr tells any two apart, at twice the speed of ``json.dumps``), so only an
identical document finds an entry;
parsed plans are frozen and nothing changes them (``fill_secrets`` copies), so runs may
share one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsconductor.plan import Plan, parse_plan, secret_refs

#: Distinct plan documents kept; past that, the oldest entry goes.
MAX_PLANS = 256
#: A document whose key is longer is parsed for its run and not kept: a tenant submitting
#: many large distinct plans must not grow a worker's memory past MAX_PLANS x this.
MAX_KEY_CHARS = 64 * 1024


@dataclass(frozen=True)
class KnownPlan:
    plan: Plan
    #: per step, the secret paths its fields reference (in field order, once each)
    secret_paths: tuple[tuple[str, ...], ...]


_KNOWN: dict[str, KnownPlan] = {}


def known(document: Any) -> KnownPlan:
    """The plan of a snapshot's ``plan`` document (``PlanError`` as ``parse_plan``)."""
    key = repr(document)
    found = _KNOWN.get(key)
    if found is None:
        plan = parse_plan(document)
        paths = tuple(
            tuple(dict.fromkeys(ref.secret for ref in secret_refs(step))) for step in plan.steps
        )
        found = KnownPlan(plan, paths)
        if len(key) > MAX_KEY_CHARS:
            return found
        if len(_KNOWN) >= MAX_PLANS:
            del _KNOWN[next(iter(_KNOWN))]
        _KNOWN[key] = found
    return found
