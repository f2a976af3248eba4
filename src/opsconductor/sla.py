"""SLA violation alerts: an execution past its SLA class budget gets one
``sla_violation`` event (streamed like any other) and counts in ``opsc_sla_violations``.

Every API process sweeps; the compare-and-set in ``flag_violations`` makes the alert
exactly-once however many sweep at the same moment.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from opsconductor import metrics, routing
from opsconductor.config import load_settings
from opsconductor.db import sla_violations
from opsconductor.db.connection import Database
from opsconductor.db.notify import still_wanted
from opsconductor.errors import DatabaseError

log = structlog.get_logger("opsconductor.sla")

#: Budgets of the classes routing defines by duration; ``long`` has none of
#: its own, so its budget is the policy matrix's longest execution timeout for long plans.
FAST_BUDGET_S = routing.FAST_BELOW_S
MEDIUM_BUDGET_S = routing.LONG_ABOVE_S
SWEEP_S = 1.0


async def sweep(
    db: Database, *, fast_s: float = FAST_BUDGET_S, medium_s: float = MEDIUM_BUDGET_S
) -> list[dict[str, Any]]:
    """Flag every execution newly past its budget; returns what was flagged."""
    async with db.connection() as conn:
        flagged = await sla_violations.flag_violations(conn, fast_s, medium_s)
    for row in flagged:
        metrics.SLA_FLAGGED.inc()
        log.warning(
            "sla_violation",
            execution_id=str(row["execution_id"]),
            tenant_id=row["tenant_id"],
            **row["payload"],
        )
    return flagged


async def watch(db: Database, period_s: float | None = None) -> None:
    """Sweep forever (a task of the API's lifespan); a database outage only delays alerts."""
    period = period_s or load_settings().sla_sweep_s
    while True:
        still_wanted()
        try:
            await sweep(db)
        except DatabaseError as exc:
            still_wanted()
            log.warning("sla sweep failed", error=str(exc))
        await asyncio.sleep(period)
