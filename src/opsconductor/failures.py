"""Readable failures: the failed targets of an execution grouped by cause. Pure.

With 37 hosts failing the same way a person wants one line (``exit 1: disk /var 97% full``,
37 times, on web-01, web-02, …), not 37 rows of ``exit code 1``. A group is one step, one cause
(the error, or the exit code) and the last line of standard error; its members are the
targets whose latest attempt of that step failed or timed out. The text is what was
stored (masked at the sink); a display may mask again (``mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opsconductor.status_machine import StepStatus

#: Latest-attempt statuses that count as a failure of the target (skipped and cancelled
#: ones are consequences: of an earlier failure, of a cancel).
FAILED = frozenset({StepStatus.FAILED.value, StepStatus.TIMEOUT.value})
#: Longest detail line kept, in characters: a group's key and its display.
MAX_DETAIL = 200
#: Last lines of standard error shown under a group.
TAIL_LINES = 3


class Attempt(Protocol):
    """What grouping reads of a step attempt (``records.StepAttempt``, ``models.Step``)."""

    @property
    def step_index(self) -> int: ...
    @property
    def step_name(self) -> str: ...
    @property
    def target_asset_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def stderr(self) -> str: ...
    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True)
class FailureGroup:
    step_index: int
    step_name: str
    #: ``exit 1``, or the recorded error (``timed out after 10 s``, ``connection refused``)
    cause: str
    #: the last non-empty line of standard error ("" when there is none)
    detail: str
    #: the targets failing this way, in natural order
    targets: tuple[str, ...]
    #: the last lines of standard error of the first target (``detail`` is its last)
    tail: tuple[str, ...]

    @property
    def message(self) -> str:
        return f"{self.cause}: {self.detail}" if self.detail else self.cause

    @property
    def count(self) -> int:
        return len(self.targets)


def _same(text: str) -> str:
    return text


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _cause(attempt: Attempt) -> str:
    error = (attempt.error or "").strip()
    if attempt.exit_code is not None and error in ("", f"exit code {attempt.exit_code}"):
        return f"exit {attempt.exit_code}"
    first = error.splitlines()[0] if error else ""
    return first[:MAX_DETAIL] or str(attempt.status)


def _natural(name: str) -> tuple[tuple[int, str], ...]:
    """``web-2`` before ``web-10``: digit runs compare as numbers."""
    parts: list[tuple[int, str]] = []
    digits = ""
    text = ""
    for char in name:
        if char.isdigit():
            if text:
                parts.append((1, text))
                text = ""
            digits += char
        else:
            if digits:
                parts.append((0, digits.zfill(20)))
                digits = ""
            text += char
    if digits:
        parts.append((0, digits.zfill(20)))
    if text:
        parts.append((1, text))
    return tuple(parts)


def latest(attempts: Iterable[Attempt]) -> list[Attempt]:
    """One attempt per (step, target): the newest."""
    newest: dict[tuple[int, str], Attempt] = {}
    for row in attempts:
        key = (row.step_index, row.target_asset_id)
        if key not in newest or row.attempt > newest[key].attempt:
            newest[key] = row
    return [newest[k] for k in sorted(newest)]


def group(attempts: Iterable[Attempt], mask: Callable[[str], str] = _same) -> list[FailureGroup]:
    """Failed targets grouped by (step, cause, last stderr line); largest group first, then
    in step order."""
    members: dict[tuple[int, str, str, str], list[Attempt]] = {}
    for row in latest(attempts):
        if str(row.status) not in FAILED:
            continue
        lines = _lines(mask(row.stderr or ""))
        detail = lines[-1][:MAX_DETAIL] if lines else ""
        key = (row.step_index, row.step_name, mask(_cause(row)), detail)
        members.setdefault(key, []).append(row)
    groups = []
    for (index, name, cause, detail), rows in members.items():
        rows.sort(key=lambda r: _natural(r.target_asset_id))
        tail = tuple(line[:MAX_DETAIL] for line in _lines(mask(rows[0].stderr or ""))[-TAIL_LINES:])
        targets = tuple(r.target_asset_id for r in rows)
        groups.append(FailureGroup(index, name, cause, detail, targets, tail))
    groups.sort(key=lambda g: (-g.count, g.step_index, g.message))
    return groups


def names(targets: Sequence[str], limit: int = 5) -> str:
    """``web-01, web-02, … (+35)``: the first ``limit`` names, then how many more."""
    shown = ", ".join(targets[:limit])
    rest = len(targets) - limit
    return f"{shown}, … (+{rest})" if rest > 0 else shown


#: Between a group's message and its count (shown as in "disk full, times 37").
TIMES = "\N{MULTIPLICATION SIGN}"


def line(found: FailureGroup, limit: int = 5) -> str:
    """One group on one line: ``step 'restart' — exit 1: address in use`` then the sign,
    the count and the first names."""
    listed = names(found.targets, limit)
    return f"step {found.step_name!r} — {found.message} {TIMES}{found.count}: {listed}"
