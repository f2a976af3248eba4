"""A step that does not say what it does is treated as one that changes things: an
``rm -rf`` without ``action_class`` is a modify for RBAC (at submission and in the worker's
re-check) and is never re-run after a crash as if it were an idempotent read."""

from __future__ import annotations

import hashlib
import json
import shlex
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsconductor.api.app import create_app
from opsconductor.db import auth, executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import parse_plan
from opsconductor.rbac import parse_permission
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from opsconductor.worker import WorkerOptions
from tests.api.support import Api
from tests.test_worker_processes import (
    FAST_RECOVERY,
    TERMINAL,
    Workers,
    crash,
    lines,
    opsc,
    pids,
    status_of,
    submit_file,
    wait_until,
)


def _wipe(victim: Path, **extra: Any) -> dict[str, Any]:
    """An rm -rf step whose author left out action_class."""
    return {
        "name": "wipe",
        "type": "command",
        "targets": {"hostnames": ["localhost"]},
        "command": f"rm -rf {shlex.quote(str(victim))}",
        **extra,
    }


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    app = create_app(db, max_body_bytes=64 * 1024, workers=WorkerOptions(concurrency=2, poll_s=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, app, db)


async def _reader(db: Database, tenant: str, actor: str) -> None:
    """``actor`` may submit and run read steps anywhere, nothing else."""
    permissions = ["executions:view", "executions:submit", "steps:read"]
    await auth.define_role(db, tenant, "reader", [parse_permission(p) for p in permissions])
    async with db.transaction() as conn:
        await auth.ensure_actor(conn, tenant, actor)
        await auth.grant(conn, tenant, actor, "reader", granted_by="test")


async def test_rm_rf_without_a_class_is_denied_to_a_read_only_role_at_submission(
    api: Api, tmp_path: Path
) -> None:
    victim = tmp_path / "data"
    victim.mkdir()
    await _reader(api.db, "acme", "rita")
    async with api.db.transaction() as conn:
        made = await auth.create_token(conn, "acme", "rita")
    rita = {"Authorization": f"Bearer {made.token}"}
    plan = {"name": "cleanup", "steps": [_wipe(victim)]}
    r = await api.client.post("/api/v1/executions", json=plan, headers=rita)
    assert r.status_code == 403, r.text
    assert "may not modify steps on 'local' targets" in r.text
    assert victim.exists()
    # The role itself works: the same person may run what is declared (or inferred) a read.
    look = {"name": "look", "steps": [{**_wipe(victim), "command": "true", "name": "look"}]}
    look["steps"][0]["action_class"] = "read"
    ok = await api.client.post("/api/v1/executions", json=look, headers=rita)
    assert ok.status_code == 201, ok.text
    probe = {
        "name": "probe",
        "steps": [
            {
                "name": "get",
                "type": "http",
                "targets": {"hostnames": ["localhost"]},
                "url": "http://127.0.0.1:9/",
                "expect": {"status": [200, 404]},
            }
        ],
    }
    get = await api.client.post("/api/v1/executions", json=probe, headers=rita)
    assert get.status_code == 201, get.text  # an http GET is inferred a read


async def test_the_workers_recheck_uses_the_inferred_class_too(
    db: Database, work_dir: Path
) -> None:
    """Submitted by someone allowed (no check at submission here, as on the local path);
    the engine's per-step check sees a modify and refuses the read-only actor."""
    victim = work_dir / "data"  # where the sandboxed rm -rf could reach it
    victim.mkdir(parents=True)
    await _reader(db, "default", "rita")
    plan = parse_plan({"name": "cleanup", "steps": [_wipe(victim)]})
    submitted = await submit(db, Request(plan, "default", "rita", uuid.uuid4().hex))
    engine = Engine(db, actor_id="worker")  # every engine re-checks RBAC before each step
    assert await engine.run("default", submitted.execution.id) is Status.FAILED
    assert victim.exists()
    async with db.connection() as conn:
        events = await executions.events(conn, submitted.execution.id)
    (violation,) = [e for e in events if e.event_type == "rbac_violation"]
    assert violation.payload["action_class"] == "modify"


def test_rm_rf_without_a_class_is_not_rerun_after_a_crash(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, work_dir: Path
) -> None:
    # In the tenant's working directory: the only place the sandboxed step sees and writes.
    log, victim = work_dir / "wipe.log", work_dir / "data"
    victim.mkdir(parents=True)
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    workers = Workers({**cli_env, "OPSC_LOCK_TTL_S": "3"}, logs)
    try:
        wipe = _wipe(victim, timeout_s=120)
        wipe["command"] = f"echo wipe $$ >> {log}; {wipe['command']}; sleep 60"
        execution_id = submit_file(cli_env, tmp_path, "cleanup", [wipe])
        first = workers.start("--concurrency", "1", *FAST_RECOVERY)
        wait_until(lambda: bool(pids(log, "wipe")), "the wipe to start")
        crash(first)  # the sandboxed step dies with its worker (bwrap --die-with-parent)
        victim.mkdir()  # restored: a second run would remove it again
        workers.start("--concurrency", "1", *FAST_RECOVERY)
        wait_until(lambda: status_of(database_url, execution_id)[0] in TERMINAL, "the verdict")
    finally:
        workers.kill_all()
    status, reason = status_of(database_url, execution_id)
    assert status == "failed"
    assert reason is not None and reason.startswith("interrupted: step 'wipe' on localhost")
    assert reason.count("is not idempotent, so it was not run again") == 1
    assert len(lines(log)) == 1
    assert victim.exists()


def test_opsc_validate_says_which_classes_were_inferred(
    cli_env: dict[str, str], tmp_path: Path, files_dir: Path
) -> None:
    src = files_dir / "app.conf"  # a pushed file lives in the tenant's files root
    src.write_text("listen 80;\n")
    plan = {
        "name": "mixed",
        "steps": [
            _wipe(tmp_path / "data"),
            {**_wipe(tmp_path), "name": "look", "action_class": "read", "command": "ls"},
            {
                "name": "push",
                "type": "file",
                "targets": {"hostnames": ["localhost"]},
                "src": str(src),
                "dest": "/tmp/app.conf",
            },
        ],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    result = opsc(cli_env, "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "  wipe [command/modify, inferred] -> localhost\n" in result.stdout
    assert "  look [command/read] -> localhost\n" in result.stdout
    assert "  push [file/modify, inferred] -> localhost\n" in result.stdout
    digest = hashlib.sha256(b"listen 80;\n").hexdigest()
    assert f"    pushes {src} (sha256 {digest})\n" in result.stdout
