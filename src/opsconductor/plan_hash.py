"""Canonical JSON and the SHA-256 plan hash (SPEC section 2). Pure.

Canonical form: keys sorted, no insignificant whitespace, non-ASCII escaped, so the bytes
depend on nothing but the data; ``tests/test_plan_hash.py`` pins a golden vector.
We use the standard library rather than an RFC 8785 package: our documents hold only
strings, integers, booleans and floats that pydantic already normalised, and for those
``json.dumps`` with these options is stable across Python versions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from opsconductor.inventory import Asset
from opsconductor.plan import Plan, plan_document


def canonical_json(data: Any) -> str:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def hashed_document(plan: Plan, targets: Sequence[Sequence[Asset]]) -> dict[str, Any]:
    """What the hash covers: the plan with defaults, plus each step's resolved asset ids."""
    return {
        "plan": plan_document(plan),
        "targets": [sorted(a.asset_id for a in step_targets) for step_targets in targets],
    }


def plan_hash(plan: Plan, targets: Sequence[Sequence[Asset]]) -> str:
    return hashlib.sha256(canonical_json(hashed_document(plan, targets)).encode()).hexdigest()
