"""Cancellation: a request any layer can make, and the watcher a running engine
uses to see it within a second.

An execution that has not started (pending approval, approved, queued) is cancelled on the
spot and never runs. A running one gets a *request* (``cancel_requested_by/at``); its engine
polls for it, aborts the running work (SIGTERM, then SIGKILL of the process group), releases
its locks and only then moves it to ``cancelled`` with ``cancelled_by/at`` set.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from opsconductor import bounded
from opsconductor.db import cancels, executions, steps
from opsconductor.db.connection import Database
from opsconductor.errors import Conflict, OpsError, StaleStatus
from opsconductor.status_machine import Status, is_terminal

log = structlog.get_logger("opsconductor.cancellation")

#: How often a running engine checks for a cancel request (the promise is "within 1 s").
CHECK_INTERVAL_S = 0.25

_NOT_STARTED = (Status.PENDING_APPROVAL, Status.APPROVED, Status.QUEUED)


class NotCancellable(Conflict):
    """The execution already ended (HTTP 409)."""


@dataclass(frozen=True)
class CancelOutcome:
    execution_id: uuid.UUID
    #: "cancelled" (it had not started), "requested" (the engine will stop it),
    #: "already_requested"
    result: str
    status: Status


async def request_cancel(
    db: Database, tenant_id: str, execution_id: str, actor_id: str
) -> CancelOutcome:
    """Cancel an execution for ``actor_id``; the one entry point for the CLI and the API."""
    for _ in range(5):  # each pass either decides or saw the status move under it
        async with db.connection() as conn:
            row = await executions.get(conn, tenant_id, execution_id)
        full_id, status = row.id, row.status
        if is_terminal(status):
            raise NotCancellable(f"execution {full_id} already ended: {status}")
        if status in _NOT_STARTED:
            try:
                async with db.transaction() as conn:
                    await executions.transition(
                        conn,
                        full_id,
                        status,
                        Status.CANCELLED,
                        actor_id=actor_id,
                        reason=f"cancelled by {actor_id} before it ran",
                    )
                    await cancels.drop_from_queue(conn, full_id)
                    await steps.skip_pending(conn, full_id)
            except StaleStatus:
                continue
            return CancelOutcome(full_id, "cancelled", Status.CANCELLED)
        async with db.transaction() as conn:
            asked = await cancels.request(conn, full_id, actor_id)
            if asked is None:
                now = await executions.get(conn, tenant_id, str(full_id))
                if now.status is not Status.RUNNING:
                    continue
                return CancelOutcome(full_id, "already_requested", Status.RUNNING)
            await executions.append_event(conn, row, "cancel_requested", actor_id, {})
        return CancelOutcome(full_id, "requested", Status.RUNNING)
    raise StaleStatus(f"execution {execution_id} kept changing status; try again")


class CancelWatcher:
    """Polls the execution's row while it runs; calls ``on_cancel(actor)`` once when asked,
    ``on_deadline()`` once the execution budget is spent. Every poll is a counted check."""

    def __init__(
        self,
        db: Database,
        execution_id: uuid.UUID,
        *,
        deadline: Callable[[], float],
        on_cancel: Callable[[str], None],
        on_deadline: Callable[[], None],
        interval_s: float = CHECK_INTERVAL_S,
        first_check_s: float = 0.0,
    ) -> None:
        self.db = db
        self.execution_id = execution_id
        self.deadline = deadline
        self.on_cancel = on_cancel
        self.on_deadline = on_deadline
        self.interval_s = interval_s
        #: when the caller has just read the row (and acted on a request in it), the first
        #: check can wait one interval: the promise stays "seen within a second", and a
        #: short execution then ends without a check it did not need
        self.first_check_s = first_check_s
        self._helper: bounded.Deferred | None = None
        #: ends the watch even if its cancellation is swallowed (see bounded.py)
        self._stopping = asyncio.Event()

    def start(self) -> None:
        first = 0.0
        if self.first_check_s > 0:
            first = min(self.first_check_s, max(0.0, self.deadline() - time.monotonic()))
        self._helper = bounded.Deferred(first, self._watch)

    async def stop(self) -> None:
        """Bounded: a watch that does not stop must not hold the execution's end back."""
        if self._helper is not None:
            await self._helper.stop(self._stopping, what="cancel watcher")

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            if time.monotonic() >= self.deadline():
                self.on_deadline()
                return
            try:
                row = await cancels.check(self.db.batch, self.execution_id)
            except OpsError as exc:  # a short outage must not kill the run; try again
                log.warning("cancel_check_failed", error=str(exc))
                row = None
            if row is not None and row["cancel_requested_by"] is not None:
                self.on_cancel(str(row["cancel_requested_by"]))
                return
            await bounded.sleep_unless(self._stopping, self.interval_s)
