"""Connection pool and the one place where driver errors become ``DatabaseError``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from opsconductor.config import Settings
from opsconductor.db import embedded
from opsconductor.db.batching import Batcher
from opsconductor.errors import DatabaseError

Conn = psycopg.AsyncConnection[dict[str, Any]]

#: Connections of a lane: one serves a single caller (the claim loop); the second lets two
#: callers of one process (tests, a second loop) still run side by side.
LANE_SIZE = 2


def database_url(settings: Settings) -> str:
    """External server if ``DATABASE_URL`` is set, else the embedded one under ``$OPSC_HOME``."""
    return settings.database_url or embedded.start(settings.pgdata, settings.runtime_dir)


class Database:
    """A pool of connections to one database; ``connection()`` lends one out.

    ``lanes``: kinds of statement that get a small pool of their own (``lane(name)``). A
    server connection plans a large statement, and fills its catalog caches for it, at its
    first call: the worker's claim sent over the whole pool paid that on every connection
    of it (about 18 ms of server CPU each), where one connection of its own pays it once.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, lanes: tuple[str, ...] = ()
    ) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[Conn] = self._pool(min_size, max_size)
        self._lanes = {name: self._pool(1, LANE_SIZE) for name in lanes}
        #: the hot statements of concurrent callers, run as one (see batching.py)
        self.batch = Batcher(self.connection)

    def _pool(self, min_size: int, max_size: int) -> AsyncConnectionPool[Conn]:
        return AsyncConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
        )

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=15)
            for lane in self._lanes.values():
                await lane.open(wait=True, timeout=15)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
        except Exception as exc:  # PoolTimeout is not a psycopg.Error
            raise DatabaseError(f"cannot connect to PostgreSQL at {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self.batch.wait_idle()
        await self.pool.close()
        for lane in self._lanes.values():
            await lane.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise DatabaseError(f"database error: {exc}") from exc

    @asynccontextmanager
    async def lane(self, name: str) -> AsyncIterator[Conn]:
        """A connection of the lane ``name``, or of the pool if there is no such lane."""
        lane = self._lanes.get(name)
        if lane is None:
            async with self.connection() as conn:
                yield conn
            return
        try:
            async with lane.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise DatabaseError(f"database error: {exc}") from exc

    async def notifications(self, channel: str) -> AsyncIterator[str]:
        """Payloads sent with NOTIFY on ``channel``, on a connection of their own (a
        listening connection cannot go back to the pool). Yields ``""`` once right after
        LISTEN, so the caller can look for anything sent before it was listening."""
        try:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                yield ""
                async for notify in conn.notifies():
                    yield notify.payload
        except psycopg.Error as exc:
            raise DatabaseError(f"lost the LISTEN connection: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.connection() as conn, conn.transaction():
            yield conn
