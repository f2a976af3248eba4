"""Staged enablement per tenant (staging.py) against a real database and the real engine:
a level forced record-only, a refused level, the canary share, and the audit trail."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor import rbac
from opsconductor.approvals import Decision, gate
from opsconductor.db import audit, auth, executions, steps
from opsconductor.db import staging as staging_rows
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import PermissionDenied
from opsconductor.plan import parse_plan
from opsconductor.services import staging as service
from opsconductor.services.caller import AuthMethod, Caller
from opsconductor.staging import LevelMode, StagedRefusal, decide
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit, submit_many
from tests.conftest import allow_local

BOSS = Caller("default", "boss", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.TOKEN)


@pytest.fixture(autouse=True)
async def _set_up(db: Database) -> None:
    """alice submits (admin); bob approves; local steps may run (sandboxed)."""
    async with db.transaction() as conn:
        await auth.ensure_actor(conn, "default", "alice")
        await auth.grant(conn, "default", "alice", "admin", granted_by="test")
        await auth.grant(conn, "default", "bob", "approver", granted_by="test")
        await auth.grant(conn, "default", "carol", "approver", granted_by="test")
        await allow_local(conn, "default")


def _plan(marker: Path, level: int = 0, name: str = "touch") -> dict[str, Any]:
    return {
        "name": name,
        "approval_level": level,
        "steps": [
            {
                "name": "touch",
                "type": "command",
                "action_class": "modify",
                "targets": {"hostnames": ["localhost"]},
                "command": f"touch {marker}",
            }
        ],
    }


async def _submit(db: Database, plan: dict[str, Any], key: str | None = None) -> Any:
    request = Request(parse_plan(plan), "default", "alice", key or uuid.uuid4().hex)
    return (await submit(db, request)).execution


async def _approve_all(db: Database, execution_id: uuid.UUID, plan_hash: str) -> Status:
    found = None
    for approver in ("bob", "carol"):
        found = await gate.decide(
            db,
            tenant_id="default",
            execution_id=str(execution_id),
            actor_id=approver,
            decision=Decision.APPROVE,
            reviewed_hash=plan_hash,
        )
        if found.status is not Status.PENDING_APPROVAL:
            break
    assert found is not None
    return found.status


async def test_level_2_is_forced_record_only_and_level_1_still_runs(
    db: Database, work_dir: Path
) -> None:
    await service.set_level(db, BOSS, 2, LevelMode.RECORD_ONLY)
    dark, lit = work_dir / "level-2", work_dir / "level-1"

    two = await _submit(db, _plan(dark, level=2))
    assert two.record_only is True
    why = "record-only: level 2 not enabled for real in tenant default"
    assert two.record_only_reason == why
    async with db.connection() as conn:
        submitted = [
            e for e in await executions.events(conn, two.id) if e.event_type == "submitted"
        ]
    assert submitted[0].payload["record_only_reason"] == why
    assert await _approve_all(db, two.id, two.plan_hash) is Status.APPROVED
    assert await Engine(db, actor_id="alice").run("default", two.id) is Status.COMPLETED
    async with db.connection() as conn:
        rows = await steps.list_for(conn, two.id)
    assert [r.status.value for r in rows] == ["skipped"] and not dark.exists()

    one = await _submit(db, _plan(lit, level=1))
    assert one.record_only is False and one.record_only_reason is None
    assert await _approve_all(db, one.id, one.plan_hash) is Status.APPROVED
    assert await Engine(db, actor_id="alice").run("default", one.id) is Status.COMPLETED
    assert lit.exists()


async def test_a_refused_level_is_refused_at_submission_and_nothing_is_stored(
    db: Database, work_dir: Path
) -> None:
    await service.set_level(db, BOSS, 3, LevelMode.REFUSE)
    with pytest.raises(StagedRefusal, match="level 3 executions are refused in tenant default"):
        await _submit(db, _plan(work_dir / "x", level=3))
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM execution.executions")
        assert (await cur.fetchone())["n"] == 0  # type: ignore[index]


async def test_a_canary_of_50_percent_runs_about_half_for_real_fixed_per_id(
    db: Database, work_dir: Path
) -> None:
    await service.set_canary(db, BOSS, 50)
    made = [
        await _submit(db, _plan(work_dir / f"m-{i}", name=f"canary {i}"), key=f"k{i}")
        for i in range(100)
    ]
    real = [e for e in made if not e.record_only]
    assert 35 <= len(real) <= 65, len(real)
    async with db.connection() as conn:
        staged = await staging_rows.get(conn, "default")
    for e in made:  # re-evaluated from the stored id: the same choice, and it says why
        again = decide(staged, "default", 0, e.id)
        assert again.record_only == e.record_only
        assert e.record_only_reason == again.reason
        if e.record_only:
            assert e.record_only_reason == "record-only: canary 50% (this execution not selected)"
    # The same submission again is the same execution, with the choice made for its id.
    assert (await _submit(db, _plan(work_dir / "m-7", name="canary 7"), key="k7")).id == made[7].id

    # And it holds when they run: one of each through the engine.
    shadow = next(i for i, e in enumerate(made) if e.record_only)
    chosen = next(i for i, e in enumerate(made) if not e.record_only)
    for i in (shadow, chosen):
        assert await Engine(db, actor_id="alice").run("default", made[i].id) is Status.COMPLETED
    assert not (work_dir / f"m-{shadow}").exists() and (work_dir / f"m-{chosen}").exists()

    # A bulk submission decides the same way, per id.
    many = await submit_many(
        db,
        [
            Request(parse_plan(_plan(work_dir / f"b-{i}", name=f"bulk {i}")), "default", "alice")
            for i in range(40)
        ],
    )
    for done in many:
        e = done.execution
        assert e.record_only == decide(staged, "default", 0, e.id).record_only


async def test_staging_is_for_tenant_admins_and_every_change_is_audited(db: Database) -> None:
    operator = Caller("default", "otto", (rbac.BUILTIN_ROLES["operator"],), AuthMethod.TOKEN)
    with pytest.raises(PermissionDenied, match="operator may not manage tenant"):
        await service.set_canary(db, operator, 10)
    await service.set_level(db, BOSS, 2, LevelMode.RECORD_ONLY)
    await service.set_canary(db, BOSS, 25)
    await service.set_canary(db, BOSS, 25)  # no change: no event
    async with db.connection() as conn:
        events = await audit.list_events(conn, "default", "staging_changed")
    assert [(e["actor_id"], e["payload"]["after"]) for e in reversed(events)] == [
        ("boss", {"level_modes": ["real", "real", "record-only", "real"], "canary_percent": 100}),
        (
            "boss",
            {"level_modes": ["real", "real", "record-only", "real"], "canary_percent": 25},
        ),
    ]
    assert events[0]["payload"]["before"]["canary_percent"] == 100
    found = await service.get(db, operator)  # anyone who sees the tenant sees its staging
    assert found.canary_percent == 25 and found.level_modes[2] is LevelMode.RECORD_ONLY
