"""A run's last writes, held back to go with its end in one statement.

The last attempt's result, the release of the asset locks still held and the final status
change were three statements: three round trips, three commits, three calls of the event
triggers, per execution. When the last target of the last step finishes, its result and
then its locks wait here for ``Engine._finish``, which writes them with the end
(``executions.Closing``, one ``end_run`` statement). A run that ends any other way
(cancelled, handed back, an error) writes them apart with ``flush``, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from opsconductor import bounded
from opsconductor.db import steps
from opsconductor.db.connection import Database
from opsconductor.db.executions import Closing
from opsconductor.errors import LeaseLost, NotFound, OpsError, StaleStatus
from opsconductor.locking import LeaseHold

log = structlog.get_logger("opsconductor.engine")

#: What ``executions.transition`` raises after its statement ran (what it carried is written)
ANSWERED = (LeaseLost, StaleStatus, NotFound)


@dataclass
class Ending:
    #: the last attempt's result (a ``steps.finish_item``) not written yet
    attempt: dict[str, Any] | None = None
    #: lock holds whose locks go with the end
    holds: list[LeaseHold] = field(default_factory=list)
    #: targets of the last step still running (only the last of them holds back)
    open: int = 0
    #: the end was written, or given up for ``flush``: a finish now is written at once
    closed: bool = False

    @property
    def pending(self) -> bool:
        return self.attempt is not None or bool(self.holds)

    def last_target(self) -> bool:
        """Is the attempt finishing now the run's last write before its end?"""
        return self.open == 1 and self.attempt is None and not self.closed

    def adopt(self, hold: LeaseHold) -> bool:
        """Keep ``hold``'s locks for the end's statement: only once the last attempt's
        result waits for it (the end follows at once; the lease outlives the wait)."""
        if self.attempt is None:
            return False
        self.holds.append(hold)
        return True

    def closing(self, tenant_id: str) -> Closing:
        locks = [{"asset_id": a, "owner_tag": h.owner} for h in self.holds for a in h.held]
        return Closing(tenant_id, self.attempt, locks)

    async def close(self, end: Coroutine[Any, Any, int]) -> None:
        """Run the end's statement, which carries what was held back (``closing``). Once it
        ran, whatever it answered, nothing of that is written again by ``flush``: also when
        the run is cancelled while it is in flight (it is shielded and waited for, bounded),
        or a step_finished event could be written twice."""
        statement = asyncio.ensure_future(end)
        try:
            await asyncio.shield(statement)
        except asyncio.CancelledError:
            await asyncio.wait({statement}, timeout=bounded.STOP_WITHIN_S)
            if statement.done() and not statement.cancelled():
                failed = statement.exception()
                if failed is None or isinstance(failed, ANSWERED):
                    self.written()
            raise
        except ANSWERED:
            self.written()
            raise
        self.written()

    def written(self) -> None:
        """The end's statement ran: what it carried is written."""
        for hold in self.holds:
            hold.held = []
        self.attempt, self.holds, self.closed = None, [], True

    async def flush(self, db: Database) -> None:
        """Write apart what the end did not take (it was never recorded, or failed)."""
        attempt, holds = self.attempt, self.holds
        self.attempt, self.holds, self.closed = None, [], True
        try:
            if attempt is not None:
                try:
                    await steps.finish_attempt_logged(db.batch, attempt)
                except OpsError as exc:  # the resume finds it running, as after a crash
                    log.warning("last attempt not recorded", id=attempt["id"], error=str(exc))
        finally:
            for hold in holds:
                try:
                    await hold.release()
                except OpsError as exc:  # they expire with their lease (or the reaper)
                    log.warning("locks not released", owner=hold.owner, error=str(exc))
