"""Tenants never reach the control plane unless the installation lets them: local execution
is a capability, off for every tenant, granted by the installation's administrator only.

Attack: a tenant's operator runs a command (or a script, or a file copy) on the built-in
``localhost`` asset, which used to run as the server's own user and read every tenant's
data out of PostgreSQL. Without the capability nothing of it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from opsconductor import rbac
from opsconductor.api.app import create_app
from opsconductor.db import auth, connectors
from opsconductor.db.connection import Database
from opsconductor.errors import PermissionDenied
from opsconductor.services import inventory
from opsconductor.services.caller import AuthMethod, Caller
from opsconductor.status_machine import Status
from opsconductor.worker import WorkerOptions
from tests.security.local_support import LOCAL, command, run, tenant


def _steps(kind: str, marker: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """One local step of each kind, each of which would leave ``marker`` had it run."""
    base = {"name": kind, "action_class": "modify", "targets": LOCAL, "timeout_s": 30}
    if kind == "command":
        return [command(f"touch {marker}; psql -h /var/run/postgresql -U postgres -l")]
    if kind == "script":
        return [{**base, "type": "script", "script": f"touch {marker}\n"}]
    if kind == "file":
        src = tmp_path / "files" / "tb" / "payload"
        src.parent.mkdir(parents=True)
        src.write_text("x")
        return [{**base, "type": "file", "src": "payload", "dest": str(marker)}]
    return [
        {
            **base,
            "type": "file",
            "direction": "fetch",
            "src": "/etc/hostname",
            "dest": "{{ asset.id }}",
        }
    ]


@pytest.mark.parametrize("kind", ["command", "script", "file", "fetch"])
async def test_a_tenant_without_the_capability_runs_nothing_on_localhost(
    db: Database, tmp_path: Path, kind: str
) -> None:
    await tenant(db, "tb", local=False)
    marker = tmp_path / "ran"
    ran = await run(db, "tb", *_steps(kind, marker, tmp_path))

    assert ran.status is Status.FAILED
    assert ran.reason is not None
    assert "local execution is not enabled for tenant 'tb'" in ran.reason
    assert "opsc tenant local-exec on --tenant tb" in ran.reason  # how to enable it
    assert [r.status for r in ran.rows] == ["skipped"]  # refused before anything ran
    assert not marker.exists()
    assert not (tmp_path / "files" / "tb" / "localhost").exists()  # nothing fetched


async def test_the_refusal_is_also_per_step_when_a_plan_mixes_targets(db: Database) -> None:
    """Defence in depth: the connector refuses by itself too, naming the step."""
    from opsconductor.config import load_settings
    from opsconductor.connectors.access import TenantAccess
    from opsconductor.connectors.session import Connectors
    from opsconductor.inventory import Asset
    from opsconductor.plan import parse_plan

    step = parse_plan({"name": "p", "steps": [command("id")]}).steps[0]
    settings = connectors.TenantSettings(record_only=False, host_key_policy="strict")
    session = Connectors(
        connectors.KnownHosts(db, "tb", "strict", "op"),
        access=TenantAccess.of(load_settings(), "tb", settings),
    )
    localhost = Asset("localhost", "localhost", "127.0.0.1", "local")
    outcome = await session.execute(step, localhost, where="steps[0]", timeout_s=10)
    assert outcome.status == "failed"
    assert (outcome.error or "").startswith("steps[0]: local execution is not enabled")


async def test_a_tenant_admin_cannot_grant_it_over_the_api(db: Database) -> None:
    await tenant(db, "tb", local=False)
    async with db.transaction() as conn:
        made = await auth.create_token(conn, "tb", "boss")
        await auth.grant(conn, "tb", "boss", "admin", granted_by="test")
    headers = {"Authorization": f"Bearer {made.token}"}
    app = create_app(db, workers=WorkerOptions(concurrency=1, poll_s=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for body in ({"local_execution": True}, {"local_network": True}):
                r = await client.patch("/api/v1/tenant", json=body, headers=headers)
                assert r.status_code == 422, r.text  # no such setting for tenants
            shown = (await client.get("/api/v1/tenant", headers=headers)).json()
            spec = (await client.get("/api/v1/openapi.json")).json()
    assert (shown["local_execution"], shown["local_network"]) == (False, False)
    # No request body of the API can carry the capability, no route is about it.
    for name, schema in spec["components"]["schemas"].items():
        if not name.endswith("Out"):
            assert not {"local_execution", "local_network"} & set(schema.get("properties", {}))
    assert not [path for path in spec["paths"] if "local" in path]
    async with db.connection() as conn:
        assert not (await connectors.tenant_settings(conn, "tb")).local_execution


async def test_the_service_grants_it_to_the_local_administrator_only(db: Database) -> None:
    await tenant(db, "tb", local=False)
    boss = Caller("tb", "boss", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.TOKEN)
    with pytest.raises(PermissionDenied, match="installation's administrator"):
        await inventory.set_local_execution(db, boss, "tb", on=True)
    root = Caller("tb", "local-admin:root", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.LOCAL_ADMIN)
    await inventory.set_local_execution(db, root, "tb", on=True)
    async with db.connection() as conn:
        assert (await connectors.tenant_settings(conn, "tb")).local_execution


def test_opsc_tenant_local_exec_on_and_off_is_recorded(
    cli_env: dict[str, str], database_url: str
) -> None:
    def opsc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opsconductor.cli", *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def row() -> tuple[Any, ...]:
        with psycopg.connect(database_url) as conn:
            found = conn.execute(
                "SELECT local_execution, local_network, local_execution_changed_by, "
                "local_execution_changed_at IS NOT NULL FROM execution.tenants "
                "WHERE tenant_id = 'tb'"
            ).fetchone()
        assert found is not None
        return tuple(found)

    on = opsc("tenant", "local-exec", "on", "--tenant", "tb")
    assert on.returncode == 0, on.stderr
    assert "tenant tb: local execution on (sandboxed as 'opsc-run', without network)" in on.stdout
    assert row()[:2] == (True, False) and row()[2].startswith("local-admin:") and row()[3]
    assert opsc("tenant", "local-exec", "on", "--network", "--tenant", "tb").returncode == 0
    assert row()[:2] == (True, True)
    assert opsc("tenant", "local-exec", "off", "--tenant", "tb").returncode == 0
    assert row()[:2] == (False, False)
    with psycopg.connect(database_url) as conn:
        trail = conn.execute(
            "SELECT actor_id, payload FROM execution.audit_events "
            "WHERE tenant_id = 'tb' AND event_type = 'local_execution_changed' ORDER BY id"
        ).fetchall()
    assert [p for _, p in trail] == [
        {"local_execution": True, "local_network": False},
        {"local_execution": True, "local_network": True},
        {"local_execution": False, "local_network": False},
    ]
    assert all(actor.startswith("local-admin:") for actor, _ in trail)
    bad = opsc("tenant", "local-exec", "maybe")
    assert bad.returncode == 2 and "must be 'on' or 'off'" in bad.stderr


async def test_the_embedded_bootstrap_never_overrides_a_decision(db: Database) -> None:
    """``opsc run`` on a fresh embedded install turns it on for 'default' once; a tenant an
    administrator switched off stays off, and other tenants are never touched."""
    async with db.transaction() as conn:
        await connectors.set_local_execution(conn, "default", "local-admin:root", on=False)
        assert not await connectors.bootstrap_local_execution(conn, "default", "local-admin:x")
        assert not (await connectors.tenant_settings(conn, "default")).local_execution
        await conn.execute("INSERT INTO execution.tenants (tenant_id) VALUES ('fresh')")
        assert await connectors.bootstrap_local_execution(conn, "fresh", "local-admin:x")
        assert not await connectors.bootstrap_local_execution(conn, "fresh", "local-admin:x")


async def test_every_new_tenant_starts_without_it(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO execution.tenants (tenant_id) VALUES ('newcomer')")
        settings = await connectors.tenant_settings(conn, "newcomer")
    assert (settings.local_execution, settings.local_network) == (False, False)
