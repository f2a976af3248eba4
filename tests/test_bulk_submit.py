"""Bulk submission: many plans in one request keep every check of a single submission
(validation, targets, RBAC, hash, idempotency, audit events, approvals, the queue) and are
stored all or none."""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsconductor.db.connection import Database
from opsconductor.errors import PermissionDenied, TargetResolutionError
from opsconductor.plan import Plan, parse_plan
from opsconductor.records import Execution
from opsconductor.services import executions
from opsconductor.services.caller import local_admin
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit, submit_many
from tests.served import opsc


def plan(name: str, *, level: int = 0, host: str = "localhost", slow: bool = False) -> Plan:
    """One noop step; ``slow``: ten command steps, estimated at 10 s (routed to workers)."""
    if not slow:
        steps = [{"name": "s", "type": "noop", "targets": {"hostnames": [host]}}]
    else:
        steps = [
            {"name": f"s{i}", "type": "command", "command": "true", "action_class": "read",
             "targets": {"hostnames": [host]}}
            for i in range(10)
        ]  # fmt: skip
    return parse_plan({"name": name, "approval_level": level, "steps": steps})


def count(url: str, sql: str, *params: Any) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def _comparable(e: Execution) -> dict[str, Any]:
    skip = {"id", "created_at", "trace_id", "idempotency_key", "plan_name", "updated_at"}
    return {k: v for k, v in e.__dict__.items() if k not in skip}


async def test_bulk_stores_what_single_submissions_store(db: Database, database_url: str) -> None:
    who = await local_admin(db, "default")
    plans = [plan("a"), plan("b", level=1), plan("c", slow=True), plan("d", level=2)]
    bulk = await executions.submit_many(db, who, plans)
    assert [b.created for b in bulk] == [True] * 4
    assert [b.execution.status for b in bulk] == [
        Status.QUEUED,
        Status.PENDING_APPROVAL,
        Status.QUEUED,
        Status.PENDING_APPROVAL,
    ]
    # The same plans one by one in another tenant-less run: same rows but ids and times.
    singles = [
        await executions.submit(db, who, p, idempotency_key=f"single-{i}", enqueue=True)
        for i, p in enumerate(plans)
    ]
    for b, s in zip(bulk, singles, strict=True):
        assert _comparable(b.execution) == _comparable(s.execution)
        for table, column in (
            ("execution_steps", "execution_id"),
            ("execution_events", "execution_id"),
            ("execution_queue", "execution_id"),
            ("approvals", "execution_id"),
        ):
            sql = f"SELECT count(*) FROM execution.{table} WHERE {column} = %s"
            assert count(database_url, sql, b.execution.id) == count(
                database_url, sql, s.execution.id
            ), table
        # the approval request itself, as one submission asks for it (bar ids and times)
        assert _approvals(database_url, b.execution.id) == _approvals(database_url, s.execution.id)
    events = count(
        database_url,
        "SELECT count(*) FROM execution.execution_events WHERE event_type = 'submitted'",
    )
    assert events == 8


def _approvals(url: str, execution_id: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT step_index, level, plan_hash, state::text, requested_by, decided_by,"
            " expires_at - created_at FROM execution.approvals WHERE execution_id = %s"
            " ORDER BY id",
            (execution_id,),
        ).fetchall()


async def test_duplicates_in_and_across_bulk_submissions(db: Database) -> None:
    who = await local_admin(db, "default")
    first = await executions.submit_many(db, who, [plan("x"), plan("y"), plan("x")])
    assert [f.created for f in first] == [True, True, False]
    assert first[2].execution.id == first[0].execution.id
    again = await executions.submit_many(db, who, [plan("y"), plan("z")])
    assert [a.created for a in again] == [False, True]
    assert again[0].execution.id == first[1].execution.id
    # a single submission of the same plan is a duplicate of the bulk one too
    single = await submit(db, Request(plan("z"), "default", who.actor_id, enqueue=True))
    assert not single.created and single.execution.id == again[1].execution.id


async def test_one_bad_plan_refuses_the_whole_request(db: Database, database_url: str) -> None:
    who = await local_admin(db, "default")
    plans = [plan("ok-1"), plan("ok-2"), plan("bad", host="no-such-host")]
    with pytest.raises(TargetResolutionError, match=r"^plans\[2\]: steps\[0\]\.targets"):
        await executions.submit_many(db, who, plans)
    assert count(database_url, "SELECT count(*) FROM execution.executions") == 0
    # the cycle collector, paused while a bulk is prepared, runs again after a refusal too
    assert gc.isenabled()
    await executions.submit_many(db, who, plans[:2])
    assert gc.isenabled()


async def test_rbac_is_checked_for_every_plan(db: Database, database_url: str) -> None:
    from opsconductor.db import auth
    from opsconductor.services.caller import from_token

    async with db.transaction() as conn:
        await auth.ensure_actor(conn, "default", "viewer")
        await auth.grant(conn, "default", "viewer", "viewer", granted_by="test")
        token = await auth.create_token(conn, "default", "viewer", name="t")
    who = await from_token(db, token.token)
    with pytest.raises(PermissionDenied):
        await executions.submit_many(db, who, [plan("a")])
    assert count(database_url, "SELECT count(*) FROM execution.executions") == 0


def test_opsc_submit_of_a_directory(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "plans"
    folder.mkdir()
    for name in ("web", "db", "cache"):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nsteps:\n"
            "  - {name: s, type: noop, targets: {hostnames: [localhost]}}\n"
        )
    (folder / "notes.txt").write_text("not a plan")
    done = opsc(cli_env, "submit", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}", done.stdout)) == 3
    assert "3 submitted, 0 already submitted" in done.stderr
    assert (
        count(database_url, "SELECT count(*) FROM execution.executions WHERE status = 'queued'")
        == 3
    )

    (folder / "zz-broken.yaml").write_text("name: broken\nsteps: []\n")
    (folder / "new.yaml").write_text(
        "name: new\nsteps:\n  - {name: s, type: noop, targets: {hostnames: [localhost]}}\n"
    )
    refused = opsc(cli_env, "submit", str(folder))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "zz-broken.yaml" in refused.stderr
    assert count(database_url, "SELECT count(*) FROM execution.executions") == 3  # none stored


async def test_a_bulk_is_claimed_in_submission_order(db: Database, database_url: str) -> None:
    """Workers take priority first, then age: a bulk keeps the order it was given."""
    who = await local_admin(db, "default")
    done = await executions.submit_many(db, who, [plan(f"p{i}") for i in range(20)])
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT execution_id FROM execution.execution_queue ORDER BY priority, available_at"
        ).fetchall()
    assert [r[0] for r in rows] == [d.execution.id for d in done]


def _events(url: str, execution_id: object) -> list[tuple[Any, ...]]:
    """An execution's events in order, without what differs between two submissions."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_type, from_status::text, to_status::text, actor_id, payload"
            " FROM execution.execution_events WHERE execution_id = %s ORDER BY id",
            (execution_id,),
        ).fetchall()
    return [(*row[:4], {k: v for k, v in row[4].items() if k != "idempotency_key"}) for row in rows]


async def test_bulk_writes_the_events_one_submission_writes(
    db: Database, database_url: str
) -> None:
    """A level-0 plan is stored queued at once (no second row version), yet its audit trail
    is a single submission's: submitted (to approved), then approved -> queued."""
    who = await local_admin(db, "default")
    plans = [plan("e-a"), plan("e-b", level=1), plan("e-c", slow=True)]
    bulk = await executions.submit_many(db, who, plans)
    singles = [
        await executions.submit(db, who, p, idempotency_key=f"one-{i}", enqueue=True)
        for i, p in enumerate(plans)
    ]
    for b, s in zip(bulk, singles, strict=True):
        assert _events(database_url, b.execution.id) == _events(database_url, s.execution.id)
    assert [e[:3] for e in _events(database_url, bulk[0].execution.id)] == [
        ("submitted", None, "approved"),
        ("status_changed", "approved", "queued"),
    ]
    # what the bulk answers is the stored row, read back (its snapshot the one hashed)
    from opsconductor.db import executions as rows
    from opsconductor.plan_hash import digest

    async with db.connection() as conn:
        for b in bulk:
            stored = await rows.get(conn, "default", str(b.execution.id))
            assert stored == b.execution
            assert digest(stored.plan_snapshot) == stored.plan_hash


async def test_rbac_is_decided_per_environment_across_the_plans(
    db: Database, database_url: str
) -> None:
    """The roles' answers are shared by the plans of one request, per environment: an
    operator's plans on dev pass, the one on prod refuses the request, naming it."""
    from opsconductor.db import assets, auth
    from opsconductor.inventory import Asset
    from opsconductor.services.caller import from_token

    async with db.transaction() as conn:
        for name, env in (("dev-1", "dev"), ("dev-2", "dev"), ("prod-1", "prod")):
            await assets.add(conn, "default", Asset(name, name, "127.0.0.1", env))
        await auth.ensure_actor(conn, "default", "op")
        await auth.grant(conn, "default", "op", "operator", granted_by="test")
        token = await auth.create_token(conn, "default", "op", name="t")
    who = await from_token(db, token.token)

    def on(name: str, asset: str) -> Plan:
        step = {"name": "s", "type": "command", "command": "true", "action_class": "modify",
                "targets": {"assets": [asset]}}  # fmt: skip
        return parse_plan({"name": name, "steps": [step]})

    with pytest.raises(PermissionDenied, match=r"^plans\[2\]: .*'prod-1'"):
        await executions.submit_many(
            db, who, [on("a", "dev-1"), on("b", "dev-2"), on("c", "prod-1"), on("d", "dev-1")]
        )
    assert count(database_url, "SELECT count(*) FROM execution.executions") == 0
    done = await executions.submit_many(db, who, [on("a", "dev-1"), on("b", "dev-2")])
    assert [d.created for d in done] == [True, True]


async def test_the_no_lock_event_setting_ends_with_the_bulk(database_url: str) -> None:
    """A bulk's events skip the per-event row lock (their executions are its own, unseen by
    anyone else); the setting that says so must not outlive its transaction, or events of
    older executions written later on the same pooled connection would lose their order."""
    async with Database(database_url, min_size=1, max_size=1) as single:
        who = await local_admin(single, "default")
        done = await executions.submit_many(single, who, [plan("x1"), plan("x2")])
        assert all(d.created for d in done)
        async with single.connection() as conn:  # the very connection the bulk used
            cur = await conn.execute(
                "SELECT current_setting('opsconductor.events_of_new_executions', true) AS v"
            )
            row = await cur.fetchone()
        assert row is not None and row["v"] != "on"
    # and each bulk execution's events are in id order: submitted, then queued
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT execution_id, array_agg(coalesce(from_status::text, '') || '>' ||"
            " to_status::text ORDER BY id) FROM execution.execution_events"
            " WHERE execution_id = ANY(%s) GROUP BY 1",
            ([d.execution.id for d in done],),
        ).fetchall()
    assert [r[1] for r in rows] == [[">approved", "approved>queued"]] * 2


async def test_a_staged_record_only_bulk_says_why_as_one_submission_does(
    db: Database, database_url: str
) -> None:
    """Staged enablement's reason is in the ``submitted`` event of a bulk's plans too."""
    from opsconductor.db import staging as staging_rows
    from opsconductor.staging import LevelMode

    who = await local_admin(db, "default")
    async with db.transaction() as conn:
        await staging_rows.change(conn, "default", "admin", level=0, mode=LevelMode.RECORD_ONLY)
    plans = [plan("r-a"), plan("r-b")]
    bulk = await executions.submit_many(db, who, plans)
    singles = [
        await executions.submit(db, who, p, idempotency_key=f"rec-{i}", enqueue=True)
        for i, p in enumerate(plans)
    ]
    for b, s in zip(bulk, singles, strict=True):
        assert b.execution.record_only and b.execution.record_only_reason
        assert _comparable(b.execution) == _comparable(s.execution)
        assert _events(database_url, b.execution.id) == _events(database_url, s.execution.id)
        submitted = _events(database_url, b.execution.id)[0]
        assert submitted[4]["record_only_reason"] == b.execution.record_only_reason


async def test_the_plan_hash_check_refuses_what_its_old_pattern_refused(
    db: Database, database_url: str
) -> None:
    """Migration 0032 states the plan hash rule as a length and an unbounded class (the
    bounded repetition cost ~20 us a row): it takes exactly the strings '^[0-9a-f]{64}$' took."""
    who = await local_admin(db, "default")
    [done] = await executions.submit_many(db, who, [plan("h", level=1)])  # an approval too
    good = "0123456789abcdef" * 4
    candidates = [good, good[:-1], good + "0", good.upper(), good[:-1] + "g", good[:-1] + "é",
                  good[:-1] + "\n", good + "\n", "", " " + good[1:]]  # fmt: skip
    with psycopg.connect(database_url) as conn:
        for value in candidates:
            old = conn.execute("SELECT %s ~ '^[0-9a-f]{64}$'", (value,)).fetchone()
            assert old is not None
            try:
                with conn.transaction(force_rollback=True):
                    for table, column in (("executions", "id"), ("approvals", "execution_id")):
                        conn.execute(
                            f"UPDATE execution.{table} SET plan_hash = %s WHERE {column} = %s",
                            (value, done.execution.id),
                        )
                accepted = True
            except psycopg.errors.CheckViolation:
                accepted = False
            assert accepted is old[0] is bool(re.fullmatch("[0-9a-f]{64}", value)), value


async def test_a_key_an_unfinished_transaction_holds_is_answered_once_it_commits(
    db: Database, database_url: str
) -> None:
    """The bulk's insert is a plain one (held keys are looked up first): a key that only an
    unfinished transaction holds is invisible to the look-up, so the insert waits for it
    and then meets the unique index. The bulk must then be stored with ON CONFLICT, as a
    single submission is: the raced plan answered as the duplicate, the rest created."""
    who = await local_admin(db, "default")
    racer = await psycopg.AsyncConnection.connect(database_url)
    try:
        cur = await racer.execute(
            "INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key,"
            " plan_name, plan_snapshot, plan_hash, status, mode, sla_class, approval_level,"
            " priority, estimated_duration_s, trace_id) VALUES (gen_random_uuid(), 'default',"
            " 'racer', 'raced', 'racer', '{}', repeat('a', 64), 'approved', 'background',"
            " 'fast', 0, 5, 0, 'racer') RETURNING id"
        )
        held = await cur.fetchone()
        assert held is not None
        bulk = asyncio.create_task(
            submit_many(
                db,
                [
                    Request(plan("raced"), "default", who.actor_id, "raced", enqueue=True),
                    Request(plan("free"), "default", who.actor_id, "free", enqueue=True),
                ],
            )
        )
        # until the bulk's insert waits on the racer's row of the unique index
        for _ in range(200):
            if count(
                database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s",
                "%The whole bulk in one statement%",  # sql/bulk.sql's submit, by its opening
            ):
                break
            assert not bulk.done(), bulk
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the bulk never waited for the racer")
        await racer.commit()
        done = await asyncio.wait_for(bulk, 30)
    finally:
        await racer.close()
    assert [d.created for d in done] == [False, True]
    assert done[0].execution.id == held[0]
    assert count(database_url, "SELECT count(*) FROM execution.executions") == 2
