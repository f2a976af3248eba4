"""Readable failures and the targets a re-run picks: the pure parts (failures.py, rerun.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from opsconductor import failures, rerun
from opsconductor.errors import PlanError
from opsconductor.plan import parse_plan


@dataclass(frozen=True)
class Row:
    step_index: int
    target_asset_id: str
    status: str
    exit_code: int | None = None
    stderr: str = ""
    error: str | None = None
    attempt: int = 1
    step_name: str = "restart"


def failed(target: str, stderr: str, code: int = 1, **kw: object) -> Row:
    return Row(0, target, "failed", code, stderr, f"exit code {code}", **kw)  # type: ignore[arg-type]


def test_identical_failures_are_one_group_with_every_target() -> None:
    rows = [failed(f"web-{n}", "checking\ndisk /var 97% full\n") for n in (10, 2, 1)]
    rows.append(failed("web-3", "restart failed: address already in use\n", code=3))
    rows.append(Row(0, "web-4", "completed", 0))
    groups = failures.group(rows)
    assert [(g.message, g.targets) for g in groups] == [
        ("exit 1: disk /var 97% full", ("web-1", "web-2", "web-10")),  # natural order
        ("exit 3: restart failed: address already in use", ("web-3",)),
    ]
    assert groups[0].tail == ("checking", "disk /var 97% full")
    assert failures.line(groups[0], limit=2) == (
        "step 'restart' — exit 1: disk /var 97% full \N{MULTIPLICATION SIGN}3: web-1, web-2, … (+1)"
    )


def test_a_different_last_line_or_exit_code_or_step_is_another_group() -> None:
    rows = [
        failed("a", "disk full"),
        failed("b", "disk almost full"),
        failed("c", "disk full", code=2),
        Row(1, "d", "failed", 1, "disk full", "exit code 1", step_name="check"),
    ]
    assert len(failures.group(rows)) == 4


def test_errors_without_an_exit_code_and_timeouts_are_causes() -> None:
    rows = [
        Row(0, "a", "timeout", None, "", "timed out after 10 s"),
        Row(0, "b", "timeout", None, "", "timed out after 10 s"),
        Row(0, "c", "failed", None, "", "connection refused\nmore"),
        Row(0, "d", "skipped"),
        Row(0, "e", "cancelled", None, "", "cancelled"),
    ]
    groups = failures.group(rows)
    assert [(g.message, g.count) for g in groups] == [
        ("timed out after 10 s", 2),
        ("connection refused", 1),
    ]


def test_only_the_latest_attempt_counts_and_the_mask_applies() -> None:
    rows = [
        failed("a", "boom", attempt=1),
        Row(0, "a", "completed", 0, attempt=2),
        failed("b", "token=s3cret rejected"),
    ]
    groups = failures.group(rows, mask=lambda t: t.replace("s3cret", "***"))
    assert [(g.detail, g.targets) for g in groups] == [("token=*** rejected", ("b",))]


def test_names_are_cut_after_the_limit() -> None:
    assert failures.names(["a", "b"], limit=5) == "a, b"
    assert failures.names([f"h{n}" for n in range(37)], limit=2) == "h0, h1, … (+35)"


PLAN = {
    "name": "roll",
    "steps": [
        {"name": "push", "type": "command", "targets": {"tags": {"role": "web"}}, "command": "x"},
        {"name": "check", "type": "validate", "step": "push", "expect": {"exit_code": 0}},
        {"name": "db", "type": "command", "targets": {"assets": ["db-1"]}, "command": "y"},
        {"name": "db check", "type": "validate", "step": "db", "expect": {"exit_code": 0}},
    ],
}
PLANNED = [["w1", "w2", "w3"], ["w1", "w2", "w3"], ["db-1"], ["db-1"]]


def test_a_target_is_rerun_when_any_of_its_steps_did_not_complete() -> None:
    rows = [
        Row(0, "w1", "completed"),
        Row(0, "w2", "failed"),
        Row(0, "w3", "completed"),
        Row(1, "w1", "completed"),
        Row(1, "w2", "skipped"),
        Row(1, "w3", "failed", attempt=1),
        Row(1, "w3", "completed", attempt=2),  # a retry that passed: completed
        Row(2, "db-1", "completed"),
        # (3, db-1) has no attempt at all: it never ran
    ]
    assert rerun.targets_to_rerun(rows, PLANNED) == {"w2", "db-1"}
    every = [Row(i, t, "completed") for i, ts in enumerate(PLANNED) for t in ts]
    assert rerun.targets_to_rerun(every, PLANNED) == set()


def test_the_restricted_plan_narrows_targets_and_drops_steps_left_without_any() -> None:
    narrowed = rerun.restricted_document(PLAN, PLANNED, {"w2", "w3"})
    assert [s["name"] for s in narrowed["steps"]] == ["push", "check"]
    assert narrowed["steps"][0]["targets"] == {"tags": {"role": "web"}, "assets": ["w2", "w3"]}
    assert PLAN["steps"][0]["targets"] == {"tags": {"role": "web"}}  # a copy, not in place
    parse_plan(narrowed)  # still a valid plan
    only_db = rerun.restricted_document(PLAN, PLANNED, {"db-1"})
    assert [s["name"] for s in only_db["steps"]] == ["db", "db check"]
    assert only_db["steps"][0]["targets"] == {"assets": ["db-1"]}
    with pytest.raises(PlanError):  # nothing left: not a plan (the service refuses before)
        parse_plan(rerun.restricted_document(PLAN, PLANNED, set()))
