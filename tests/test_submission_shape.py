"""A bulk submission works out each plan's keys once, from one dump of the plan, and shares
what its plans have in common (step keys of steps that run the same thing, the checked
targets of a selector): the very values the plan-by-plan functions give. Pure."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from opsconductor.errors import TargetResolutionError
from opsconductor.inventory import Asset, Resolved, resolve_selected, step_selector_keys
from opsconductor.plan import parse_plan
from opsconductor.plan_hash import plan_text
from opsconductor.submission import shape, step_keys

SSH = {"assets": ["web-1"]}
LOCAL = {"assets": ["box"]}

#: Steps of every type, with defaults left out, given explicitly, nested, and values the
#: JSON text writes in one way only (non-finite floats, floats that look like integers).
STEPS: list[dict[str, Any]] = [
    {"name": "a", "type": "noop", "targets": SSH},
    {"name": "b", "type": "noop", "targets": SSH, "action_class": "modify", "retries": 2},
    {"name": "c", "type": "noop", "targets": {**SSH, "environment": None}, "timeout_s": 5},
    {"name": "d", "type": "command", "command": "true", "targets": SSH},
    {"name": "e", "type": "command", "command": "true", "targets": SSH, "env": {}},
    {"name": "f", "type": "command", "command": "true", "targets": SSH, "become": True},
    {"name": "g", "type": "command", "command": "true", "targets": SSH, "become": False},
    {"name": "h", "type": "command", "command": "x", "targets": SSH, "env": {"A": "1"}},
    {
        "name": "i",
        "type": "command",
        "command": "x",
        "targets": SSH,
        "env": {"A": {"secret": "kv/a"}},
    },
    {"name": "j", "type": "script", "script": "echo", "targets": {"tags": {"b": "2", "a": "1"}}},
    {"name": "k", "type": "script", "script": "echo", "targets": {"tags": {"a": "1", "b": "2"}}},
    {"name": "l", "type": "http", "url": "https://x", "targets": SSH},
    {"name": "m", "type": "http", "url": "https://x", "targets": SSH, "expect": {"status": 201}},
    {"name": "n", "type": "http", "url": "https://x", "targets": SSH, "expect": {}},
    {"name": "o", "type": "http", "url": "https://x", "targets": SSH, "json": {"v": 1.0}},
    {"name": "p", "type": "http", "url": "https://x", "targets": SSH, "json": {"v": 1}},
    {"name": "q", "type": "sql", "dsn": "postgresql://d", "query": "q", "targets": SSH},
    {
        "name": "s",
        "type": "sql",
        "dsn": "postgresql://d",
        "query": "q",
        "targets": SSH,
        "params": {"v": None},
    },
    {"name": "t", "type": "file", "src": "a", "dest": "/b", "targets": {"hostnames": ["w"]}},
    {"name": "u", "type": "file", "src": "a", "dest": "/b", "targets": SSH, "direction": "push"},
    {"name": "v", "type": "ansible", "playbook": "p.yml", "targets": {"environment": "prod"}},
    {"name": "w", "type": "validate", "step": "a", "expect": {"exit_code": 0}},
]


#: A value the JSON text writes as null: such a plan's keys are worked out the slow way.
INFINITE = {**STEPS[16], "name": "r", "params": {"v": float("inf")}}


def _plans() -> list[Any]:
    """One plan per step (validate after the step it checks), and ones with all of them."""
    single = [parse_plan({"name": "p", "steps": [step]}) for step in [*STEPS[:-1], INFINITE]]
    every = parse_plan({"name": "all", "steps": STEPS})
    declared = {"zone": {"default": "eu-1"}, "n": {"type": "int", "default": 3}}
    return [
        *single,
        every,
        parse_plan({"name": "all", "steps": [*STEPS, INFINITE]}),
        parse_plan({"name": "params", "params": declared, "steps": STEPS[3:5]}),
    ]


def test_a_shape_holds_what_the_plan_by_plan_functions_give() -> None:
    memo: dict[str, str] = {}  # shared, as by the plans of one bulk
    for plan in [*_plans(), *_plans()]:
        shaped = shape(plan, memo)
        assert (shaped.document, shaped.text) == plan_text(plan)
        assert shaped.step_keys == step_keys(plan)
        assert shaped.selectors == step_selector_keys(plan)
        assert shape(plan) == shaped  # with a memo of its own


def test_steps_that_run_alike_share_a_memo_entry_and_others_do_not() -> None:
    plan = parse_plan({"name": "all", "steps": STEPS})
    memo: dict[str, str] = {}
    keys = shape(plan, memo).step_keys
    assert set(memo.values()) == set(keys)  # a step written two ways: two entries, one key
    # a step's name, targets, timeout, retries... are not what it runs (its class is)
    assert keys[0] == keys[2] != keys[1]
    # the same step written with or without its defaults has one key, and one history
    assert keys[3] == keys[4] == keys[6] != keys[5]  # become changes what runs
    assert keys[11] == keys[13] != keys[12]
    assert keys[14] != keys[15]  # 1.0 is not 1 in JSON
    assert keys[9] == keys[10]  # the same script, selected alike (tags in another order)
    selected = shape(plan).selectors
    assert selected[9] == selected[10] and selected[0] != selected[2] and selected[-1] is None


def _asset(asset_id: str, connection: str) -> Asset:
    return Asset(asset_id, asset_id, "10.0.0.1", "prod", connection_type=connection)


def test_resolved_targets_are_shared_yet_each_plan_gets_its_own_lists() -> None:
    ssh = _asset("web-1", "ssh")
    local = _asset("box", "local")
    become = {"name": "up", "type": "command", "command": "x", "become": True}
    ok = parse_plan({"name": "p", "steps": [{**become, "targets": SSH}]})
    local_first = parse_plan(
        {"name": "p", "steps": [{"name": "n", "type": "noop", "targets": LOCAL}]}
    )
    local_become = parse_plan(
        {
            "name": "p",
            "steps": [
                {"name": "n", "type": "noop", "targets": LOCAL},
                {**become, "targets": LOCAL},
            ],
        }
    )
    matched = {key: [ssh] for key in step_selector_keys(ok) if key}
    matched.update({key: [local] for key in step_selector_keys(local_first) if key})
    resolved: Resolved = {}
    one = resolve_selected(ok, matched, None, resolved)
    two = resolve_selected(ok, matched, None, resolved)
    assert one == two == resolve_selected(ok, matched) == [[ssh]]
    assert one[0] is not two[0]
    assert resolve_selected(local_first, matched, None, resolved) == [[local]]
    # the same selector, checked again for another kind of step: refused, naming it
    with pytest.raises(TargetResolutionError, match=r"steps\[1\]\.become: asset 'box'"):
        resolve_selected(local_become, matched, None, resolved)
    with pytest.raises(TargetResolutionError, match=r"steps\[1\]\.become: asset 'box'"):
        resolve_selected(local_become, matched, None, resolved)


async def test_prepare_hashes_and_keys_a_plan_as_the_plan_by_plan_functions_do() -> None:
    """Everything ``prepare`` derives from a shape and a shared context: the plan hash of
    ``plan_hash.plan_hash`` (golden-pinned), the snapshot's canonical text, the step keys;
    and the same execution whether its context and memo served other plans first."""
    from pathlib import Path

    from opsconductor import plan_hash
    from opsconductor.canonical import canonical_json
    from opsconductor.db.connectors import TenantSettings
    from opsconductor.submission import Context, Request, prepare

    def context() -> Context:
        settings = TenantSettings(record_only=False, host_key_policy="strict")
        matched = {key: [ssh] for plan in plans for key in step_selector_keys(plan) if key}
        return Context(settings, matched, {}, {}, lambda _t, _p: Path("/nonexistent"))

    ssh = _asset("web-1", "ssh")
    pushing = {"file", "ansible"}  # they read files at submission: not here
    plans = [p for p in _plans() if not {s.type for s in p.steps} & pushing]
    shared, memo = context(), {}
    for index, plan in enumerate(plans):
        request = Request(plan, "t", "me", f"key-{index}")
        alone = await prepare(request, context(), execution_id=uuid.UUID(int=index))
        both = await prepare(
            request, shared, execution_id=uuid.UUID(int=index), shaped=shape(plan, memo)
        )
        assert both == alone
        targets = resolve_selected(plan, shared.matched)
        values = {"zone": "eu-1", "n": 3} if plan.params else None
        assert alone.plan_hash == plan_hash.plan_hash(plan, targets, None, values)
        assert ("params" in alone.plan_snapshot) == bool(plan.params)
        assert alone.plan_snapshot_json == canonical_json(alone.plan_snapshot)
        assert alone.step_keys == step_keys(plan)
