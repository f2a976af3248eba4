"""Taking work back from dead workers, in about a second.

Every worker holds a life lock (a session-level advisory lock, ``db/workers.py``) for as
long as its process lives; the operating system closes a killed process's connections and
the server frees the lock at once. Every worker runs a reaper round each second: one
statement (``watch``) in which only the round's reaper looks at the life locks. A lock
found free two rounds running names a dead worker; ``sweep`` then, in one transaction,
marks it dead, puts its executions back in the queue (claimed before new work) and frees
its asset locks. Leases stay the fence: whatever a dead-declared worker still tries to
record is refused, because its lease tokens are gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsconductor import locking
from opsconductor.db import queue, workers
from opsconductor.db.connection import Database


@dataclass(frozen=True)
class Swept:
    #: workers declared dead in this sweep
    workers_lost: list[str]
    requeued: int
    dead_lettered: int
    locks_freed: int

    @property
    def anything(self) -> bool:
        return bool(self.workers_lost or self.requeued or self.dead_lettered or self.locks_freed)


async def watch(db: Database, confirm_s: float) -> workers.Watch:
    """The cheap part of a round: one statement, usually touching nothing."""
    async with db.connection() as conn:
        return await workers.watch(conn, queue.REAPER_LOCK_KEY, confirm_s)


async def sweep(db: Database, actor_id: str, dead: list[str]) -> Swept | None:
    """Declare ``dead`` dead (those whose life lock is still free), take back their leases
    and every expired one, free their asset locks and every expired one. ``None`` if
    another reaper holds the reaper lock."""
    async with db.transaction() as conn:
        if not await queue.try_reaper_lock(conn):
            return None
        lost = await workers.declare_dead(conn, dead)
        reaped = await queue.reap_in(conn, actor_id)
        freed = await locking.reap_in(conn, actor_id)
    return Swept(
        workers_lost=[str(row["worker_id"]) for row in lost],
        requeued=reaped.requeued,
        dead_lettered=reaped.dead_lettered,
        locks_freed=len(freed),
    )
