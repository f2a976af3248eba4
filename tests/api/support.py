"""Helpers of the API tests: a client bound to the app, tokens with roles, plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from opsconductor.db import assets, auth
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from tests.conftest import allow_local


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    db: Database

    async def login(self, tenant: str, actor: str, *roles: str) -> dict[str, str]:
        """Headers of a fresh token for ``actor`` holding ``roles`` in ``tenant``. The API
        tests run their plans on local assets, so the tenant gets the local execution
        capability here, as an installation admin would grant it (``opsc tenant local-exec
        on``); tests/security/ shows what a tenant without it can and cannot do."""
        async with self.db.transaction() as conn:
            await assets.ensure_tenant(conn, tenant)
            await allow_local(conn, tenant)
            made = await auth.create_token(conn, tenant, actor)
            for role in roles:
                await auth.grant(conn, tenant, actor, role, granted_by="test")
        return {"Authorization": f"Bearer {made.token}"}

    async def add_asset(self, tenant: str, asset_id: str, environment: str) -> None:
        async with self.db.connection() as conn:
            await assets.ensure_tenant(conn, tenant)
            await assets.add(
                conn,
                tenant,
                Asset(asset_id, asset_id, "127.0.0.1", environment, tags={"env": environment}),
            )


def command_plan(
    *steps: tuple[str, str, dict[str, Any]], name: str = "plan", approval_level: int = 0
) -> dict[str, Any]:
    """A plan of command steps: (command, action_class, targets) each."""
    return {
        "name": name,
        "approval_level": approval_level,
        "steps": [
            {
                "name": f"step {i}",
                "type": "command",
                "action_class": action,
                "targets": targets,
                "command": command,
                "timeout_s": 30,
            }
            for i, (command, action, targets) in enumerate(steps)
        ],
    }


LOCAL = {"hostnames": ["localhost"]}
