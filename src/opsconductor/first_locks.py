"""The assets a run's first asset lock takes, worked out at enqueue. Pure.

Stored with the queue row (migration 0042): the claim leaves new work whose first hosts
another run holds in the queue, instead of handing it to a worker slot that would only
wait for the lock (and fail ``asset_locked`` after ``lock_wait_s``). It must say what
``engine/core.py`` takes first: with ``lock: execution`` every target of every step but
the validate steps, at once; else the targets of the first step that touches an asset (a
validate step touches none), in a rolling update (``serial``) only those of the first
batch. None: no asset is locked, or not known; the claim then filters nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opsconductor import rollout

if TYPE_CHECKING:  # the queue's enqueue needs no plan model at import
    from opsconductor.plan import Plan


def first_locks(plan: Plan, targets: Sequence[Sequence[str]]) -> tuple[str, ...] | None:
    """The asset ids, sorted, once each; ``targets``: each step's asset ids, in step order
    (a plan snapshot's ``targets``)."""
    locking = [t for s, t in zip(plan.steps, targets, strict=True) if s.type != "validate"]
    if plan.lock == "execution":
        held = {a for t in locking for a in t}
    elif plan.serial is not None:
        hosts = rollout.hosts_of(targets)
        batch = set(rollout.batches(plan.serial, hosts)[0]) if hosts else set()
        held = next((got for t in locking if (got := batch.intersection(t))), set())
    else:
        held = set(next((t for t in locking if t), ()))
    return tuple(sorted(held)) or None
