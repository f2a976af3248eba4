"""The ``noop`` step type: strict like every step, does nothing on its targets, and still goes
through what every step goes through (RBAC per target, the asset lock, a step attempt row
with its ``step_started``/``step_finished`` events)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsconductor.db import queue
from opsconductor.db.connection import Database
from opsconductor.errors import PlanError
from opsconductor.plan import NoopStep, parse_plan
from opsconductor.submission import Request, submit
from opsconductor.worker import Worker, WorkerOptions
from tests.helpers import run_plan
from tests.served import opsc


def noop_step(**extra: Any) -> dict[str, Any]:
    targets = extra.pop("targets", {"hostnames": ["localhost"]})
    return {"name": "nothing", "type": "noop", "targets": targets, **extra}


def noop_plan(**extra: Any) -> dict[str, Any]:
    return {"name": "noop plan", "steps": [noop_step(**extra)]}


def test_noop_takes_the_common_fields() -> None:
    fields = {"action_class": "modify", "timeout_s": 5, "retries": 2, "idempotent": True}
    step = parse_plan(noop_plan(concurrency=3, **fields)).steps[0]
    assert isinstance(step, NoopStep)
    assert (step.action_class, step.timeout_s, step.retries) == ("modify", 5.0, 2)
    assert step.idempotent is True and step.concurrency == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"command": "true"}, "steps[0].command: unknown field"),
        ({"colour": "red"}, "steps[0].colour: unknown field"),
        ({"timeout_s": 0}, "steps[0].timeout_s: must be > 0"),
        ({"targets": {"hostnames": ["localhost"], "zone": "a"}}, "steps[0].targets.zone: unknown"),
    ],
)
def test_noop_is_strict_and_names_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(noop_plan(**extra))
    assert message in str(caught.value)


def test_noop_needs_targets() -> None:
    with pytest.raises(PlanError, match=r"steps\[0\]\.targets: field required"):
        parse_plan({"name": "p", "steps": [{"name": "n", "type": "noop"}]})


def _write_plan(tmp_path: Path, targets: str, name: str = "noop.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"name: noop plan\nsteps:\n  - {{name: nothing, type: noop, timeout_s: 5, "
        f"targets: {targets}}}\n"
    )
    return path


def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_opsc_run_records_one_completed_attempt_per_target(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    assert opsc(cli_env, "assets", "add", "noop-a", "--tag", "role=noop").returncode == 0
    # An SSH asset at an address nothing answers (TEST-NET-1) with no trusted host key: any
    # attempt to reach it would fail, so completing proves the step touched nothing.
    far = ("--connection", "ssh", "--address", "192.0.2.1", "--tag", "role=noop")
    assert opsc(cli_env, "assets", "add", "noop-b", *far).returncode == 0
    validated = opsc(cli_env, "validate", str(_write_plan(tmp_path, "{tags: {role: noop}}")))
    assert validated.returncode == 0, validated.stderr
    assert "nothing [noop/read, inferred] -> noop-a, noop-b" in validated.stdout

    result = opsc(cli_env, "run", str(_write_plan(tmp_path, "{tags: {role: noop}}")))

    assert result.returncode == 0, result.stdout + result.stderr
    rows = _fetch(
        database_url,
        "SELECT target_asset_id, step_type, status, attempt, exit_code, output, stderr, error "
        "FROM execution.execution_steps ORDER BY target_asset_id",
    )
    assert rows == [
        ("noop-a", "noop", "completed", 1, None, "", "", None),
        ("noop-b", "noop", "completed", 1, None, "", "", None),
    ]
    events = _fetch(
        database_url,
        "SELECT event_type, count(*) FROM execution.execution_events "
        "WHERE event_type LIKE 'step_%' GROUP BY event_type ORDER BY event_type",
    )
    assert events == [("step_finished", 2), ("step_started", 2)]
    assert _fetch(database_url, "SELECT status FROM execution.executions") == [("completed",)]
    assert _fetch(database_url, "SELECT * FROM execution.execution_locks") == []


def test_opsc_run_of_noop_waits_for_a_held_asset_and_fails(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    assert opsc(cli_env, "assets", "add", "noop-a").returncode == 0
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO execution.execution_locks (tenant_id, asset_id, owner_tag, expires_at) "
            "VALUES ('default', 'noop-a', 'other:elsewhere', now() + interval '10 minutes')"
        )
    plan = str(_write_plan(tmp_path, "{assets: [noop-a]}"))

    held = opsc({**cli_env, "OPSC_LOCK_WAIT_S": "0.3"}, "run", plan)

    assert held.returncode == 1, held.stdout + held.stderr
    [(status, reason)] = _fetch(
        database_url, "SELECT status, status_reason FROM execution.executions"
    )
    assert status == "failed" and "asset_locked" in reason
    [(step_status, error)] = _fetch(
        database_url, "SELECT status, error FROM execution.execution_steps"
    )
    assert step_status == "failed" and "asset 'noop-a' is held by other:elsewhere" in error

    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM execution.execution_locks")
    again = opsc(cli_env, "run", plan)  # the failed key may be retried: a new execution
    assert again.returncode == 0, again.stdout + again.stderr


async def test_workers_check_rbac_before_a_noop_step(db: Database) -> None:
    plan = parse_plan(noop_plan())
    # "tester" holds no role in this tenant: the worker must refuse even a step doing nothing
    submitted = await submit(db, Request(plan, "default", "tester", uuid.uuid4().hex, enqueue=True))
    (lease,) = await queue.claim(db, "w", limit=1)
    await Worker(db, actor_id="w", options=WorkerOptions())._execute(lease)
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT status FROM execution.executions WHERE id = %(id)s) AS status, "
            "(SELECT array_agg(event_type::text) FROM execution.execution_events "
            " WHERE execution_id = %(id)s) AS events",
            {"id": submitted.execution.id},
        )
        row = await cur.fetchone()
    assert row is not None and row["status"] == "failed"
    assert "rbac_violation" in row["events"] and "step_started" not in row["events"]


async def test_record_only_records_a_noop_as_skipped(db: Database) -> None:
    status, rows, _ = await run_plan(db, noop_plan(), record_only=True)
    assert status.value == "completed"
    assert [(r.status, r.output) for r in rows] == [
        ("skipped", "skipped: record-only: would do nothing")
    ]
