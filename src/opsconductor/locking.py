"""The per-asset mutex: lease locks taken in sorted order, waited for up to a
bound, kept alive by a heartbeat, released on every exit path, reaped when their holder dies.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from opsconductor import bounded, metrics
from opsconductor.config import Settings
from opsconductor.db import executions, locks
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import OpsError

log = structlog.get_logger("opsconductor.locking")


#: Tries to release locks after database errors, 0.5 s apart (10 s in all).
RELEASE_TRIES = 20


class AssetLocked(OpsError):
    """Another execution held an asset for longer than we may wait."""

    reason = "asset_locked"


class LockWaitAborted(OpsError):
    """The execution was cancelled or timed out while waiting for a lock."""


@dataclass(frozen=True)
class LockSettings:
    #: lease length; a holder that stops heart-beating loses the lock this long after
    ttl_s: float = 30.0
    #: how long a step waits for a held asset before it fails with ``asset_locked``
    wait_s: float = 30.0
    #: how often a waiter tries again
    poll_s: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> LockSettings:
        return cls(ttl_s=settings.lock_ttl_s, wait_s=settings.lock_wait_s)

    @property
    def heartbeat_s(self) -> float:
        return self.ttl_s / 3


def owner_tag(execution_id: uuid.UUID, worker_id: str | None) -> str:
    """``execution:worker``: which execution holds the lock, and in which process."""
    return f"{execution_id}:{worker_id or f'{os.uname().nodename}/{os.getpid()}'}"


def describe(asset_id: str, row: dict[str, Any] | None) -> str:
    if row is None:
        return f"asset {asset_id!r} was held by another execution"
    return (
        f"asset {asset_id!r} is held by {row['owner_tag']} "
        f"(lease until {row['expires_at']:%H:%M:%S})"
    )


class LeaseHold:
    """``async with LeaseHold(...)``: hold the locks of some assets for the block's duration.

    Assets are taken one by one in sorted order, so two holders wanting overlapping sets can
    never wait for each other in a cycle. ``on_lost`` is called (from the heartbeat) if a lease
    was taken over, which only happens when our heartbeats stopped for longer than the TTL.
    """

    def __init__(
        self,
        db: Database,
        tenant_id: str,
        asset_ids: list[str],
        *,
        owner: str,
        execution_id: uuid.UUID | None,
        settings: LockSettings,
        abort: asyncio.Event | None = None,
        on_lost: Callable[[set[str]], None] | None = None,
        hand_off: Callable[[LeaseHold], bool] | None = None,
    ) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.asset_ids = sorted(set(asset_ids))
        self.owner = owner
        self.execution_id = execution_id
        self.settings = settings
        self.abort = abort or asyncio.Event()
        self.on_lost = on_lost or (lambda _lost: None)
        #: at a normal exit, may someone else let go of the locks (True: they took them)?
        self.hand_off = hand_off
        self.held: list[str] = []
        self.waited_s = 0.0
        #: some asset was held by someone else at the first try (the lease waited for it)
        self.waited = False
        self._heartbeat: bounded.Deferred | None = None
        #: tells the heartbeat to end even if its cancellation is swallowed (bounded.py)
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> LeaseHold:
        started = time.monotonic()
        try:
            for asset_id in self.asset_ids:
                await self._take(asset_id, started)
        except BaseException:
            await asyncio.shield(self.release())
            raise
        self.waited_s = time.monotonic() - started
        metrics.LOCK_WAIT.observe(self.waited_s)
        self._heartbeat = bounded.Deferred(self.settings.heartbeat_s, self._beat)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Bounded: a heartbeat that does not stop must not keep the execution (and its
        # queue lease, renewed meanwhile) alive after its step ended.
        if self._heartbeat is not None:
            await self._heartbeat.stop(self._stopping, what="lock heartbeat")
        if exc_type is None and self.held and self.hand_off is not None and self.hand_off(self):
            return  # released by the run's end, in its statement (engine/ending.py)
        await asyncio.shield(self.release())

    async def _take(self, asset_id: str, started: float) -> None:
        while True:
            if await locks.try_acquire(
                self.db.batch,
                self.tenant_id,
                asset_id,
                owner_tag=self.owner,
                execution_id=self.execution_id,
                ttl_s=self.settings.ttl_s,
            ):
                self.held.append(asset_id)
                return
            self.waited = True
            if time.monotonic() - started >= self.settings.wait_s:
                async with self.db.connection() as conn:
                    row = await locks.holder(conn, self.tenant_id, asset_id)
                    raise AssetLocked(
                        f"asset_locked: {describe(asset_id, row)}; gave up after "
                        f"{self.settings.wait_s:g} s"
                    )
            if await bounded.sleep_unless(self.abort, self.settings.poll_s):
                raise LockWaitAborted(f"stopped waiting for asset {asset_id!r}")

    async def _beat(self) -> None:
        due = True  # the first beat: bounded.Deferred waited for it
        while due or not await bounded.sleep_unless(self._stopping, self.settings.heartbeat_s):
            due = False
            if self._stopping.is_set():
                return
            try:
                # One beat may not outlast the next: a hung statement is given up.
                async with asyncio.timeout(self.settings.heartbeat_s):
                    async with self.db.connection() as conn:
                        kept = await locks.heartbeat(
                            conn,
                            self.tenant_id,
                            self.held,
                            owner_tag=self.owner,
                            ttl_s=self.settings.ttl_s,
                        )
            except (OpsError, TimeoutError) as exc:  # keep trying: the lease outlives it
                log.warning("lock_heartbeat_failed", error=repr(exc), owner=self.owner)
                continue
            if self._stopping.is_set():
                return
            lost = set(self.held) - kept
            if lost:
                log.error("lock_lost", assets=sorted(lost), owner=self.owner)
                self.on_lost(lost)
                return

    async def release(self) -> None:
        """Let go; after a database error try again for a while (bounded), so a short
        outage does not leave the assets locked until the TTL for everyone waiting."""
        if not self.held:
            return
        for attempt in range(RELEASE_TRIES):
            try:
                await locks.release(self.db.batch, self.tenant_id, self.held, owner_tag=self.owner)
                break
            except OpsError as exc:
                if attempt == RELEASE_TRIES - 1:
                    raise
                log.warning("lock_release_failed", error=str(exc), owner=self.owner)
                await asyncio.sleep(0.5)
        self.held = []


async def reap(db: Database, actor_id: str = "reaper") -> list[dict[str, Any]]:
    """Delete expired locks (their holder died or hung) and note it on each execution."""
    async with db.transaction() as conn:
        return await reap_in(conn, actor_id)


async def reap_in(conn: Conn, actor_id: str) -> list[dict[str, Any]]:
    """``reap`` inside the caller's transaction; also frees the locks of dead workers."""
    reaped = await locks.reap_expired(conn)
    for row in reaped:
        if row["execution_id"] is not None:
            await executions.append_event(
                conn,
                {"id": row["execution_id"], "tenant_id": row["tenant_id"]},
                "lock_reaped",
                actor_id,
                {
                    "asset": row["asset_id"],
                    "owner_tag": row["owner_tag"],
                    "cause": "worker crash" if row["holder_died"] else "lease expiry",
                },
            )
    for row in reaped:
        log.warning("lock_reaped", asset=row["asset_id"], owner=row["owner_tag"])
    return reaped
