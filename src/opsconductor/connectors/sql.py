"""SQL steps against PostgreSQL with psycopg.

``read`` steps run in a READ ONLY transaction, so even a mistaken UPDATE in a read step
is refused by the server. Other steps run in one transaction that is committed only when
the ``expect.rows`` guard holds: an UPDATE that would touch more rows than planned is
rolled back, not half-applied. ``statement_timeout`` bounds the query on the server side
too, so a cancelled step does not leave a query running there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from opsconductor.plan import SqlExpect

#: Rows kept from a result; the stored output is capped at 10 KB anyway.
MAX_ROWS = 1_000


@dataclass(frozen=True)
class SqlResult:
    #: rows returned (a query with a result) or affected (INSERT/UPDATE/DELETE)
    rowcount: int
    rows: list[dict[str, Any]]
    returns_rows: bool
    committed: bool

    def to_json(self) -> str:
        data: Any = self.rows if self.returns_rows else {"rows_affected": self.rowcount}
        return json.dumps(data, default=str)


class RowGuardFailed(Exception):
    """The write touched another number of rows than ``expect.rows``: rolled back."""


async def run_query(
    dsn: str,
    query: str,
    params: dict[str, Any],
    *,
    read_only: bool,
    expected_rows: int | None,
    timeout_s: float,
) -> SqlResult:
    """Raises ``psycopg.Error`` for connection and query errors, ``RowGuardFailed``."""
    conn = await psycopg.AsyncConnection.connect(
        dsn, connect_timeout=max(1, int(timeout_s)), row_factory=dict_row
    )
    try:
        await conn.set_read_only(read_only)
        async with conn.transaction(force_rollback=read_only):
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_s * 1000)}",)
            )
            cur = await conn.execute(query.encode(), params or None)
            returns_rows = cur.description is not None
            rows = list(await cur.fetchmany(MAX_ROWS)) if returns_rows else []
            count = cur.rowcount
            if not read_only and expected_rows is not None and count != expected_rows:
                raise RowGuardFailed(f"{count} rows affected, expected {expected_rows}")
        return SqlResult(count, rows, returns_rows, committed=not read_only)
    finally:
        await conn.close()


def failures(expect: SqlExpect | None, result: SqlResult) -> list[str]:
    if expect is None:
        return []
    problems = []
    if expect.rows is not None and result.rowcount != expect.rows:
        problems.append(f"{result.rowcount} rows, expected {expect.rows}")
    if expect.values is not None:
        # Compare as JSON so dates, decimals and the like compare by their text form.
        got = json.loads(json.dumps([list(r.values()) for r in result.rows], default=str))
        if got != expect.values:
            problems.append(f"values {json.dumps(got)[:500]}, expected {json.dumps(expect.values)}")
    return problems
