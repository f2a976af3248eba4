"""``opsc serve --demo`` (``make run``): a demo tenant with an admin token, shown on every start."""

from __future__ import annotations

import stat
from pathlib import Path

from opsconductor.api.server import ensure_demo
from opsconductor.db import auth
from opsconductor.db.connection import Database


async def test_demo_token_is_made_once_then_reused_and_replaced_if_revoked(
    db: Database, tmp_path: Path
) -> None:
    first = await ensure_demo(db, tmp_path)
    assert first.created
    saved = tmp_path / "demo-token"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    async with db.connection() as conn:
        who = await auth.authenticate(conn, first.token)
        assert who is not None and (who.tenant_id, who.actor_id) == ("demo", "demo-admin")
        assert [r.name for r in await auth.roles_of(conn, "demo", "demo-admin")] == ["admin"]

    again = await ensure_demo(db, tmp_path)
    assert (again.token, again.created) == (first.token, False)

    async with db.connection() as conn:
        assert who.token_id is not None
        assert await auth.revoke_token(conn, "demo", str(who.token_id))
    fresh = await ensure_demo(db, tmp_path)
    assert fresh.created and fresh.token != first.token
    assert saved.read_text().strip() == fresh.token
