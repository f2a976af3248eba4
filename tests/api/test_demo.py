"""``opsc serve --demo`` (``make run``): an admin token, shown on every start, in the tenant
the CLI acts in (so runs made from the shell show in the console)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from opsconductor.api.server import ensure_demo
from opsconductor.config import load_settings
from opsconductor.db import auth
from opsconductor.db.connection import Database


async def test_demo_token_is_made_once_then_reused_and_replaced_if_revoked(
    db: Database, tmp_path: Path
) -> None:
    first = await ensure_demo(db, tmp_path, "default")
    assert first.created
    saved = tmp_path / "demo-token"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    async with db.connection() as conn:
        who = await auth.authenticate(conn, first.token)
        assert who is not None and (who.tenant_id, who.actor_id) == ("default", "demo-admin")
        assert [r.name for r in await auth.roles_of(conn, "default", "demo-admin")] == ["admin"]

    again = await ensure_demo(db, tmp_path, "default")
    assert (again.token, again.created) == (first.token, False)

    async with db.connection() as conn:
        assert who.token_id is not None
        assert await auth.revoke_token(conn, "default", str(who.token_id))
    fresh = await ensure_demo(db, tmp_path, "default")
    assert fresh.created and fresh.token != first.token
    assert saved.read_text().strip() == fresh.token


def test_the_demo_token_and_the_cli_share_one_default_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # serve --demo passes settings.tenant; the CLI's local administrator acts in it too.
    monkeypatch.delenv("OPSC_TENANT", raising=False)
    assert load_settings().tenant == "default"
    monkeypatch.setenv("OPSC_TENANT", "ops")
    assert load_settings().tenant == "ops"


async def test_a_token_saved_for_another_tenant_is_replaced(db: Database, tmp_path: Path) -> None:
    """An install that ran the old ``make run`` kept a token of tenant ``demo``: the next
    start makes one in the CLI's tenant instead of showing a console of another tenant."""
    old = await ensure_demo(db, tmp_path, "demo")
    now = await ensure_demo(db, tmp_path, "default")
    assert now.created and now.token != old.token and now.tenant_id == "default"
