"""Every pair of statuses: legal moves pass, all others raise."""

from __future__ import annotations

import itertools

import pytest

from opsconductor import status_machine
from opsconductor.errors import IllegalTransition
from opsconductor.status_machine import Status

LEGAL = {
    ("pending_approval", "approved"),
    ("pending_approval", "rejected"),
    ("pending_approval", "cancelled"),
    ("approved", "queued"),
    ("approved", "running"),
    ("approved", "cancelled"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "timeout"),
    # issue 5: an approval invalidated by a changed target set asks for a new approval
    ("approved", "pending_approval"),
    ("queued", "pending_approval"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "timeout"),
    ("running", "partial"),
}
ALL_PAIRS = list(itertools.product(Status, Status))


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if (p[0], p[1]) in LEGAL])
def test_legal_transition(current: Status, target: Status) -> None:
    status_machine.check(current, target)


@pytest.mark.parametrize(
    ("current", "target"), [p for p in ALL_PAIRS if (p[0].value, p[1].value) not in LEGAL]
)
def test_illegal_transition_raises(current: Status, target: Status) -> None:
    with pytest.raises(IllegalTransition, match=f"cannot move an execution from {current}"):
        status_machine.check(current, target)


def test_terminal_statuses_are_exactly_the_spec_ones() -> None:
    assert {
        Status.REJECTED,
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
        Status.TIMEOUT,
        Status.PARTIAL,
    } == status_machine.TERMINAL


def test_initial_status_depends_on_approval_level() -> None:
    assert status_machine.initial_status(0) is Status.APPROVED
    assert all(status_machine.initial_status(n) is Status.PENDING_APPROVAL for n in (1, 2, 3))
