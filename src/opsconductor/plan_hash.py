"""The SHA-256 plan hash of canonical JSON (``canonical.py``). Pure.

Canonical form: keys sorted, no insignificant whitespace, non-ASCII escaped, so the bytes
depend on nothing but the data; ``tests/test_plan_hash.py`` pins a golden vector.
We use the standard library rather than an RFC 8785 package: our documents hold only
strings, integers, booleans and floats that pydantic already normalised, and for those
``json.dumps`` with these options is stable across Python versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from opsconductor import pushed_files
from opsconductor.canonical import canonical_json as canonical_json
from opsconductor.inventory import Asset
from opsconductor.params import Value, bind
from opsconductor.plan import Plan, plan_document

#: The canonical text of a document's keys (a handful of fixed names).
_KEY_TEXT: dict[str, str] = {}


def _key_text(key: str) -> str:
    text = _KEY_TEXT.get(key)
    if text is None:
        text = canonical_json(key)
        if len(_KEY_TEXT) < 64:  # bounded: any caller's keys are welcome, few are kept
            _KEY_TEXT[key] = text
    return text


def canonical_with(document: Mapping[str, Any], texts: Mapping[str, str]) -> str:
    """``canonical_json(document)``, taking the canonical text of some of its values from
    ``texts`` (already serialised by the caller) instead of serialising them again: the
    very same bytes, as ``json.dumps(sort_keys=True)`` writes a dict exactly this way."""
    parts = [
        _key_text(key) + ":" + (texts[key] if key in texts else canonical_json(document[key]))
        for key in sorted(document)
    ]
    return "{" + ",".join(parts) + "}"


def hashed_text(document: Mapping[str, Any], plan_text: str) -> str:
    """``canonical_json`` of a ``hashed_document`` whose plan's text is ``plan_text``."""
    if len(document) == 2:  # plan and targets only (no files, no params): most plans
        return '{"plan":' + plan_text + ',"targets":' + canonical_json(document["targets"]) + "}"
    return canonical_with(document, {"plan": plan_text})


def plan_text(plan: Plan) -> tuple[dict[str, Any], str]:
    """``plan_document(plan)`` and its canonical JSON (``dumped_text``, else the round trip
    ``plan_document`` takes): the bytes are ``plan_document``'s always."""
    dumped = dumped_text(plan)
    if dumped is not None:
        return dumped
    document = plan_document(plan)
    return document, canonical_json(document)


def dumped_text(plan: Plan) -> tuple[dict[str, Any], str] | None:
    """``plan_text`` from pydantic's JSON-mode dump: the same data as the JSON round trip
    ``plan_document`` takes, at half the cost, but for one thing: it keeps a non-finite
    float (a YAML ``.inf`` in a step's values) that the JSON text writes as null. The
    canonical encoder refuses those, so for such a plan (and only such a plan) this is
    None. The document returned is then the very data the plan holds (no value changed
    on the way), which ``routing.step_keys_of`` relies on."""
    document: dict[str, Any] = plan.model_dump(mode="json", exclude_unset=True, by_alias=True)
    try:
        return document, canonical_json(document)
    except ValueError:  # inf or nan somewhere
        return None


def hashed_document(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    files: pushed_files.Digests | None = None,
    params: Mapping[str, Value] | None = None,
    *,
    plan_doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the hash covers: the plan as written, each step's resolved asset ids, for
    plans that push files the SHA-256 of every pushed source (``pushed_files.take``) and,
    for plans that declare parameters, every parameter's bound value (``params.bind``; a
    ``secret-ref`` parameter by its path, never its value).

    ``files`` and ``params`` appear only when the plan pushes something or declares a
    parameter, so the hash of every other plan is what it always was (the golden vector
    pins it). ``plan_doc``: ``plan_document(plan)``, when the caller has it already
    (``plan_text``).
    """
    if files is None and pushed_files.pushes(plan):
        # A hash without the bytes would approve whatever the file holds at run time.
        raise ValueError("this plan pushes files: hash it with their digests")
    document: dict[str, Any] = {
        "plan": plan_document(plan) if plan_doc is None else plan_doc,
        "targets": [sorted(a.asset_id for a in step_targets) for step_targets in targets],
    }
    if files:
        document["files"] = pushed_files.to_document(files)
    if plan.params:
        # Bound here, not trusted: a value the declaration refuses cannot be hashed.
        document["params"] = bind(plan.params, params)
    return document


def plan_hash(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    files: pushed_files.Digests | None = None,
    params: Mapping[str, Value] | None = None,
) -> str:
    return digest(hashed_document(plan, targets, files, params))


def digest(document: Mapping[str, Any]) -> str:
    """The hash of a ``hashed_document``."""
    return digest_text(canonical_json(document))


def digest_text(canonical: str) -> str:
    """The hash of a ``hashed_document`` already in canonical JSON (a submission that
    stores the document too serialises it once)."""
    return hashlib.sha256(canonical.encode()).hexdigest()
