"""Parameters, ``when`` and per-step estimates through submission and the engine, on a real
database and real local processes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from opsconductor.db import assets, executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine, StepEvent
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.plan import Plan, parse_plan
from opsconductor.routing import step_key
from opsconductor.status_machine import Status, StepStatus
from opsconductor.submission import Request, submit
from tests.helpers import admin
from tests.plans import command_step

SECRET = "pa55-w0rd-from-the-environment"


def _plan(*step_list: dict[str, Any], declared: dict[str, Any] | None = None) -> Plan:
    return parse_plan(
        {
            "name": "params",
            "params": declared
            or {
                "version": {"type": "string"},
                "restart": {"type": "bool", "default": False},
                "replicas": {"type": "int", "default": 2},
            },
            "steps": list(step_list),
        }
    )


async def _submit(db: Database, plan: Plan, values: dict[str, Any] | None) -> Any:
    actor = await admin(db, "tester")
    return await submit(db, Request(plan, "default", actor, uuid.uuid4().hex, params=values))


async def _run(
    db: Database, plan: Plan, values: dict[str, Any], events: list[StepEvent] | None = None
) -> tuple[Status, dict[str, Any], list[dict[str, Any]]]:
    submitted = await _submit(db, plan, values)
    execution_id = submitted.execution.id
    engine = Engine(db, actor_id="tester", observer=events.append if events is not None else None)
    final = await engine.run("default", execution_id)
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution_id))
        rows = await steps.list_for(conn, execution_id)
    return final, row, rows


async def test_missing_or_wrong_value_is_refused_before_anything_is_stored(db: Database) -> None:
    plan = _plan(command_step("show", "true"))
    with pytest.raises(BadInput, match=r"^params\.version: required string parameter"):
        await _submit(db, plan, None)
    with pytest.raises(BadInput, match=r"^params\.replicas: must be an integer \(got str\)"):
        await _submit(db, plan, {"version": "1", "replicas": "3"})
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM execution.executions")
        assert (await cur.fetchone() or {})["n"] == 0


async def test_values_are_hashed_and_stored_with_the_snapshot(db: Database) -> None:
    plan = _plan(command_step("show", "true"))
    one = await _submit(db, plan, {"version": "1.2"})
    two = await _submit(db, plan, {"version": "1.3"})
    assert one.execution.plan_hash != two.execution.plan_hash
    assert one.execution.plan_snapshot["params"] == {
        "version": "1.2",
        "restart": False,
        "replicas": 2,
    }


async def test_when_false_skips_the_step_on_that_target_with_the_reason(db: Database) -> None:
    async with db.connection() as conn:
        for name, role in (("node-a", "web"), ("node-b", "db")):
            await assets.add(
                conn, "default", Asset(name, name, "127.0.0.1", "staging", tags={"role": role})
            )
    plan = _plan(
        command_step(
            "restart",
            'echo "restarted $OPSC_PARAM_VERSION $V"',
            targets={"environment": "staging"},
            env={"V": "{{ params.version }}-{{ asset.tags.role }}"},
            when="params.restart and asset.tags.role == 'web'",
        ),
        command_step("after", "echo after", targets={"environment": "staging"}),
    )
    events: list[StepEvent] = []
    final, row, rows = await _run(db, plan, {"version": "1.2", "restart": True}, events)
    assert final is Status.COMPLETED, row.status_reason
    by = {(r.step_name, r.target_asset_id): r for r in rows}
    assert by[("restart", "node-a")].status == "completed"
    assert by[("restart", "node-a")].output == "restarted 1.2 1.2-web\n"
    skipped = by[("restart", "node-b")]
    assert skipped.status == "skipped"
    assert skipped.output == ("skipped: when: params.restart and asset.tags.role == 'web' is false")
    # a skipped target is done: the next step runs on both
    assert {r.status for r in rows if r.step_name == "after"} == {"completed"}
    finished = [e for e in events if e.asset_id == "node-b" and e.status is StepStatus.SKIPPED]
    assert finished and "is false" in (finished[0].detail or "")


async def test_a_when_that_cannot_be_evaluated_fails_that_target(db: Database) -> None:
    # refused at submission when it names an unknown thing; a data error shows at run time
    plan = _plan(command_step("a", "echo 1"), command_step("b", "true", when="1 // 0"))
    with pytest.raises(BadInput, match="ZeroDivisionError"):
        await _submit(db, plan, {"version": "1"})
    plan = _plan(
        command_step("a", "echo zero"),
        command_step("b", "true", when="(steps.a.output | int) // 0 == 0"),
    )
    final, _, rows = await _run(db, plan, {"version": "1"})
    assert final is Status.FAILED
    assert "condition error: ZeroDivisionError" in (rows[1].error or "")


async def test_template_typo_is_refused_at_submission_naming_step_target_and_name(
    db: Database,
) -> None:
    plan = _plan(
        command_step("a", "true", env={"ADDR": "{{ asset.adress }}"}),
    )
    with pytest.raises(BadInput) as caught:
        await _submit(db, plan, {"version": "1"})
    assert str(caught.value) == (
        "steps[0].env.ADDR (step 'a', target localhost): template error: asset.adress is undefined"
    )


async def test_secret_ref_parameter_is_fetched_at_run_time_and_never_stored(
    db: Database, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("OPSC_SECRET_ENV_PARAM_PW", SECRET)
    plan = _plan(
        command_step(
            "use it",
            'test "$PW" = "$EXPECTED" && echo "matches; the value is $PW"',
            env={
                "PW": "{{ params.db_password }}",
                "EXPECTED": {"secret": "env:OPSC_SECRET_ENV_PARAM_PW"},
            },
        ),
        declared={"db_password": {"type": "secret-ref"}},
    )
    final, row, rows = await _run(db, plan, {"db_password": "env:OPSC_SECRET_ENV_PARAM_PW"})
    assert final is Status.COMPLETED, (row.status_reason, rows[0].error)
    assert rows[0].output.startswith("matches; the value is ")
    assert SECRET not in rows[0].output  # masked like every resolved secret
    assert row.plan_snapshot["params"] == {"db_password": "env:OPSC_SECRET_ENV_PARAM_PW"}
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM execution.execution_events "
            "WHERE execution_id = %s AND event_type = 'secret_resolved'",
            (row.id,),
        )
        assert (await cur.fetchone() or {})["n"] == 1  # audited, once (both refs, one path)
        for table in ("executions", "execution_steps", "execution_events"):
            cur = await conn.execute(f"SELECT t::text AS t FROM execution.{table} t")
            assert all(SECRET not in r["t"] for r in await cur.fetchall()), table


async def test_estimate_comes_from_the_history_of_the_same_step(db: Database) -> None:
    plan = parse_plan({"name": "naps", "steps": [command_step("nap", "sleep 4")]})
    first = await _submit(db, plan, None)
    assert first.execution.sla_class == "fast"  # no history: the 1 s default
    key = step_key(plan.steps[0])
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT step_key FROM execution.execution_steps WHERE execution_id = %s",
            (first.execution.id,),
        )
        assert [r["step_key"] for r in await cur.fetchall()] == [key]
        for attempt in range(2, 6):  # four earlier runs of this very step, ~12 s each
            await conn.execute(
                "INSERT INTO execution.execution_steps (execution_id, step_index, step_name, "
                "step_type, tenant_id, target_asset_id, status, attempt, started_at, "
                "finished_at, step_key) VALUES (%s, 0, 'nap', 'command', 'default', "
                "'localhost', 'running', %s, now() - interval '12 seconds', now(), %s)",
                (first.execution.id, attempt, key),
            )
        await conn.execute(
            "UPDATE execution.execution_steps SET status = 'completed' WHERE attempt > 1"
        )
    # the same command under another plan and step name shares the history
    again = parse_plan({"name": "other", "steps": [command_step("rest", "sleep 4")]})
    second = await _submit(db, again, None)
    assert second.execution.sla_class == "medium"
    assert second.execution.estimated_duration_s == pytest.approx(12, abs=0.5)
