"""An approval covers every byte that runs: a pushed file edited after a level 2 approval
is never deployed under it. Real files, the real engine, real targets (the built-in
``localhost`` asset and an SSH server on loopback).

Pushed files live in the tenant's files root (``files_dir``), where ``opsc files put``
leaves them; a push to ``localhost`` lands in the tenant's working directory (``work_dir``),
the only place the sandboxed copy can write."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor.approvals import ApprovalRefused, Decision, gate
from opsconductor.config import load_settings
from opsconductor.connectors import local, sandbox
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.session import Connectors
from opsconductor.db import auth, connectors, executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import BadInput
from opsconductor.plan import parse_plan
from opsconductor.records import Event, Execution
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import add_ssh_assets
from tests.security.local_support import needs_sandbox

APPROVED = b"worker_processes 4;\n"
EDITED = b"worker_processes 4;\ninclude /tmp/evil.conf;\n"


@pytest.fixture(autouse=True)
async def _roles(db: Database) -> None:
    """alice submits deploys (admin); bob reviews them (approver). The engine checks
    alice's roles again before every step."""
    async with db.transaction() as conn:
        await auth.grant(conn, "default", "alice", "admin", granted_by="test")
        await auth.grant(conn, "default", "bob", "approver", granted_by="test")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _push_plan(
    src: Path | str, dest: Path, *, targets: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": "roll out app.conf",
        "approval_level": 2,
        "steps": [
            {
                "name": "push",
                "type": "file",
                "action_class": "deploy",
                "targets": targets or {"hostnames": ["localhost"]},
                "src": str(src),
                "dest": str(dest),
            }
        ],
    }


async def _submit(db: Database, plan: dict[str, Any], key: str | None = None) -> Execution:
    request = Request(parse_plan(plan), "default", "alice", key or uuid.uuid4().hex)
    return (await submit(db, request)).execution


async def _approve(db: Database, execution: Execution, plan_hash: str) -> None:
    await gate.decide(
        db,
        tenant_id="default",
        execution_id=str(execution.id),
        actor_id="bob",
        decision=Decision.APPROVE,
        reviewed_hash=plan_hash,
    )


async def _row(db: Database, execution: Execution) -> Execution:
    async with db.connection() as conn:
        return await executions.get(conn, "default", str(execution.id))


async def _events(db: Database, execution: Execution, kind: str) -> list[Event]:
    async with db.connection() as conn:
        return [e for e in await executions.events(conn, execution.id) if e.event_type == kind]


async def test_the_plan_hash_and_snapshot_hold_the_file_digest(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    src = files_dir / "app.conf"
    src.write_bytes(APPROVED)
    execution = await _submit(db, _push_plan(src, work_dir / "out.conf"))
    assert execution.plan_snapshot["files"] == {"0": {str(src): _sha(APPROVED)}}
    # Named relative to the files root, as after 'opsc files put': keyed as written.
    relative = await _submit(db, _push_plan("app.conf", work_dir / "out.conf"))
    assert relative.plan_snapshot["files"] == {"0": {"app.conf": _sha(APPROVED)}}


@needs_sandbox
async def test_a_file_changed_after_approval_sends_the_execution_back_for_approval(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    src, dest = files_dir / "app.conf", work_dir / "app.conf"
    src.write_bytes(APPROVED)
    execution = await _submit(db, _push_plan(src, dest))
    approved_hash = execution.plan_hash
    await _approve(db, execution, approved_hash)
    src.write_bytes(EDITED)  # after the review: the attack

    engine = Engine(db, actor_id="worker")
    assert await engine.run("default", execution.id) is Status.PENDING_APPROVAL
    assert not dest.exists()  # nothing was deployed
    row = await _row(db, execution)
    assert row.plan_hash != approved_hash
    assert row.plan_snapshot["files"] == {"0": {str(src): _sha(EDITED)}}
    (invalidated,) = await _events(db, execution, "approval_invalidated")
    assert invalidated.payload["why"] == (
        f"steps[0].src: {src} changed after approval "
        f"(approved sha256 {_sha(APPROVED)[:12]}…, now {_sha(EDITED)[:12]}…)"
    )
    # The old approval cannot be replayed onto the new bytes...
    with pytest.raises(ApprovalRefused, match="not the plan's current hash"):
        await _approve(db, row, approved_hash)
    # ...only a review of the new hash lets them run.
    await _approve(db, row, row.plan_hash)
    assert await engine.run("default", execution.id) is Status.COMPLETED
    assert dest.read_bytes() == EDITED


async def test_a_tenant_may_cancel_instead_and_nothing_is_deployed(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.tenants SET on_approval_invalidated = 'cancel'")
    src, dest = files_dir / "app.conf", work_dir / "app.conf.deployed"
    src.write_bytes(APPROVED)
    os.makedirs(work_dir)
    dest.write_bytes(b"what ran before\n")
    execution = await _submit(db, _push_plan(src, dest))
    await _approve(db, execution, execution.plan_hash)
    src.write_bytes(EDITED)
    assert await Engine(db, actor_id="worker").run("default", execution.id) is Status.CANCELLED
    assert dest.read_bytes() == b"what ran before\n"
    row = await _row(db, execution)
    assert row.status_reason == "approval_invalidated"


async def test_a_file_deleted_after_approval_cancels_rather_than_waiting(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    src, dest = files_dir / "app.conf", work_dir / "app.conf.deployed"
    src.write_bytes(APPROVED)
    execution = await _submit(db, _push_plan(src, dest))
    await _approve(db, execution, execution.plan_hash)
    src.unlink()
    # No new hash can be formed (nothing to review), so even 'reapprove' tenants cancel,
    # exactly as when the targets no longer resolve.
    assert await Engine(db, actor_id="worker").run("default", execution.id) is Status.CANCELLED
    (invalidated,) = await _events(db, execution, "approval_invalidated")
    assert invalidated.payload["why"].startswith(f"steps[0].src: cannot read {src}")
    assert not dest.exists()


async def test_a_file_changed_while_the_execution_runs_fails_the_push_before_any_copy(
    db: Database, ssh_lab: Any, tmp_path: Path, files_dir: Path
) -> None:
    """Step 0 (approved, harmless-looking) rewrites the source: it fetches a file of the
    web host over it in the files root; step 1 must not push it."""
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="web")
    # The approved source, named after the one web host (what step 0's dest renders to).
    src, dest = files_dir / "web-00.conf", tmp_path / "remote" / "app.conf"
    dest.parent.mkdir()
    src.write_bytes(APPROVED)
    dest.write_bytes(b"previous release\n")
    rendered = tmp_path / "remote" / "rendered.conf"  # on the web host (this machine's sshd)
    rendered.write_bytes(EDITED)
    plan = _push_plan(src, dest, targets={"tags": {"role": "web"}})
    plan["steps"].insert(
        0,
        {
            "name": "render",
            "type": "file",
            "direction": "fetch",
            "action_class": "modify",
            "targets": {"tags": {"role": "web"}},
            "src": str(rendered),
            "dest": "{{ asset.id }}.conf",  # in the files root: over the approved source
        },
    )
    execution = await _submit(db, plan)
    await _approve(db, execution, execution.plan_hash)

    assert await Engine(db, actor_id="worker").run("default", execution.id) is Status.FAILED
    assert src.read_bytes() == EDITED  # the rewrite did happen...
    assert dest.read_bytes() == b"previous release\n"  # ...and was never copied
    assert sorted(p.name for p in dest.parent.iterdir()) == ["app.conf", "rendered.conf"]
    row = await _row(db, execution)
    reason = (
        f"steps[1].src: {src} changed after approval "
        f"(approved sha256 {_sha(APPROVED)[:12]}…, now {_sha(EDITED)[:12]}…)"
    )
    assert row.status_reason == f"step 'push': {reason}"
    (refused,) = await _events(db, execution, "pushed_file_refused")
    assert refused.payload == {"step_index": 1, "step": "push", "reason": reason}
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT status, error FROM execution.execution_steps WHERE step_index = 1"
        )
        assert await cur.fetchall() == [{"status": "failed", "error": reason}]


async def test_level_0_is_held_to_the_digest_taken_at_submission(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    """Nobody reviewed it, but the record says which bytes: a queued level 0 push whose
    file changed before a worker took it fails instead of pushing other bytes."""
    src, dest = files_dir / "app.conf", work_dir / "app.conf.deployed"
    src.write_bytes(APPROVED)
    plan = {**_push_plan(src, dest), "approval_level": 0}
    execution = await _submit(db, plan)
    src.write_bytes(EDITED)
    assert await Engine(db, actor_id="worker").run("default", execution.id) is Status.FAILED
    assert not dest.exists()
    assert "changed after approval" in (await _row(db, execution)).status_reason


async def test_the_connector_refuses_bytes_other_than_the_approved_ones(
    db: Database, ssh_lab: Any, tmp_path: Path, files_dir: Path
) -> None:
    """The last line of defence, below the engine's check: the connector compares the
    source it is about to copy with the approved digest."""
    (asset,) = await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="conn")
    src, dest = files_dir / "app.conf", tmp_path / "remote.conf"
    src.write_bytes(EDITED)
    step = parse_plan(_push_plan(src, dest)).steps[0]
    tenant = connectors.TenantSettings(record_only=False, host_key_policy="strict")
    conns = Connectors(
        connectors.KnownHosts(db, "default", "strict", "tester"),
        access=TenantAccess.of(load_settings(), "default", tenant),
    )
    try:
        outcome = await conns.execute(
            step,
            asset,
            where="steps[0]",
            timeout_s=10,
            approved_files={str(src): _sha(APPROVED)},
        )
        unlisted = await conns.execute(
            step,
            asset,
            where="steps[0]",
            timeout_s=10,
            approved_files={"/elsewhere/app.conf": _sha(EDITED)},
        )
    finally:
        await conns.aclose()
    assert outcome.status == "failed"
    assert outcome.error == (
        f"steps[0].src: {src} changed after approval "
        f"(approved sha256 {_sha(APPROVED)[:12]}…, now {_sha(EDITED)[:12]}…)"
    )
    assert unlisted.error == f"steps[0].src: {src} was not part of the approved plan"
    assert not dest.exists()


@needs_sandbox
async def test_a_copy_whose_source_changes_after_the_check_never_lands(
    files_dir: Path, work_dir: Path
) -> None:
    """Between the check and the copy the file is swapped: the copy's checksum is compared
    with the checked digest, not with a fresh read, so the swap is refused (the sandboxed
    local copy, as the connector runs it)."""
    access = TenantAccess("default", files_dir, work_dir, local_execution=True)
    box = sandbox.prepare(access)
    src, dest = files_dir / "app.conf", work_dir / "deployed.conf"
    src.write_bytes(EDITED)
    dest.write_bytes(b"previous release\n")
    result = await local.push_file(box, src, str(dest), None, sha256=_sha(APPROVED), timeout_s=60)
    assert result.exit_code == 3, result
    assert "checksum mismatch after copy" in result.stderr
    assert dest.read_bytes() == b"previous release\n"
    assert sorted(os.listdir(work_dir)) == ["deployed.conf"]  # no temporary left


async def test_a_changed_file_is_a_new_submission_not_a_duplicate(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    src = files_dir / "app.conf"
    src.write_bytes(APPROVED)
    plan = _push_plan(src, work_dir / "out.conf")
    first = await submit(db, Request(parse_plan(plan), "default", "alice"))
    same = await submit(db, Request(parse_plan(plan), "default", "alice"))
    assert first.created and not same.created  # same bytes: the deduplication window holds
    src.write_bytes(EDITED)
    changed = await submit(db, Request(parse_plan(plan), "default", "alice"))
    assert changed.created
    assert changed.execution.id != first.execution.id
    assert changed.execution.plan_hash != first.execution.plan_hash
    assert changed.execution.idempotency_key != first.execution.idempotency_key


async def test_a_push_that_cannot_be_reviewed_is_refused_at_submission(
    db: Database, files_dir: Path, work_dir: Path
) -> None:
    missing = _push_plan(files_dir / "nope.conf", work_dir / "out.conf")
    with pytest.raises(BadInput, match=r"^steps\[0\]\.src: cannot read .*nope\.conf"):
        await _submit(db, missing)
    from_result = _push_plan(files_dir / "x", work_dir / "out.conf")
    from_result["steps"][0]["src"] = "{{ steps.render.output }}"
    render = {"name": "render", "type": "noop", "targets": {"hostnames": ["localhost"]}}
    from_result["steps"].insert(0, render)  # a real earlier step: only its result is unknown
    with pytest.raises(BadInput, match="must be known when the plan is submitted"):
        await _submit(db, from_result)
