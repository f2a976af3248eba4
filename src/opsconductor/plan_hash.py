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

from opsconductor import pushed_files
from opsconductor.inventory import Asset
from opsconductor.plan import Plan, plan_document


def canonical_json(data: Any) -> str:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def hashed_document(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    files: pushed_files.Digests | None = None,
) -> dict[str, Any]:
    """What the hash covers: the plan as written, each step's resolved asset ids and, for
    plans that push files, the SHA-256 of every pushed source (``pushed_files.take``).

    ``files`` appears only when the plan pushes something, so the hash of every plan
    without a pushed file is what it always was (the golden vector pins it).
    """
    if files is None and pushed_files.pushes(plan):
        # A hash without the bytes would approve whatever the file holds at run time.
        raise ValueError("this plan pushes files: hash it with their digests")
    document: dict[str, Any] = {
        "plan": plan_document(plan),
        "targets": [sorted(a.asset_id for a in step_targets) for step_targets in targets],
    }
    if files:
        document["files"] = pushed_files.to_document(files)
    return document


def plan_hash(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    files: pushed_files.Digests | None = None,
) -> str:
    document = hashed_document(plan, targets, files)
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()
