"""Shared test helpers: SSH assets on the lab, running a plan through the real engine."""

from __future__ import annotations

import shutil
import uuid
from typing import Any

import psycopg

from opsconductor.config import load_settings
from opsconductor.db import assets, auth, connectors, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.inventory import Asset
from opsconductor.plan import parse_plan
from opsconductor.records import StepAttempt
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit


def lab_key(lab: Any, tenant: str = "default") -> str:
    """The lab's client key in the tenant's files root (as an admin would put it there with
    ``opsc files put``); its name relative to the root."""
    root = load_settings().files_root / tenant
    root.mkdir(parents=True, exist_ok=True)
    key = root / "lab_ed25519"
    shutil.copyfile(lab.keys.client_key_path, key)
    key.chmod(0o600)
    return key.name


async def add_ssh_assets(
    db: Database,
    lab: Any,
    ports: list[int],
    *,
    tenant: str = "default",
    trust: bool = True,
    credential_ref: str | None = None,
    tags: dict[str, str] | None = None,
    prefix: str = "ssh",
) -> list[Asset]:
    """One asset per port, named ``{prefix}-NN``; its host key trusted unless ``trust`` is
    false. The credential defaults to the lab's client key, copied into the tenant's files
    root (``file:`` credentials are read from there only)."""
    if credential_ref is None:
        credential_ref = f"file:{lab_key(lab, tenant)}"
    added = []
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, tenant)
        for n, port in enumerate(ports):
            asset = Asset(
                asset_id=f"{prefix}-{n:02d}",
                hostname=f"{prefix}-{n:02d}.test",
                address="127.0.0.1",
                port=port,
                environment="test",
                connection_type="ssh",
                username=lab.username,
                credential_ref=credential_ref,
                tags=tags or {"role": prefix},
            )
            added.append(await assets.add(conn, tenant, asset))
            if trust:
                await connectors.add_known_host(
                    conn, tenant, "127.0.0.1", port, lab.keys.host_public, "test"
                )
    return added


async def admin(db: Database, actor: str, tenant: str = "default") -> str:
    """Give ``actor`` the admin role in ``tenant`` (as the local administrator would) and
    return it: the engine re-checks the submitter's roles before every step, always."""
    async with db.transaction() as conn:
        await auth.ensure_actor(conn, tenant, actor)
        await auth.grant(conn, tenant, actor, "admin", granted_by="test")
    return actor


async def run_plan(
    db: Database, plan: dict[str, Any], *, tenant: str = "default", record_only: bool = False
) -> tuple[Status, list[StepAttempt], uuid.UUID]:
    """Submit and run ``plan`` here; its final status, its step rows, its id."""
    request = Request(
        parse_plan(plan), tenant, await admin(db, "tester", tenant), record_only=record_only
    )
    submitted = await submit(db, request)
    execution_id = submitted.execution.id
    status = await Engine(db, actor_id="tester").run(tenant, execution_id)
    async with db.connection() as conn:
        rows = await steps.list_for(conn, execution_id)
    return status, rows, execution_id


def explain_plans(conn: psycopg.Connection[Any], *, analyze: bool = False) -> list[str]:
    """From now on, the plan of every statement ``conn`` runs, nested ones (inside
    functions and triggers) included, by auto_explain; the list fills as they run.
    ``analyze``: with the rows each node read and removed."""
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        f"SET auto_explain.log_analyze = {'on' if analyze else 'off'}",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        "SET client_min_messages = notice",
    ):
        conn.execute(setting)
    return plans
