"""What the console's job pages read stays inside the caller's tenant: another tenant's job
of the same name is neither its run form, nor its "last run" in the list, nor the run an
approval of ours is compared with (that would leak its params, commands and targets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from opsconductor.api.app import create_app
from opsconductor.db.connection import Database
from opsconductor.worker import WorkerOptions
from tests.api.support import Api

URL = "/api/v1/jobs"


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    app = create_app(db, max_body_bytes=64 * 1024, workers=WorkerOptions(concurrency=2, poll_s=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, app, db)


def _plan(command: str, approval_level: int = 0) -> dict[str, Any]:
    return {
        "name": "Deploy",
        "approval_level": approval_level,
        "params": {"token_path": {"type": "secret-ref", "default": "kv/deploy/token"}},
        "steps": [
            {
                "name": "go",
                "type": "command",
                "action_class": "read",
                "targets": {"hostnames": ["localhost"]},
                "command": command,
            }
        ],
    }


async def test_job_forms_last_runs_and_comparisons_never_cross_tenants(api: Api) -> None:
    acme = await api.login("acme", "alice", "admin")
    globex = await api.login("globex", "gina", "admin")
    theirs = _plan("echo globex-internal-host-list", approval_level=1)
    assert (await api.client.put(f"{URL}/deploy", json=theirs, headers=globex)).status_code == 201
    their_run = await api.client.post(f"{URL}/deploy/runs", json={}, headers=globex)
    assert their_run.status_code == 202, their_run.text

    # Not saved in acme yet: no form, nothing listed.
    assert (await api.client.get(f"{URL}/deploy/form", headers=acme)).status_code == 404
    assert (await api.client.get(URL, headers=acme)).json() == []

    ours = _plan("echo acme", approval_level=1)
    assert (await api.client.put(f"{URL}/deploy", json=ours, headers=acme)).status_code == 201
    [listed] = (await api.client.get(URL, headers=acme)).json()
    assert listed["last_run_id"] is None  # globex's run of its "deploy" is not ours
    form = (await api.client.get(f"{URL}/deploy/form", headers=acme)).json()
    assert form["version"] == 1 and [f["name"] for f in form["fields"]] == ["token_path"]
    # A secret-ref field carries the path of a secret, never a secret's value.
    [secret] = form["fields"]
    assert (secret["control"], secret["default"]) == ("secret_path", "kv/deploy/token")

    our_run = await api.client.post(f"{URL}/deploy/runs", json={}, headers=acme)
    assert our_run.status_code == 202, our_run.text
    inbox = (await api.client.get("/api/v1/approvals", headers=acme)).json()
    [item] = inbox
    assert item["execution"]["id"] == our_run.json()["id"]
    assert item["previous"] is None and item["compared_with"] is None
    assert "globex" not in str(item)
