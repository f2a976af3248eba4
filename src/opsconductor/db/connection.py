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


def database_url(settings: Settings) -> str:
    """External server if ``DATABASE_URL`` is set, else the embedded one under ``$OPSC_HOME``."""
    return settings.database_url or embedded.start(settings.pgdata, settings.runtime_dir)


class Database:
    """A pool of connections to one database; ``connection()`` lends one out."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
        )
        #: the hot statements of concurrent callers, run as one (see batching.py)
        self.batch = Batcher(self.connection)

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=15)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
        except Exception as exc:  # PoolTimeout is not a psycopg.Error
            raise DatabaseError(f"cannot connect to PostgreSQL at {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self.batch.wait_idle()
        await self.pool.close()

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
