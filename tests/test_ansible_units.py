"""The ``ansible`` step's pure parts: the plan model and the per-host results read from
our callback plugin's JSON lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opsconductor.ansible_events import Events
from opsconductor.errors import PlanError
from opsconductor.plan import AnsibleStep, parse_plan

pytestmark = pytest.mark.unit


def _step(**fields: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "steps": [{"name": "s", "type": "ansible", "targets": {"assets": ["a"]}, **fields}],
    }


def test_an_ansible_step_parses_with_its_fields() -> None:
    step = parse_plan(
        _step(
            playbook="site/deploy.yml",
            extra_vars={"x": "{{ params.v }}", "n": 3, "pw": {"secret": "kv/pw"}},
            tags=["config"],
            become=True,
        )
    ).steps[0]
    assert isinstance(step, AnsibleStep)
    assert (step.playbook, step.tags, step.become_as) == ("site/deploy.yml", ["config"], "root")
    assert step.action_class == "modify"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"playbook": "/etc/x.yml"}, "steps[0].playbook: a path relative to the tenant"),
        ({"playbook": "a/../../x.yml"}, "steps[0].playbook: a path relative to the tenant"),
        ({"playbook": "site/deploy.sh"}, "steps[0].playbook: a playbook is a .yml"),
        ({}, "steps[0].playbook: field required"),
        ({"playbook": "x.yml", "tags": ["a b"]}, "steps[0].tags[0]"),
        ({"playbook": "x.yml", "become_user": "web"}, "need become: true"),
    ],
)
def test_bad_ansible_steps_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(_step(**fields))
    assert message in str(caught.value)


def _line(kind: str, **fields: Any) -> str:
    return json.dumps({"opsc": kind, **fields})


def test_results_are_attributed_to_their_host_and_the_recap_decides() -> None:
    events = Events(["web1", "web2"])
    assert events.feed("stdout", _line("play", name="all")) == (None, "PLAY [all]")
    assert events.feed("stdout", _line("task", name="write")) == (None, "TASK [write]")
    assert events.feed("stdout", _line("changed", host="web1", task="write")) == (
        "web1",
        "changed: [web1] write",
    )
    events.feed("stdout", _line("failed", host="web2", task="write", msg="disk full"))
    events.feed("stdout", _line("failed", host="web1", task="probe", msg="meh", ignored=True))
    events.feed("stderr", "[WARNING]: something")
    stats = {
        "web1": {"ok": 2, "changed": 1, "failures": 0, "unreachable": 0},
        "web2": {"ok": 0, "changed": 0, "failures": 1, "unreachable": 0},
    }
    for host, counts in stats.items():
        assert events.feed("stdout", _line("stats", host=host, counts=counts)) is None
    events.feed("stdout", _line("recap"))
    one, two = events.outcome("web1", 2), events.outcome("web2", 2)
    assert (one.status, one.error) == ("completed", None)
    assert "changed: [web1] write" in one.output and "[web2]" not in one.output
    assert "failed: [web1] probe: meh (ignored)" in one.output
    assert "[WARNING]: something" in one.output and "[WARNING]: something" in two.output
    assert (two.status, two.error) == ("failed", "task 'write' failed: disk full")


def test_unreachable_no_task_and_a_playbook_that_never_started() -> None:
    events = Events(["a", "b", "c"])
    events.feed("stdout", _line("unreachable", host="a", task="ping", msg="no route"))
    events.feed("stdout", _line("stats", host="a", counts={"ok": 0, "unreachable": 1}))
    events.feed("stdout", _line("stats", host="b", counts={"ok": 1}))
    events.feed("stdout", _line("recap"))
    assert events.outcome("a", 4).error == "unreachable: no route"
    assert events.outcome("b", 4).status == "completed"
    assert events.outcome("c", 4).status == "skipped"

    broken = Events(["a"])
    broken.feed("stderr", "ERROR! conflicting action statements: copy, command")
    ended = broken.outcome("a", 4)
    assert ended.status == "failed"
    assert ended.error == (
        "ansible-playbook exited with 4 before its recap: "
        "ERROR! conflicting action statements: copy, command"
    )


def test_a_forged_or_foreign_host_line_is_not_attributed() -> None:
    events = Events(["a"])
    assert events.feed("stdout", _line("ok", host="localhost", task="x")) is None
    assert events.feed("stdout", '{"opsc": broken') == (None, '{"opsc": broken')
