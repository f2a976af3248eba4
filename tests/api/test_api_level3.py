"""Level 3, step by step, over HTTP with a real worker pool of ONE slot: each step waits in
``awaiting_approval`` off the worker, so other work runs meanwhile; a rejected step ends
the execution ``cancelled``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsconductor.api.app import create_app
from opsconductor.db.connection import Database
from opsconductor.worker import WorkerOptions
from tests.api.support import Api, command_plan

URL = "/api/v1/executions"
LOCAL = {"hostnames": ["localhost"]}


@pytest.fixture
async def one_slot(db: Database) -> AsyncIterator[Api]:
    app = create_app(db, workers=WorkerOptions(concurrency=1, poll_s=0.2, reap_every_s=0.2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, app, db)


async def _until(api: Api, headers: dict[str, str], execution_id: str, check: Any) -> Any:
    for _ in range(300):
        body = (await api.client.get(f"{URL}/{execution_id}", headers=headers)).json()
        if check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting; last: {body['status']} {body.get('steps')}")


def _step_states(body: dict[str, Any], index: int) -> set[str]:
    return {s["status"] for s in body["steps"] if s["step_index"] == index}


async def test_step_by_step_approval_holds_no_worker_slot(one_slot: Api, tmp_path: Path) -> None:
    api = one_slot
    alice = await api.login("acme", "alice", "operator")
    bob = await api.login("acme", "bob", "approver")
    trail = tmp_path / "work" / "acme" / "trail"  # the tenant's working directory
    plan = command_plan(
        (f"echo one >> {trail}", "read", LOCAL),
        (f"echo two >> {trail}", "read", LOCAL),
        name="careful",
        approval_level=3,
    )
    created = await api.client.post(URL, json=plan, headers=alice)
    assert created.status_code == 201, created.text
    execution = created.json()
    assert execution["status"] == "pending_approval" and execution["mode"] == "background"
    eid, digest = execution["id"], execution["plan_hash"]

    r = await api.client.post(f"{URL}/{eid}/approve", json={"plan_hash": digest}, headers=bob)
    assert r.status_code == 200, r.text
    parked = await _until(api, alice, eid, lambda b: _step_states(b, 0) == {"awaiting_approval"})
    assert parked["status"] == "running" and not trail.exists()

    # The single slot is free while a person thinks: other work runs to the end meanwhile.
    other = command_plan(*[(f"echo {i}", "read", LOCAL) for i in range(10)], name="other")
    queued = (await api.client.post(URL, json=other, headers=alice)).json()
    assert queued["status"] == "queued"
    await _until(api, alice, queued["id"], lambda b: b["status"] == "completed")
    assert _step_states((await api.client.get(f"{URL}/{eid}", headers=alice)).json(), 0) == {
        "awaiting_approval"
    }

    wrong = await api.client.post(
        f"{URL}/{eid}/steps/0/approve", json={"plan_hash": "0" * 64}, headers=bob
    )
    assert wrong.status_code == 409 and wrong.json()["code"] == "hash_mismatch"
    ok = await api.client.post(
        f"{URL}/{eid}/steps/0/approve", json={"plan_hash": digest}, headers=bob
    )
    assert ok.status_code == 200, ok.text
    await _until(api, alice, eid, lambda b: _step_states(b, 1) == {"awaiting_approval"})
    assert trail.read_text() == "one\n"  # step 0 ran once, step 1 waits

    no = await api.client.post(
        f"{URL}/{eid}/steps/1/reject", json={"comment": "not today"}, headers=bob
    )
    assert no.status_code == 200, no.text
    final = no.json()
    assert final["status"] == "cancelled"
    assert final["status_reason"] == "step 1 rejected by bob: not today"
    assert _step_states(final, 1) == {"skipped"}
    await asyncio.sleep(0.5)
    assert trail.read_text() == "one\n"  # the rejected step never ran
    events = (await api.client.get(f"{URL}/{eid}/events", headers=alice)).json()
    kinds = [e["event_type"] for e in (events["events"] if isinstance(events, dict) else events)]
    assert kinds.count("step_approval_requested") == 2
    history = [
        (a["step_index"], a["state"], [d["actor_id"] for d in a["decisions"]])
        for a in final["approvals"]
    ]
    assert history == [
        (None, "approved", ["bob"]),
        (0, "approved", ["bob"]),
        (1, "rejected", ["bob"]),
    ]


async def test_an_unanswered_step_approval_expires(one_slot: Api) -> None:
    api = one_slot
    alice = await api.login("acme", "alice", "operator")
    bob = await api.login("acme", "bob", "approver")
    plan = command_plan(("true", "read", LOCAL), name="slow answer", approval_level=3)
    execution = (await api.client.post(URL, json=plan, headers=alice)).json()
    await api.client.post(
        f"{URL}/{execution['id']}/approve",
        json={"plan_hash": execution["plan_hash"]},
        headers=bob,
    )
    await _until(api, alice, execution["id"], lambda b: _step_states(b, 0) == {"awaiting_approval"})
    async with api.db.connection() as conn:
        await conn.execute("UPDATE execution.approvals SET expires_at = now() WHERE step_index = 0")
    ended = await _until(api, alice, execution["id"], lambda b: b["status"] == "cancelled")
    assert ended["status_reason"] == "approval_expired"
    late = await api.client.post(
        f"{URL}/{execution['id']}/steps/0/approve",
        json={"plan_hash": execution["plan_hash"]},
        headers=bob,
    )
    assert late.status_code == 409
