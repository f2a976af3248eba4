"""The approvals inbox stays inside the caller's tenant: another tenant's open approvals are
not listed, its executions of the same plan name are never the "last run" a diff compares
with (that would leak their commands and targets), and a caller without
``executions:view`` is refused by the service itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from opsconductor.api.app import create_app
from opsconductor.db.connection import Database
from opsconductor.errors import PermissionDenied
from opsconductor.services import approvals
from opsconductor.services.caller import AuthMethod, Caller
from opsconductor.worker import WorkerOptions
from tests.api.support import LOCAL, Api, command_plan


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    app = create_app(db, max_body_bytes=64 * 1024, workers=WorkerOptions(concurrency=2, poll_s=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, app, db)


async def test_the_inbox_and_its_diff_never_cross_tenants(api: Api) -> None:
    acme = await api.login("acme", "alice", "admin")
    globex = await api.login("globex", "gina", "admin")
    url = "/api/v1/executions"
    secretive = command_plan(("echo globex-internal-host-list", "read", LOCAL), name="Deploy")
    assert (await api.client.post(url, json=secretive, headers=globex)).status_code == 201
    theirs = command_plan(("echo globex", "read", LOCAL), name="Deploy", approval_level=1)
    assert (await api.client.post(url, json=theirs, headers=globex)).status_code == 201
    ours = command_plan(("echo acme", "read", LOCAL), name="Deploy", approval_level=1)
    waiting = (await api.client.post(url, json=ours, headers=acme)).json()

    [item] = (await api.client.get("/api/v1/approvals", headers=acme)).json()
    assert item["execution"]["id"] == waiting["id"]
    # globex ran a "Deploy" before: it is not acme's previous run
    assert item["previous"] is None and item["diff"] is None
    assert "globex" not in str(item)


async def test_the_inbox_needs_the_view_permission(db: Database) -> None:
    nobody = Caller("default", "nobody", (), AuthMethod.TOKEN)
    with pytest.raises(PermissionDenied):
        await approvals.inbox(db, nobody)
