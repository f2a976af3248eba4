"""SLA violations: flag, once, every execution newly past its class's budget."""

from __future__ import annotations

from typing import Any

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("sla")


async def flag_violations(conn: Conn, fast_s: float, medium_s: float) -> list[dict[str, Any]]:
    cur = await conn.execute(Q["flag_violations"], {"fast_s": fast_s, "medium_s": medium_s})
    return await cur.fetchall()
