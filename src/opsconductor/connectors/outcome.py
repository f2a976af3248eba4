"""What a connector reports for one step on one target. Pure."""

from __future__ import annotations

from dataclasses import dataclass

#: Output of every step that record-only mode stopped before it touched anything.
RECORD_ONLY = "skipped: record-only"


@dataclass(frozen=True)
class Outcome:
    #: completed | failed | timeout | cancelled | skipped
    status: str
    exit_code: int | None = None
    output: str = ""
    stderr: str = ""
    error: str | None = None


class StepInputError(Exception):
    """A step cannot start on a target (bad template, missing credential, unreadable
    source file); the message names the step field at fault."""
