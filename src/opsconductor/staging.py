"""Staged enablement (pure): per tenant, which approval levels may run for real, and the
canary share of the eligible executions that do; the rest run record-only.

Decided once, at submission, from the execution's id (chosen before it is stored), and
recorded on the execution: the same id always gives the same answer, so the decision can
be re-checked later and never depends on the order or the number of submissions.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from enum import StrEnum

from opsconductor.errors import BadInput

LEVELS = (0, 1, 2, 3)


class LevelMode(StrEnum):
    REAL = "real"
    RECORD_ONLY = "record-only"
    REFUSE = "refuse"


class StagedRefusal(BadInput):
    """The tenant refuses executions of this approval level (a 4xx, exit code 2)."""


@dataclass(frozen=True)
class Staging:
    #: by approval level 0..3
    level_modes: tuple[LevelMode, LevelMode, LevelMode, LevelMode] = (LevelMode.REAL,) * 4
    #: share (0-100) of the executions a level lets run for real that actually do
    canary_percent: int = 100

    def __post_init__(self) -> None:
        if len(self.level_modes) != len(LEVELS):
            raise BadInput(f"level_modes: one mode per approval level {LEVELS}")
        if not 0 <= self.canary_percent <= 100:
            raise BadInput(f"canary: {self.canary_percent}%: must be 0-100")

    @property
    def staged(self) -> bool:
        """Anything other than "everything real"."""
        return self.canary_percent < 100 or any(m is not LevelMode.REAL for m in self.level_modes)

    def with_level(self, level: int, mode: LevelMode) -> Staging:
        check_level(level)
        modes = list(self.level_modes)
        modes[level] = mode
        return Staging((modes[0], modes[1], modes[2], modes[3]), self.canary_percent)

    def with_canary(self, percent: int) -> Staging:
        return Staging(self.level_modes, percent)


def check_level(level: int) -> None:
    if level not in LEVELS:
        raise BadInput(f"level: {level}: approval levels are 0-3")


def parse_mode(text: str) -> LevelMode:
    try:
        return LevelMode(text)
    except ValueError:
        raise BadInput(
            f"mode: {text!r}: must be one of {', '.join(m.value for m in LevelMode)}"
        ) from None


def canary_slot(execution_id: uuid.UUID) -> int:
    """0-99, uniform and fixed for an id (a hash, so any kind of uuid spreads evenly)."""
    digest = hashlib.sha256(b"opsc.canary " + execution_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class Decision:
    record_only: bool
    #: why staging forced record-only (None: it did not)
    reason: str | None
    #: the execution's canary slot, when the canary was consulted
    slot: int | None = None


#: The usual answer, one record for all (a bulk submission asks for every plan).
_FOR_REAL = Decision(False, None)


def decide(staging: Staging, tenant_id: str, level: int, execution_id: uuid.UUID) -> Decision:
    """What staging makes of one execution; ``StagedRefusal`` for a refused level."""
    check_level(level)
    mode = staging.level_modes[level]
    if mode is LevelMode.REFUSE:
        raise StagedRefusal(
            f"approval_level: level {level} executions are refused in tenant {tenant_id} "
            "(staged enablement; a tenant admin changes it with `opsc tenant stage`)"
        )
    if mode is LevelMode.RECORD_ONLY:
        why = f"record-only: level {level} not enabled for real in tenant {tenant_id}"
        return Decision(True, why)
    if staging.canary_percent >= 100:
        return _FOR_REAL
    slot = canary_slot(execution_id)
    if slot < staging.canary_percent:
        return Decision(False, None, slot)
    return Decision(
        True, f"record-only: canary {staging.canary_percent}% (this execution not selected)", slot
    )


def describe(staging: Staging) -> str:
    levels = ", ".join(f"level {i}: {m.value}" for i, m in enumerate(staging.level_modes))
    return f"{levels}; canary {staging.canary_percent}%"
