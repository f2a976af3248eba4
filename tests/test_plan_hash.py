"""The plan hash is a pure function of the plan and its resolved targets."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from opsconductor.inventory import Asset, resolve_plan
from opsconductor.plan import parse_plan
from opsconductor.plan_hash import canonical_json, hashed_document, plan_hash

INVENTORY = [
    Asset("web-2", "web-2.example", "10.0.0.2", "staging", tags={"role": "web"}),
    Asset("web-1", "web-1.example", "10.0.0.1", "staging", tags={"role": "web"}),
    Asset("db-1", "db-1.example", "10.0.0.9", "staging", tags={"role": "db"}),
]

PLAN: dict[str, Any] = {
    "name": "Restart nginx on the web tier",
    "description": "café ☕",
    "priority": 3,
    "steps": [
        {
            "name": "check config",
            "type": "command",
            "action_class": "read",
            "targets": {"tags": {"role": "web"}, "environment": "staging"},
            "command": "nginx -t",
            "timeout_s": 10,
            "retries": 1,
        },
        {
            "name": "verify",
            "type": "validate",
            "step": "check config",
            "expect": {"exit_code": 0, "stdout_regex": "ok"},
        },
    ],
}

# Golden vector: if this changes, every stored approval and idempotency key changes with it.
GOLDEN_JSON = (
    '{"plan":{"description":"caf\\u00e9 \\u2615","name":"Restart nginx on the web tier",'
    '"priority":3,"steps":[{"action_class":"read","command":"nginx -t","name":"check config",'
    '"retries":1,"targets":{"environment":"staging","tags":{"role":"web"}},"timeout_s":10.0,'
    '"type":"command"},{"expect":{"exit_code":0,"stdout_regex":"ok"},"name":"verify",'
    '"step":"check config","type":"validate"}]},"targets":[["web-1","web-2"],["web-1","web-2"]]}'
)
GOLDEN_HASH = "1a599eca80d032530d01514a30cc992c69daba5478873e76857ccb733fa48925"


def _hash(data: dict[str, Any], inventory: list[Asset] = INVENTORY) -> str:
    plan = parse_plan(data)
    return plan_hash(plan, resolve_plan(plan, inventory))


def _reversed(value: Any) -> Any:
    """The same data with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


def test_golden_vector() -> None:
    plan = parse_plan(PLAN)
    assert canonical_json(hashed_document(plan, resolve_plan(plan, INVENTORY))) == GOLDEN_JSON
    assert _hash(PLAN) == GOLDEN_HASH


def test_key_order_and_inventory_order_do_not_matter() -> None:
    assert _hash(_reversed(PLAN)) == GOLDEN_HASH
    assert _hash(PLAN, list(reversed(INVENTORY))) == GOLDEN_HASH


def test_integer_and_float_timeouts_hash_alike() -> None:
    with_float = {**PLAN, "steps": [{**PLAN["steps"][0], "timeout_s": 10.0}, PLAN["steps"][1]]}
    assert _hash(with_float) == GOLDEN_HASH


def test_any_change_changes_the_hash() -> None:
    changed_command = {
        **PLAN,
        "steps": [{**PLAN["steps"][0], "command": "nginx -T"}, PLAN["steps"][1]],
    }
    assert _hash(changed_command) != GOLDEN_HASH
    more_targets = [
        *INVENTORY,
        Asset("web-3", "web-3", "10.0.0.3", "staging", tags={"role": "web"}),
    ]
    assert _hash(PLAN, more_targets) != GOLDEN_HASH  # a new matching asset changes what runs


def test_same_hash_in_a_fresh_interpreter_with_another_hash_seed() -> None:
    code = "from tests.test_plan_hash import _hash, PLAN; print(_hash(PLAN))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.strip() == GOLDEN_HASH


def test_canonical_with_given_texts_is_canonical_json() -> None:
    """The submission serialises the plan once and reuses the text for the whole document:
    the bytes (and so the hash) must be exactly canonical_json's."""
    from opsconductor.plan_hash import canonical_with, digest, digest_text

    plan = parse_plan(PLAN)
    document = hashed_document(plan, resolve_plan(plan, INVENTORY))
    assert digest(document) == plan_hash(plan, resolve_plan(plan, INVENTORY))
    document["params"] = {"zone": "é", "n": 2.5, "flag": True}
    text = canonical_with(document, {"plan": canonical_json(document["plan"])})
    assert text == canonical_json(document)
    assert canonical_with(document, {}) == canonical_json(document)
    assert digest_text(text) == digest(document)


def test_hashed_text_is_canonical_json() -> None:
    """A hashed document written with its plan's text as given, with and without files
    and params: the bytes of ``canonical_json``, so the same hash."""
    from opsconductor.plan_hash import hashed_text

    plan = parse_plan(PLAN)
    document = hashed_document(plan, resolve_plan(plan, INVENTORY))
    plan_only = canonical_json(document["plan"])
    assert hashed_text(document, plan_only) == GOLDEN_JSON
    document["targets"] = [["é\u2028", '"'], []]
    assert hashed_text(document, plan_only) == canonical_json(document)
    document["params"] = {"zone": "é", "n": 2.5}
    assert hashed_text(document, plan_only) == canonical_json(document)
    document["files"] = {"a": "b"}
    assert hashed_text(document, plan_only) == canonical_json(document)


def test_plan_text_is_plan_document_in_canonical_json() -> None:
    """The submission's faster dump (pydantic's JSON mode, a prebuilt C encoder) writes
    the very bytes of ``canonical_json(plan_document(plan))``, non-finite floats included
    (the JSON round trip writes them as null)."""
    import json

    from opsconductor.plan import plan_document
    from opsconductor.plan_hash import plan_text

    sql = {"name": "q", "type": "sql", "dsn": "postgresql://db/x", "query": "select %s"}
    plans = [
        PLAN,
        {"name": "n", "steps": [{"name": "a", "type": "noop", "targets": {"assets": ["x"]}}]},
        *(
            {"name": "s", "steps": [{**sql, "params": {"v": v}, "targets": {"assets": ["x"]}}]}
            for v in (float("inf"), float("nan"), 0.1, 1e300, -0.0, 2**70, "é\u2028", None)
        ),
    ]
    for data in plans:
        plan = parse_plan(data)
        document, text = plan_text(plan)
        assert document == json.loads(text)
        assert text == canonical_json(plan_document(plan))
        assert text == json.JSONEncoder(
            sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode(plan_document(plan))
