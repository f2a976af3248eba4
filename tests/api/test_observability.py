"""Progress endpoint, SLA violation alerts, /metrics, /readyz with worker heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsconductor import sla
from opsconductor.db import executions, workers
from opsconductor.db.connection import Database
from tests.api.support import Api, command_plan

LOCAL = {"hostnames": ["localhost"]}


async def _submit(api: Api, headers: dict[str, str], plan: dict[str, Any]) -> dict[str, Any]:
    r = await api.client.post("/api/v1/executions", json=plan, headers=headers)
    assert r.status_code in (201, 202), r.text
    return dict(r.json())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_progress_counts_percent_and_an_eta_from_the_same_steps_history(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    slow = ("sleep 0.2", "read", LOCAL)
    done = await _submit(api, headers, command_plan(slow, slow, slow))
    assert done["status"] == "completed"
    r = await api.client.get(f"/api/v1/executions/{done['id']}/progress", headers=headers)
    assert r.status_code == 200, r.text
    finished = r.json()
    assert finished["status"] == "completed"
    assert (finished["total"], finished["done"], finished["pending"]) == (3, 3, 0)
    assert finished["percent"] == 100.0 and finished["eta_s"] == 0
    [(key, typical)] = finished["typical_s"].items()  # one step key: the same command
    assert key.startswith("command:") and finished["samples"][key] == 3
    assert 0.2 <= typical < 2.0

    waiting = await _submit(api, headers, command_plan(slow, slow, name="two", approval_level=1))
    r = await api.client.get(f"/api/v1/executions/{waiting['id']}/progress", headers=headers)
    body = r.json()
    assert (body["total"], body["pending"], body["done"], body["percent"]) == (2, 2, 0, 0.0)
    # Two steps, one after the other, each expected to take what it took before.
    assert body["eta_s"] == pytest.approx(2 * body["typical_s"][key], abs=0.02)
    assert "earlier runs" in body["eta_basis"]

    # A step that never ran gives no basis: no ETA, and the reason, not a borrowed guess.
    novel = command_plan(slow, ("echo new", "read", LOCAL), name="new", approval_level=1)
    unknown = await _submit(api, headers, novel)
    r = await api.client.get(f"/api/v1/executions/{unknown['id']}/progress", headers=headers)
    assert r.json()["eta_s"] is None
    assert r.json()["eta_basis"] == "unknown: step 2 'step 1' has no earlier run to go by"
    other = await api.login("globex", "bob", "operator")
    assert (
        await api.client.get(f"/api/v1/executions/{waiting['id']}/progress", headers=other)
    ).status_code == 404


async def test_sla_violation_is_flagged_once_as_an_event_and_counted(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    done = await _submit(api, headers, command_plan(("sleep 2", "read", LOCAL)))
    quick = await _submit(api, headers, command_plan(("true", "read", LOCAL), name="quick"))
    assert done["sla_class"] == "fast"
    # A budget between the two runs: the slow one violates it, the quick one does not (wide
    # apart: a sandboxed `true` took 0.29 s on a loaded machine, past a 0.25 s budget).
    sweeps = await asyncio.gather(*(sla.sweep(db, fast_s=1.5) for _ in range(5)))
    flagged = [row for found in sweeps for row in found]
    assert [str(row["execution_id"]) for row in flagged] == [done["id"]]  # exactly once
    assert await sla.sweep(db, fast_s=1.5) == []
    async with db.connection() as conn:
        events = await executions.events(conn, done["id"])
    alert = [e for e in events if e.event_type == "sla_violation"]
    assert len(alert) == 1
    assert alert[0].payload["sla_class"] == "fast"
    assert alert[0].payload["budget_s"] == 1.5
    assert alert[0].payload["elapsed_s"] > 1.5
    text = (await api.client.get("/metrics")).text
    found = _samples(text)
    violations = (("sla_class", "fast"), ("tenant", "acme"))
    assert found[("opsc_sla_violations_total", violations)] == 1
    assert found[("opsc_sla_compliance_ratio", (("sla_class", "fast"),))] == 0.5
    assert str(quick["id"]) not in text


async def test_metrics_expose_the_listed_series_with_plausible_values(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    viewer = await api.login("acme", "vic", "viewer")
    for n in range(3):
        await _submit(api, headers, command_plan(("sleep 0.1", "read", LOCAL), name=f"run {n}"))
    pending = await _submit(
        api, headers, command_plan(("true", "read", LOCAL), name="waits", approval_level=1)
    )
    approver = await api.login("acme", "ann", "approver")
    approved = await _submit(
        api, headers, command_plan(("true", "read", LOCAL), name="approved", approval_level=1)
    )
    r = await api.client.post(
        f"/api/v1/executions/{approved['id']}/approve", json={}, headers=approver
    )
    assert r.status_code == 200, r.text
    denied = await api.client.post(
        "/api/v1/executions", json=command_plan(("true", "read", LOCAL)), headers=viewer
    )
    assert denied.status_code == 403
    async with db.connection() as conn:  # what the queue would hold for a background plan
        # due in an hour: the app's own worker (1 s poll) would otherwise claim the row and,
        # the execution awaiting approval, drop it before /metrics is read (seen on a loaded
        # machine)
        await conn.execute(
            "INSERT INTO execution.execution_queue (execution_id, priority, available_at) "
            "VALUES (%s, 5, now() + interval '1 hour')",
            (pending["id"],),
        )
        await conn.execute(
            "INSERT INTO execution.execution_dlq (execution_id, failure_reason, attempt_count) "
            "VALUES (%s, 'test', 3)",
            (pending["id"],),
        )
        await workers.register(conn, workers.Identity("w-1", "host-a", 4242, 4))
        await workers.heartbeat(conn, "w-1", 2)

    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    found = _samples(r.text)
    acme = ("tenant", "acme")
    assert found[("opsc_executions", (("status", "completed"), acme))] >= 3
    assert found[("opsc_executions", (("status", "pending_approval"), acme))] == 1
    command = (("step_type", "command"),)
    count = found[("opsc_step_duration_seconds_count", command)]
    assert count >= 3
    assert found[("opsc_step_duration_seconds_sum", command)] >= 0.3
    buckets = [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in found.items()
        if name == "opsc_step_duration_seconds_bucket"
    ]
    assert sorted(buckets) == sorted(buckets, key=lambda b: (b[1], b[0]))  # cumulative
    assert max(v for _, v in buckets) == count
    assert found[("opsc_step_retries_total", command)] == 0
    depth = {
        state: found.get(("opsc_queue_depth", (("state", state), acme)), 0)
        for state in ("waiting", "leased")
    }
    assert depth == {"waiting": 1, "leased": 0}
    assert found[("opsc_queue_oldest_wait_seconds", (acme,))] >= 0
    assert found[("opsc_dlq_size", (acme,))] == 1
    assert found[("opsc_approval_wait_seconds_count", ())] == 1
    assert found[("opsc_approvals_pending", ())] == 1
    assert found[("opsc_lease_renewals_total", ())] == 0
    assert ("opsc_queue_wait_seconds_count", ()) in found
    assert found[("opsc_lock_wait_seconds_count", ())] >= 3  # per-process: engines ran here
    assert found[("opsc_workers_alive", ())] == 2  # w-1 and the API's own worker pool
    assert found[("opsc_workers_in_flight", ())] >= 2
    assert (
        found[("opsc_api_rbac_denials_total", (("action", "submit"), ("resource", "executions")))]
        >= 1
    )
    assert ("opsc_stream_clients", ()) in found
    for name in ("opsc_rbac_violations", "opsc_sla_violations", "opsc_sla_compliance_ratio"):
        assert f"# TYPE {name}" in r.text


async def test_readyz_reports_worker_heartbeats_and_healthz_is_open(api: Api, db: Database) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    async with db.connection() as conn:
        await workers.register(conn, workers.Identity("w-live", "h", 10, 2))
        await workers.heartbeat(conn, "w-live", 1)
        await workers.register(conn, workers.Identity("w-dead", "h", 11, 2))
        await conn.execute(
            "UPDATE execution.workers SET last_heartbeat_at = now() - interval '1 minute' "
            "WHERE worker_id = 'w-dead'"
        )
        await workers.register(conn, workers.Identity("w-gone", "h", 12, 2))
        await workers.stopped(conn, "w-gone")
    ready = (await api.client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["database"] is True
    # w-live and the API's own worker pool; w-gone signed off, so neither alive nor stale
    assert (ready["workers"]["alive"], ready["workers"]["stale"]) == (2, 1)
    assert ready["workers"]["in_flight"] >= 1
