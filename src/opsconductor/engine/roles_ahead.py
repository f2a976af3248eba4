"""A step's RBAC check reads the actor's roles while the step's lock is being taken.

The engine checks RBAC again before a step runs on each target, with the actor's roles as
they are at that moment (db/auth.py). Read after the lock was taken, that read was one more
round trip, one after the other, in every run. Read at the same time as the lock, it adds
none. The roles read so serve the step's first check only, and only when the lock was
taken at the first try, i.e. moments after they were read: after a wait for the lock
(another run held the host) they are read again, as they are for every later check.
"""

from __future__ import annotations

import asyncio

from opsconductor import rbac
from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.engine.state import Run


def start(db: Database, run: Run, index: int) -> None:
    """Begin reading the roles for step ``index``'s first check (its lock is being taken)."""
    drop(run)
    read = auth.roles_of(db.batch, run.tenant_id, run.execution.actor_id)
    run.roles_ahead = (index, asyncio.create_task(read))


def take(run: Run, index: int) -> asyncio.Task[list[rbac.Role]] | None:
    """The read begun for step ``index``, once; None if there is none to use."""
    ahead = run.roles_ahead
    if ahead is None or ahead[0] != index:
        return None
    run.roles_ahead = None
    return ahead[1]


def drop(run: Run) -> None:
    """Forget a read not used (the lock was waited for, the step ended before its check)."""
    ahead = run.roles_ahead
    if ahead is None:
        return
    run.roles_ahead = None
    task = ahead[1]
    if not task.done():
        task.cancel()  # a batched read not yet sent is not sent at all (db/batching.py)
    elif not task.cancelled():
        task.exception()  # retrieved: a failed read that nobody used is not an error
