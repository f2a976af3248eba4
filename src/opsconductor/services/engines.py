"""The one place engines are built, so every entry point runs plans the same way."""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING

from opsconductor.db.connection import Database

if TYPE_CHECKING:  # the engine loads every connector: imported by the first build only
    from opsconductor.engine import Engine, Observer


def build_engine(
    db: Database,
    *,
    actor_id: str,
    worker_id: str | None = None,
    observer: Observer | None = None,
    policy_ttl_s: float = 0.0,
) -> Engine:
    """An engine acting as ``actor_id`` (the process running it: a worker, the API, the
    local shell). The engine always re-checks RBAC before each step on each target, for
    the execution's own actor: that is not an option of this factory or of the engine."""
    from opsconductor.engine import Engine

    return Engine(
        db, actor_id=actor_id, worker_id=worker_id, observer=observer, policy_ttl_s=policy_ttl_s
    )


_SHARED: weakref.WeakKeyDictionary[Database, Engine] = weakref.WeakKeyDictionary()


def shared_engine(db: Database) -> Engine:
    """This process's engine for work run inside requests (the API's fast plans): one per
    process, so its policy cache and concurrency limits cover every request; each run is
    recorded as its caller's (``Engine.run(actor_id=...)``)."""
    if db not in _SHARED:
        _SHARED[db] = build_engine(db, actor_id=f"api:{os.getpid()}")
    return _SHARED[db]
