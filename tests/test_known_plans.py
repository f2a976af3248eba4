"""engine.known_plans: a worker parses each distinct plan document once, and finds each
step's secret references once; only an identical document shares the parse."""

from __future__ import annotations

import copy

import pytest

from opsconductor.engine import known_plans
from opsconductor.errors import PlanError

pytestmark = pytest.mark.unit


def _doc(command: object) -> dict[str, object]:
    return {
        "name": "p",
        "steps": [
            {"name": "a", "type": "noop", "targets": {"assets": ["h1"]}},
            {
                "name": "b",
                "type": "command",
                "command": command,
                "env": {"TOKEN": {"secret": "kv/t"}, "OTHER": {"secret": "kv/t"}},
                "targets": {"assets": ["h1"]},
            },
        ],
    }


def test_an_identical_document_is_parsed_once() -> None:
    first = known_plans.known(_doc("true"))
    again = known_plans.known(copy.deepcopy(_doc("true")))
    assert again is first
    assert first.secret_paths == ((), ("kv/t",))  # in field order, once each


def test_a_different_document_gets_its_own_plan() -> None:
    mine = known_plans.known(_doc("echo 1"))
    other = known_plans.known(_doc("echo 2"))
    assert mine is not other
    assert mine.plan.steps[1].command == "echo 1"  # type: ignore[union-attr]
    assert other.plan.steps[1].command == "echo 2"  # type: ignore[union-attr]


def test_values_that_compare_equal_in_python_are_not_the_same_document() -> None:
    """1 == 1.0 == True in Python; as plan documents they differ (and may not all parse)."""
    keys = {known_plans.known(_doc("true")).plan.name}
    assert keys == {"p"}
    with pytest.raises(PlanError):
        known_plans.known(_doc(1))  # refused, and not answered from "true"'s entry
    with pytest.raises(PlanError):
        known_plans.known(_doc(True))


def test_it_keeps_a_bounded_number_of_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_plans, "MAX_PLANS", 3)
    monkeypatch.setattr(known_plans, "_KNOWN", {})
    for n in range(10):
        known_plans.known(_doc(f"echo {n}"))
    assert len(known_plans._KNOWN) == 3


def test_a_large_document_is_parsed_but_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_plans, "_KNOWN", {})
    big = _doc("echo " + "x" * known_plans.MAX_KEY_CHARS)
    first = known_plans.known(big)
    assert first.plan.steps[1].command.startswith("echo x")  # type: ignore[union-attr]
    assert known_plans._KNOWN == {}
    assert known_plans.known(copy.deepcopy(big)) is not first  # parsed again, not kept
    small = known_plans.known(_doc("true"))
    assert list(known_plans._KNOWN.values()) == [small]
