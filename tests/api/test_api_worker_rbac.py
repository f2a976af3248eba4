"""RBAC enforced twice: a role revoked after submission makes the engine deny the next step,
record an ``rbac_violation`` event and run nothing; approvals need the approve permission."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.api.support import LOCAL, Api, command_plan
from tests.api.test_api_executions import _poll_until_finished
from tests.safety_support import wait_for_file

URL = "/api/v1/executions"


def _revoke(database_url: str, actor: str) -> None:
    """An admin elsewhere revokes the role through the real CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "roles", "revoke", actor, "operator"],
        env={**os.environ, "DATABASE_URL": database_url, "OPSC_TENANT": "acme"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def _revoke_while_step_0_waits(database_url: str, actor: str, work: Path) -> None:
    """Step 0 says it started and waits for the gate; meanwhile its submitter loses the role
    (the submission-time check passed, so only the engine's per-step check can stop step
    1); then the gate opens."""
    await wait_for_file(work / "step-0-started")
    await asyncio.to_thread(_revoke, database_url, actor)
    (work / "gate").touch()


def _step_0(work: Path) -> str:
    started, gate = shlex.quote(str(work / "step-0-started")), shlex.quote(str(work / "gate"))
    return f"echo up > {started}; while [ ! -e {gate} ]; do sleep 0.05; done"


async def test_role_revoked_between_steps_denies_the_next_step(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    await api.add_asset("acme", "stg-1", "staging")
    operator = await api.login("acme", "oscar", "operator")
    work = tmp_path / "work" / "acme"  # the tenant's working directory (local steps)
    marker = work / "step-1-ran"
    plan = command_plan(
        (_step_0(work), "read", LOCAL),
        (f"touch {shlex.quote(str(marker))}", "modify", {"assets": ["stg-1"]}),
    )
    revoking = asyncio.create_task(_revoke_while_step_0_waits(database_url, "oscar", work))
    r = await api.client.post(URL, json=plan, headers=operator)
    await revoking
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["steps"][0]["status"] == "completed", body["steps"][0]
    assert body["status"] == "failed"
    denied = body["steps"][1]
    assert denied["status"] == "failed"
    assert denied["error"] == (
        "denied by RBAC: actor 'oscar': holds no role, so may not modify steps on 'staging' targets"
    )
    assert not marker.exists()  # nothing ran

    admin = await api.login("acme", "ada", "admin")
    events = (await api.client.get(f"{URL}/{body['id']}/events", headers=admin)).json()
    violations = [e for e in events["events"] if e["event_type"] == "rbac_violation"]
    assert len(violations) == 1
    assert violations[0]["payload"] == {
        "actor": "oscar",
        "step_index": 1,
        "step": "step 1",
        "action_class": "modify",
        "target": "stg-1",
        "environment": "staging",
        "reason": "actor 'oscar': holds no role, so may not modify steps on 'staging' targets",
    }
    started = [e for e in events["events"] if e["event_type"] == "step_started"]
    assert [e["payload"]["step_index"] for e in started] == [0]


async def test_background_executions_get_the_same_per_step_check(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    operator = await api.login("acme", "olga", "operator")
    work = tmp_path / "work" / "acme"
    # Ten steps estimate 10 s: background mode, queued and run by a worker, not this request.
    plan = command_plan(
        (_step_0(work), "read", LOCAL), *[(f"echo {i}", "read", LOCAL) for i in range(9)]
    )
    r = await api.client.post(URL, json=plan, headers=operator)
    assert r.status_code == 202, r.text
    await _revoke_while_step_0_waits(database_url, "olga", work)
    admin = await api.login("acme", "ada", "admin")
    finished = await _poll_until_finished(api, admin, r.json()["id"])
    assert finished["status"] == "failed"
    kinds = [e["event_type"] for e in finished["events"]]
    assert kinds.count("rbac_violation") == 1
    assert kinds.count("step_started") == 1  # only the step that waited for the revoke ran


async def test_approval_needs_the_approve_permission_and_another_person(api: Api) -> None:
    alice = await api.login("acme", "alice", "operator", "approver")
    oscar = await api.login("acme", "oscar", "operator")
    bob = await api.login("acme", "bob", "approver")
    plan = command_plan(("echo approved", "read", LOCAL), approval_level=2)
    created = (await api.client.post(URL, json=plan, headers=alice)).json()
    assert created["status"] == "pending_approval"
    ident, digest = created["id"], created["plan_hash"]

    r = await api.client.post(f"{URL}/{ident}/approve", json={"plan_hash": digest}, headers=oscar)
    assert r.status_code == 403  # operators may not approve
    r = await api.client.post(f"{URL}/{ident}/approve", json={"plan_hash": digest}, headers=alice)
    assert r.status_code == 403
    assert r.json()["code"] == "self_approval"
    r = await api.client.post(f"{URL}/{ident}/approve", json={"plan_hash": "0" * 64}, headers=bob)
    assert r.status_code == 409
    assert r.json()["code"] == "hash_mismatch"

    r = await api.client.post(f"{URL}/{ident}/approve", json={"plan_hash": digest}, headers=bob)
    assert r.status_code == 200, r.text
    finished = await _poll_until_finished(api, bob, ident)
    assert finished["status"] == "completed"
    detail = (await api.client.get(f"{URL}/{ident}", headers=bob)).json()
    assert detail["steps"][0]["output"].strip() == "approved"


async def test_reject_needs_a_comment_and_ends_the_execution(api: Api) -> None:
    alice = await api.login("acme", "alice", "operator")
    bob = await api.login("acme", "bob", "approver")
    plan = command_plan(("echo never", "read", LOCAL), approval_level=1)
    ident = (await api.client.post(URL, json=plan, headers=alice)).json()["id"]
    r = await api.client.post(f"{URL}/{ident}/reject", json={}, headers=bob)
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == "body.comment"
    r = await api.client.post(f"{URL}/{ident}/reject", json={"comment": "not today"}, headers=bob)
    assert r.status_code == 200
    assert r.json()["status"] == "rejected"
