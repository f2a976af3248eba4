"""Strict plan validation: every error names the field path."""

from __future__ import annotations

from typing import Any

import pytest

from opsconductor.errors import PlanError
from opsconductor.plan import load_plan_text, parse_plan, plan_document

GOOD_STEP = "{name: a, type: command, targets: {hostnames: [localhost]}, command: 'true'"

BAD = [
    ("name: x\nsteps: []", "steps: must not be empty"),
    ("steps: [" + GOOD_STEP + "}]", "name: field required"),
    ("name: x\nsteps: [" + GOOD_STEP + ", timeout_s: 0}]", "steps[0].timeout_s: must be > 0"),
    ("name: x\nsteps: [" + GOOD_STEP + ", timeout_s: -3}]", "steps[0].timeout_s: must be > 0"),
    ("name: x\nsteps: [" + GOOD_STEP + ", bogus: 1}]", "steps[0].bogus: unknown field"),
    ("name: x\nextra: 1\nsteps: [" + GOOD_STEP + "}]", "extra: unknown field"),
    (
        "name: x\nsteps: [" + GOOD_STEP + ", retries: '2'}]",
        "steps[0].retries: must be an integer (got str)",
    ),
    ("name: x\nsteps: [" + GOOD_STEP + ", retries: 11}]", "steps[0].retries: must be <= 10"),
    ("name: x\npriority: 0\nsteps: [" + GOOD_STEP + "}]", "priority: must be >= 1"),
    ("name: x\napproval_level: 4\nsteps: [" + GOOD_STEP + "}]", "approval_level: must be <= 3"),
    ("name: x\nsteps: [{name: a, type: ftp}]", "steps[0].type: must be one of"),
    ("name: x\nsteps: [{name: a, command: ls}]", "steps[0].type: field required"),
    (
        "name: x\nsteps: [{name: a, type: command, command: ls, targets: {}}]",
        "steps[0].targets: give at least one of",
    ),
    (
        "name: x\nsteps: [" + GOOD_STEP + ", action_class: delete}]",
        "steps[0].action_class: must be one of",
    ),
    (
        "name: x\nsteps: [" + GOOD_STEP + ", env: {'1BAD': v}}]",
        "steps[0].env: '1BAD' is not a valid environment variable name",
    ),
    (
        "name: x\nsteps: [" + GOOD_STEP + "}, " + GOOD_STEP + "}]",
        "steps[1].name: duplicate step name 'a'",
    ),
    (
        "name: x\nsteps: [{name: v, type: validate, step: later, expect: {exit_code: 0}}]",
        "steps[0].step: 'later' is not the name of an earlier step",
    ),
    (
        "name: x\nsteps: [" + GOOD_STEP + "}, {name: v, type: validate, step: a, "
        "expect: {stdout_regex: '('}}]",
        "steps[1].expect.stdout_regex: not a valid regular",
    ),
    (
        "name: x\nsteps: [" + GOOD_STEP + "}, {name: v, type: validate, step: a, expect: {}}]",
        "steps[1].expect: give at least one of",
    ),
    ("- just a list", "plan: must be a mapping"),
    ("name: [unclosed", "not valid YAML at line 1"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_plan_names_the_field(text: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan_text(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_json_plans_are_accepted() -> None:
    plan = load_plan_text(
        '{"name": "j", "steps": [{"name": "a", "type": "command", "command": "true",'
        ' "targets": {"assets": ["localhost"]}, "timeout_s": 3}]}'
    )
    assert plan.steps[0].timeout_s == 3.0


def test_idempotent_defaults_to_true_only_for_read() -> None:
    plan = load_plan_text(
        "name: x\nsteps:\n"
        "  - {name: r, type: command, action_class: read, targets: {assets: [l]}, command: ls}\n"
        "  - {name: m, type: command, action_class: modify, targets: {assets: [l]}, command: x}\n"
        "  - {name: m2, type: command, action_class: modify, idempotent: true,"
        " targets: {assets: [l]}, command: x}\n"
        "  - {name: u, type: command, targets: {assets: [l]}, command: rm -rf /srv/app}\n"
    )
    assert [s.is_idempotent for s in plan.steps] == [True, False, True, False]


def _step(**fields: object) -> dict[str, object]:
    return {"name": "s", "targets": {"assets": ["l"]}, **fields}


@pytest.mark.parametrize(
    ("step", "inferred"),
    [
        (_step(type="command", command="rm -rf /srv/app"), "modify"),
        (_step(type="script", script="echo hi"), "modify"),
        (_step(type="file", src="a.conf", dest="/etc/a.conf"), "modify"),
        (
            _step(type="file", direction="fetch", src="/var/log/a", dest="/tmp/{{ asset.id }}"),
            "modify",
        ),
        (_step(type="sql", dsn="dbname=x", query="select 1"), "modify"),
        (_step(type="http", url="http://x/healthz"), "read"),
        (_step(type="http", method="HEAD", url="http://x/healthz"), "read"),
        (_step(type="http", method="POST", url="http://x/deploy"), "modify"),
        (_step(type="http", method="DELETE", url="http://x/thing"), "modify"),
        (_step(type="noop"), "read"),
    ],
)
def test_a_missing_action_class_is_inferred_safely(step: dict[str, Any], inferred: str) -> None:
    """No class given: only steps that cannot change a target count as reads; everything
    else is a modify, and so not idempotent (a crash never re-runs it)."""
    parsed = parse_plan({"name": "x", "steps": [step]}).steps[0]
    assert (parsed.action_class, parsed.action_class_inferred) == (inferred, True)
    assert parsed.is_idempotent == (inferred == "read")


def test_a_declared_action_class_wins_and_is_not_inferred() -> None:
    plan = parse_plan(
        {
            "name": "x",
            "steps": [
                _step(type="command", action_class="read", command="ls"),
                {**_step(type="http", action_class="deploy", url="http://x/"), "name": "h"},
            ],
        }
    )
    assert [(s.action_class, s.action_class_inferred) for s in plan.steps] == [
        ("read", False),
        ("deploy", False),
    ]


def test_a_validate_step_infers_read() -> None:
    plan = parse_plan(
        {
            "name": "x",
            "steps": [
                _step(type="command", action_class="read", command="ls"),
                {"name": "v", "type": "validate", "step": "s", "expect": {"exit_code": 0}},
            ],
        }
    )
    assert (plan.steps[1].action_class, plan.steps[1].action_class_inferred) == ("read", True)


def test_an_inferred_class_is_not_part_of_the_plan_document() -> None:
    """The hash covers what the author wrote: inferring a class changes no stored hash."""
    plan = parse_plan({"name": "x", "steps": [_step(type="command", command="ls")]})
    assert "action_class" not in plan_document(plan)["steps"][0]
    declared = parse_plan(
        {"name": "x", "steps": [_step(type="command", action_class="modify", command="ls")]}
    )
    assert plan_document(declared)["steps"][0]["action_class"] == "modify"
