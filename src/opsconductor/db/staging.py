"""Storage of a tenant's staged enablement (``tenant_staging``) and its audited change."""

from __future__ import annotations

from opsconductor.db import audit, queries
from opsconductor.db.connection import Conn
from opsconductor.staging import LevelMode, Staging

Q = queries.load("staging")


async def get(conn: Conn, tenant_id: str) -> Staging:
    """The tenant's staging; everything real when nobody ever staged it."""
    cur = await conn.execute(Q["get"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    if row is None:
        return Staging()
    a, b, c, d = (LevelMode(m) for m in row["level_modes"])
    return Staging((a, b, c, d), int(row["canary_percent"]))


async def change(
    conn: Conn,
    tenant_id: str,
    actor_id: str,
    *,
    level: int | None = None,
    mode: LevelMode | None = None,
    canary: int | None = None,
) -> Staging:
    """Change one level's mode and/or the canary share; the ``staging_changed`` audit event
    (before and after) in the same transaction. Run it in a transaction."""
    await conn.execute(Q["lock"], {"tenant_id": tenant_id})
    before = await get(conn, tenant_id)
    after = before
    if level is not None and mode is not None:
        after = after.with_level(level, mode)
    if canary is not None:
        after = after.with_canary(canary)
    if after == before:
        return after  # nothing changed: no event
    await conn.execute(
        Q["put"],
        {
            "tenant_id": tenant_id,
            "level_modes": [m.value for m in after.level_modes],
            "canary_percent": after.canary_percent,
            "actor_id": actor_id,
        },
    )
    await audit.record(
        conn,
        tenant_id,
        actor_id,
        "staging_changed",
        {"before": _payload(before), "after": _payload(after)},
    )
    return after


def _payload(staging: Staging) -> dict[str, object]:
    return {
        "level_modes": [m.value for m in staging.level_modes],
        "canary_percent": staging.canary_percent,
    }
