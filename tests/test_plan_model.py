"""Strict plan validation: every error names the field path."""

from __future__ import annotations

import pytest

from opsconductor.errors import PlanError
from opsconductor.plan import load_plan_text

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
        "  - {name: r, type: command, targets: {assets: [l]}, command: ls}\n"
        "  - {name: m, type: command, action_class: modify, targets: {assets: [l]}, command: x}\n"
        "  - {name: m2, type: command, action_class: modify, idempotent: true,"
        " targets: {assets: [l]}, command: x}\n"
    )
    assert [s.is_idempotent for s in plan.steps] == [True, False, True]
