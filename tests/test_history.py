"""opsc history prune: the export holds exactly the removed rows, nothing unfinished goes,
audit_events stay, the caller is checked, and the CLI and the retention setting work."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsconductor import rbac
from opsconductor.db import history as store
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, PermissionDenied
from opsconductor.services import history
from opsconductor.services.caller import AuthMethod, Caller, local_admin
from opsconductor.status_machine import TERMINAL
from tests.helpers import run_plan
from tests.history_support import ACTIVITY, params
from tests.served import opsc

#: every table keyed to an execution, and how the export names its rows
KINDS = {
    "execution.executions": "execution",
    "execution.execution_steps": "step_attempt",
    "execution.execution_events": "event",
    "execution.approvals": "approval",
    "execution.approval_decisions": "approval_decision",
    "execution.execution_dlq": "dead_letter",
    "execution.execution_queue": "queue_entry",
    "execution.execution_locks": "lock",
}
Rows = dict[str, list[str]]


async def _rows(db: Database, tables: dict[str, str] = KINDS) -> Rows:
    """Every row of ``tables`` (every table keyed to executions), as canonical JSON text."""
    found: Rows = {}
    async with db.connection() as conn:
        for table, kind in tables.items():
            cur = await conn.execute(f"SELECT to_jsonb(t) AS j FROM {table} t")
            found[kind] = sorted(json.dumps(r["j"], sort_keys=True) for r in await cur.fetchall())
    return found


async def _history(db: Database) -> None:
    """Old finished runs (real and set-based), old unfinished ones (waiting for approval for
    60 days), a retry chain, a dead letter, an approval decision, an audit event."""
    for n in range(2):
        plan = {
            "name": f"real {n}",
            "steps": [{"name": "n", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
        }
        status, _, _ = await run_plan(db, plan)
        assert status == "completed"
    async with db.transaction() as conn:
        for sql in ACTIVITY:
            await conn.execute(sql, params("default", 40, "h"))
        await conn.execute("INSERT INTO execution.tenants (tenant_id) VALUES ('acme')")
        for sql in ACTIVITY:
            await conn.execute(sql, params("acme", 5, "o"))
        # Everything of 'default' is 60 days old; then a few stay unfinished, old as they are.
        await conn.execute(
            "UPDATE execution.executions SET created_at = created_at - interval '60 days', "
            "started_at = started_at - interval '60 days', "
            "finished_at = finished_at - interval '60 days' WHERE tenant_id = 'default'"
        )
        # a dead letter and a decision on an old finished execution: exported with it
        await conn.execute(
            "INSERT INTO execution.execution_dlq (execution_id, failure_reason, attempt_count) "
            "SELECT id, 'gave up', 3 FROM execution.executions WHERE idempotency_key = 'h1'"
        )
        await conn.execute(
            "INSERT INTO execution.approval_decisions (approval_id, actor_id, decision) "
            "SELECT a.id, 'ann', 'reject' FROM execution.approvals a "
            "JOIN execution.executions e ON e.id = a.execution_id WHERE e.idempotency_key = 'hw1'"
        )
        # h3 retried by a recent execution (kept), and h2 retried by h3: both must stay.
        await conn.execute(
            "UPDATE execution.executions SET retry_of = (SELECT id FROM execution.executions "
            "WHERE idempotency_key = 'h2') WHERE idempotency_key = 'h3'"
        )
        await conn.execute(
            """INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key,
                plan_name, plan_snapshot, plan_hash, status, mode, sla_class, approval_level,
                priority, estimated_duration_s, trace_id, retry_of)
            SELECT gen_random_uuid(), 'default', 'tester', 'recent', 'p', '{}', repeat('c', 64),
                   'approved', 'immediate', 'fast', 0, 5, 1, 't', id
            FROM execution.executions WHERE idempotency_key = 'h3'"""
        )
        await conn.execute(
            "INSERT INTO execution.audit_events (tenant_id, actor_id, event_type) "
            "VALUES ('default', 'tester', 'something_old')"
        )


def _export(path: Path) -> tuple[dict[str, Any], Rows, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    header, *records, summary = lines
    assert header["kind"] == "export" and summary["kind"] == "summary"
    found: Rows = {kind: [] for kind in KINDS.values()}
    for line in records:
        found[line["kind"]].append(json.dumps(line["row"], sort_keys=True))
    return header, {k: sorted(v) for k, v in found.items()}, summary


async def test_prune_exports_exactly_the_removed_rows_and_nothing_unfinished(
    db: Database, tmp_path: Path
) -> None:
    await _history(db)
    before = await _rows(db)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT * FROM execution.audit_events ORDER BY id")
        audit_before = await cur.fetchall()
        cur = await conn.execute(
            "SELECT id FROM execution.executions "
            "WHERE status <> ALL(%s::execution.execution_status[])",
            (sorted(TERMINAL),),
        )
        unfinished = {r["id"] for r in await cur.fetchall()}
    assert len(unfinished) >= 3  # the old ones still waiting for approval, among others

    path = tmp_path / "export.jsonl"
    who = await local_admin(db, "default")
    report = await history.prune(
        db, who, export=path, before=datetime.now(UTC) - timedelta(days=30), tenant_id="default"
    )

    after = await _rows(db)
    removed = {k: sorted(set(before[k]) - set(after[k])) for k in before}
    assert all(set(after[k]) <= set(before[k]) for k in before)  # prune only removes
    header, exported, summary = _export(path)
    assert exported == removed  # exactly the removed rows, each once
    assert summary["counts"] == {k: len(v) for k, v in removed.items() if v}
    assert report.executions == len(removed["execution"]) > 40
    for kind in ("step_attempt", "event", "approval", "approval_decision", "dead_letter"):
        assert removed[kind], kind  # every kind keyed to an execution is covered
    assert header["cutoffs"].keys() == {"default"}
    assert header["statuses"] == sorted(TERMINAL)
    gone = [json.loads(r) for r in removed["execution"]]
    assert all(e["status"] in TERMINAL and e["tenant_id"] == "default" for e in gone)

    left = [json.loads(r) for r in after["execution"]]
    assert {str(i) for i in unfinished} <= {e["id"] for e in left}  # nothing unfinished went
    kept = {e["idempotency_key"] for e in left if e["tenant_id"] == "default"}
    assert {"h2", "h3", "recent", "hw2", "hw3"} <= kept  # retry chain and unfinished stay
    assert "hw1" not in kept  # rejected long ago: finished, pruned with its decision
    assert report.kept_referenced == 2
    assert any(e["tenant_id"] == "acme" for e in left)  # another tenant is untouched
    assert path.stat().st_mode & 0o777 == 0o600

    async with db.connection() as conn:
        cur = await conn.execute("SELECT * FROM execution.audit_events ORDER BY id")
        audit_after = await cur.fetchall()
    assert audit_after[: len(audit_before)] == audit_before  # the audit trail stays whole
    [note] = audit_after[len(audit_before) :]
    assert note["event_type"] == "history_pruned" and note["tenant_id"] == "default"
    assert note["payload"]["counts"]["execution"] == report.executions

    # The same prune again finds nothing more, and never overwrites an export.
    with pytest.raises(BadInput, match="exists"):
        await history.prune(db, who, export=path, before=datetime.now(UTC) - timedelta(days=30))
    again = await history.prune(
        db,
        who,
        export=tmp_path / "again.jsonl",
        before=datetime.now(UTC) - timedelta(days=30),
        tenant_id="default",
    )
    assert again.executions == 0


async def test_every_table_a_deleted_execution_reaches_is_exported(db: Database) -> None:
    async with db.connection() as conn:
        assert await store.cascading_tables(conn) == store.EXPORTED_TABLES | store.UNLINKED_TABLES
        # the unlinked tables' rows really stay: their link is set to NULL, never cascaded
        cur = await conn.execute(
            "SELECT conrelid::regclass::text AS t, confdeltype::text AS d FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'execution.executions'::regclass "
            "AND conrelid::regclass::text = ANY(%s)",
            (sorted(store.UNLINKED_TABLES),),
        )
        rules = {(r["t"], r["d"]) for r in await cur.fetchall()}
        assert {t for t, _ in rules} == store.UNLINKED_TABLES
        assert {d for _, d in rules} == {"n"}
    assert set(KINDS) - {"execution.executions"} == store.EXPORTED_TABLES


async def test_who_may_prune(db: Database, tmp_path: Path) -> None:
    cut = datetime.now(UTC)
    admin = Caller("acme", "ada", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.TOKEN)
    operator = Caller("acme", "otto", (rbac.BUILTIN_ROLES["operator"],), AuthMethod.TOKEN)
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO execution.tenants (tenant_id) VALUES ('acme')")
    for who, tenant in ((admin, None), (admin, "default"), (operator, "acme")):
        with pytest.raises(PermissionDenied):
            await history.prune(db, who, export=tmp_path / "x", before=cut, tenant_id=tenant)
        with pytest.raises(PermissionDenied):
            await history.prune(db, who, export=tmp_path / "x", retention=True, tenant_id=tenant)
    assert not (tmp_path / "x").exists()
    done = await history.prune(db, admin, export=tmp_path / "ok", before=cut, tenant_id="acme")
    assert done.cutoffs.keys() == {"acme"}
    with pytest.raises(PermissionDenied):
        await history.set_retention(db, operator, 30)
    await history.set_retention(db, admin, 30)
    assert await history.retention(db, admin) == 30


def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_opsc_history_prune_and_retention(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        for sql in ACTIVITY:
            conn.execute(sql, params("default", 10, "q"))
        conn.execute(
            "UPDATE execution.executions SET created_at = created_at - interval '40 days', "
            "started_at = started_at - interval '40 days', "
            "finished_at = finished_at - interval '40 days' WHERE idempotency_key <> 'qw3'"
        )
    assert "retention off" in opsc(cli_env, "history", "retention").stdout
    bad = opsc(cli_env, "history", "prune", "--before", "last week", "--export", "x")
    assert bad.returncode == 2 and "--before" in bad.stderr
    assert opsc(cli_env, "history", "retention", "50").returncode == 0
    quiet = opsc(cli_env, "history", "prune", "--retention", "--export", str(tmp_path / "a"))
    assert quiet.returncode == 0, quiet.stderr
    assert "pruned 1 execution(s)" in quiet.stdout  # the rejection, 100 days old
    set_ = opsc(cli_env, "history", "retention", "30")
    assert "30 day(s)" in set_.stdout
    done = opsc(cli_env, "history", "prune", "--retention", "--export", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert "pruned 10 execution(s)" in done.stdout
    lines = (tmp_path / "b").read_text().splitlines()
    assert sum(json.loads(x)["kind"] == "execution" for x in lines) == 10
    left = _fetch(database_url, "SELECT status::text FROM execution.executions ORDER BY 1")
    assert left == [("pending_approval",), ("pending_approval",)]
    by_date = opsc(
        cli_env, "history", "prune", "--before", "2999-01-01", "--export", str(tmp_path / "c")
    )
    assert by_date.returncode == 0 and "pruned 0 execution(s)" in by_date.stdout


#: the webhook deliveries and fired schedule slots, as canonical JSON text per kind
TRAIL = {"execution.hook_deliveries": "hook_delivery", "execution.schedule_fires": "schedule_fire"}


async def _deliveries_and_fires(db: Database) -> None:
    """Per tenant (default, acme): a hook with deliveries 40 days, 10 days and 2 minutes old;
    a schedule that last fired 38 days ago, and one that fired 40 days and 1 day ago."""
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO execution.tenants (tenant_id) VALUES ('acme')")
        for tenant in ("default", "acme"):
            hook = f"hook{tenant:0>12}"
            await conn.execute(
                "INSERT INTO execution.jobs (tenant_id, name, latest_version, created_by) "
                "VALUES (%s, 'deploy', 1, 'ann')",
                (tenant,),
            )
            await conn.execute(
                "INSERT INTO execution.job_hooks (id, tenant_id, job_name, secret_path, "
                "created_by) VALUES (%s, %s, 'deploy', 'hooks/x', 'ann')",
                (hook, tenant),
            )
            for n, (age, accepted) in enumerate(
                [
                    ("40 days", True),
                    ("40 days", False),
                    ("39 days", True),
                    ("10 days", False),
                    ("2 minutes", True),
                ]
            ):
                await conn.execute(
                    "INSERT INTO execution.hook_deliveries (hook_id, tenant_id, accepted, "
                    "status_code, signature, received_at) "
                    "VALUES (%s, %s, %s, %s, %s, now() - %s::interval)",
                    (hook, tenant, accepted, 202 if accepted else 401, f"{n}" * 64, age),
                )
            for name, ages in (
                ("old", ("40 days", "39 days", "38 days")),
                ("busy", ("40 days", "1 day")),
            ):
                await conn.execute(
                    "INSERT INTO execution.schedules (id, tenant_id, name, job_name, cron, "
                    "timezone, next_fire_at, created_by) VALUES (gen_random_uuid(), %s, %s, "
                    "'deploy', '0 3 * * *', 'UTC', now() + interval '1 day', 'ann')",
                    (tenant, name),
                )
                for age in ages:
                    await conn.execute(
                        "INSERT INTO execution.schedule_fires (schedule_id, slot, fired_by) "
                        "SELECT id, now() - %s::interval, 'w' FROM execution.schedules "
                        "WHERE tenant_id = %s AND name = %s",
                        (age, tenant, name),
                    )


def _trail_of(path: Path) -> Rows:
    found: Rows = {kind: [] for kind in TRAIL.values()}
    for text in path.read_text().splitlines():
        line = json.loads(text)
        if line["kind"] in found:
            found[line["kind"]].append(json.dumps(line["row"], sort_keys=True))
    return {k: sorted(v) for k, v in found.items()}


async def test_prune_takes_old_deliveries_and_fired_slots_but_what_guards_stays(
    db: Database, tmp_path: Path
) -> None:
    await _deliveries_and_fires(db)
    before = await _rows(db, TRAIL)
    who = await local_admin(db, "default")
    month = tmp_path / "month.jsonl"
    report = await history.prune(
        db, who, export=month, before=datetime.now(UTC) - timedelta(days=30), tenant_id="default"
    )
    after = await _rows(db, TRAIL)
    removed = {k: sorted(set(before[k]) - set(after[k])) for k in before}
    assert all(set(after[k]) <= set(before[k]) for k in before)
    assert _trail_of(month) == removed  # exactly the removed rows, each once
    assert report.counts["hook_delivery"] == len(removed["hook_delivery"]) == 3
    gone = [json.loads(r) for r in removed["schedule_fire"]]
    # "old" keeps its latest slot (38 days); "busy" loses its 40-day one
    assert len(gone) == 3
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT s.tenant_id, s.name, count(*) AS n, "
            "round(extract(epoch FROM now() - max(f.slot)) / 86400) AS newest "
            "FROM execution.schedule_fires f JOIN execution.schedules s ON s.id = f.schedule_id "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        left = [(r["tenant_id"], r["name"], r["n"], int(r["newest"])) for r in await cur.fetchall()]
    assert left == [
        ("acme", "busy", 2, 1),
        ("acme", "old", 3, 38),  # another tenant is untouched
        ("default", "busy", 1, 1),
        ("default", "old", 1, 38),
    ]
    summary = json.loads(month.read_text().splitlines()[-1])
    assert summary["counts"]["schedule_fire"] == 3 and summary["counts"]["hook_delivery"] == 3

    # A cut-off in the future takes every delivery but one still inside the signature
    # window: its row is what refuses a replay of it.
    later = tmp_path / "later.jsonl"
    await history.prune(
        db, who, export=later, before=datetime.now(UTC) + timedelta(days=1), tenant_id="default"
    )
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT tenant_id, accepted, now() - received_at < interval '1 hour' AS recent "
            "FROM execution.hook_deliveries ORDER BY 1, 2, 3"
        )
        kept = [(r["tenant_id"], r["accepted"], r["recent"]) for r in await cur.fetchall()]
    assert (
        kept.count(("default", True, True)) == 1
        and len([k for k in kept if k[0] == "default"]) == 1
    )
    assert len([k for k in kept if k[0] == "acme"]) == 5
    assert len(_trail_of(later)["hook_delivery"]) == 1  # the 10-day-old refusal
