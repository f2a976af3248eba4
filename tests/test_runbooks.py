"""The SQL the runbooks of docs/runbooks/ tell an operator to run is valid against the
current schema (a renamed column would otherwise leave a runbook wrong mid-incident)."""

from __future__ import annotations

import re

from opsconductor.db.connection import Database
from tests import ops_support as ops


def _queries() -> list[tuple[str, str]]:
    return [
        (page.name, sql)
        for page in sorted(ops.RUNBOOKS.glob("*.md"))
        for sql in re.findall(r"```sql\n(.*?)```", page.read_text(), re.S)
    ]


async def test_every_runbook_query_runs_on_the_schema(db: Database) -> None:
    queries = _queries()
    assert len(queries) >= 6
    async with db.connection() as conn:
        for page, sql in queries:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION READ ONLY")
                cur = await conn.execute(sql)
                assert cur.description, f"{page}: {sql}"  # a query that answers rows
