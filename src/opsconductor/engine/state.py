"""What one run of an execution knows while it runs: the plan, its targets, its deadline,
its masker, why it was aborted, where a resumed run picks up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from opsconductor import logs, policies, pushed_files, rbac
from opsconductor.connectors.session import Connectors
from opsconductor.db import queue
from opsconductor.engine.ending import Ending
from opsconductor.inventory import Asset
from opsconductor.masking import Masker
from opsconductor.plan import Plan
from opsconductor.records import Execution
from opsconductor.status_machine import StepStatus

#: Attempt statuses that let a step count as done (skipped: record-only mode).
DONE = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})

#: Recorded on an attempt that was in flight when its worker died.
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class StepEvent:
    """Progress notice for displays: one step attempt on one target started or finished."""

    step_index: int
    step_name: str
    asset_id: str
    status: StepStatus
    attempt: int
    detail: str | None = None
    #: no further attempt follows on this target
    final: bool = False


Observer = Callable[[StepEvent], None]


@dataclass(frozen=True)
class ResumePoint:
    """What a resumed execution does on one target of one step."""

    #: attempt number to start at (the pending one, or the one after the last recorded)
    next_attempt: int
    #: final status if this target needs nothing more, else None
    outcome: StepStatus | None = None
    #: attempts cut short by a dead worker: they do not spend the step's retries
    interrupted: int = 0


FRESH = ResumePoint(next_attempt=1)


@dataclass(frozen=True)
class Attempt:
    """How one attempt of a step on a target ended."""

    status: StepStatus
    exit_code: int | None = None
    output: str = ""
    stderr: str = ""
    error: str | None = None


class Parked(Exception):
    """A level 3 step waits for a person: stop here, hand the execution back to the queue."""


@dataclass
class Run:
    execution: Execution
    plan: Plan
    targets: list[list[Asset]]
    deadline: float
    matrix: policies.PolicyMatrix
    #: the connectors of this execution (open SSH connections, HTTP clients, record-only)
    connectors: Connectors
    deadline_hit: bool = False
    #: how each target of each finished step ended (a ``StepStatus`` value), by step index
    #: and asset id
    results: dict[int, dict[str, str]] = field(default_factory=dict)
    #: the execution's masker, swapped for a richer one as secrets are resolved
    cell: logs.MaskerCell = field(default_factory=logs.MaskerCell)
    #: set to stop all running work: cancel request, execution timeout, lost lock
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    abort_kind: str | None = None
    cancelled_by: str | None = None
    #: why a step failed as a whole (asset_locked, missing secret), for the verdict
    step_failure: str | None = None
    #: resolved secret values by path, per step, only while the step runs
    secrets: dict[int, dict[str, str]] = field(default_factory=dict)
    #: resolved SSH credentials of the running step's targets, by reference
    credentials: dict[str, str] = field(default_factory=dict)
    #: background work holds a queue lease; its end is recorded only while the lease holds
    lease: queue.Lease | None = None
    #: where a resumed execution picks up, by (step index, asset id); empty on a fresh run
    resume: dict[tuple[int, str], ResumePoint] = field(default_factory=dict)
    #: approved SHA-256 of every pushed source (from the snapshot): nothing else is pushed
    files: pushed_files.Digests = field(default_factory=dict)
    #: who runs it, as recorded in its events (a worker, the API's caller, the local shell)
    actor_id: str = ""
    #: a resumed execution: what interrupted it and how long it waited (verdict.recovery)
    recovery: str | None = None
    #: a rolling update (``serial``) runs each step on these hosts only (the batch's hosts
    #: still healthy); None: every target of the step
    only: frozenset[str] | None = None
    #: the last attempt's result and locks, held back to be written with the end
    ending: Ending = field(default_factory=Ending)
    #: per step, the secret paths its fields reference (engine/known_plans.py; Engine._load
    #: sets it for every run)
    secret_paths: tuple[tuple[str, ...], ...] = ()
    #: the actor's roles, read while a step's lock was taken, for that step's first RBAC
    #: check (engine/roles_ahead.py): (step index, the read)
    roles_ahead: tuple[int, asyncio.Task[list[rbac.Role]]] | None = None

    @property
    def id(self) -> uuid.UUID:
        return self.execution.id

    @property
    def tenant_id(self) -> str:
        return self.execution.tenant_id

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def masker(self) -> Masker:
        return self.cell.masker

    def point(self, index: int, asset_id: str) -> ResumePoint:
        return self.resume.get((index, asset_id), FRESH)

    def step_targets(self, index: int) -> list[Asset]:
        """The targets a step runs on now: all of them, or those of the current batch."""
        if self.only is None:
            return self.targets[index]
        return [a for a in self.targets[index] if a.asset_id in self.only]

    def unfinished(self, index: int) -> list[Asset]:
        """Targets of a step that still need a run (all of them, unless resumed)."""
        return [
            a for a in self.step_targets(index) if self.point(index, a.asset_id).outcome is None
        ]

    def abort_with(self, kind: str, actor: str | None = None) -> None:
        if self.abort.is_set():
            return  # the first reason wins
        self.abort_kind, self.cancelled_by = kind, actor
        if kind == "timeout":
            self.deadline_hit = True
        self.abort.set()

    @property
    def abort_status(self) -> StepStatus:
        """Status of an attempt stopped by the abort."""
        return StepStatus.TIMEOUT if self.abort_kind == "timeout" else StepStatus.CANCELLED

    @property
    def abort_message(self) -> str:
        if self.abort_kind == "cancelled":
            return f"cancelled by {self.cancelled_by}"
        if self.abort_kind == "timeout":
            return "execution timeout reached"
        return f"aborted: {self.abort_kind}"
