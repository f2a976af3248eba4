"""Executions over HTTP: submit (idempotent, immediate and background), list, get, steps,
events with long-poll, cancel; problem documents for bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opsconductor.api import routes_executions
from opsconductor.db import executions
from opsconductor.db.notify import EventHub
from opsconductor.status_machine import Status
from tests.api.support import LOCAL, Api, command_plan

URL = "/api/v1/executions"


async def _poll_until_finished(api: Api, headers: dict[str, str], ident: str) -> dict[str, Any]:
    """Follow the event stream by long-poll until the execution ends; returns every event."""
    after, seen = 0, []
    while True:
        r = await api.client.get(
            f"{URL}/{ident}/events", params={"after": after, "wait": 20}, headers=headers
        )
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["events"]
        after = page["last_event_id"]
        if page["status"] not in ("approved", "queued", "running", "pending_approval"):
            return {"status": page["status"], "events": seen}


async def test_submit_is_idempotent_over_http(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    plan = command_plan(("echo hello", "read", LOCAL))
    keyed = {**headers, "Idempotency-Key": "deploy-42"}

    first = await api.client.post(URL, json=plan, headers=keyed)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "completed"  # fast plan: the finished result comes back
    assert body["mode"] == "immediate"
    assert body["idempotency_key"] == "deploy-42"
    assert body["steps"][0]["output"].strip() == "hello"
    assert body["progress"]["percent"] == 100.0

    again = await api.client.post(URL, json=plan, headers=keyed)
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]

    other = await api.client.post(URL, json=plan, headers={**headers, "Idempotency-Key": "k2"})
    assert other.status_code == 201
    assert other.json()["id"] != body["id"]

    # Without a key the derived one (tenant, actor, plan hash) deduplicates too.
    derived = await api.client.post(
        URL, json=command_plan(("echo x", "read", LOCAL)), headers=headers
    )
    same = await api.client.post(URL, json=command_plan(("echo x", "read", LOCAL)), headers=headers)
    assert (derived.status_code, same.status_code) == (201, 200)
    assert same.json()["id"] == derived.json()["id"]


async def test_yaml_plan_body_is_accepted(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    text = (
        "name: yaml plan\n"
        "steps:\n"
        "  - {name: hi, type: command, command: echo yaml, targets: {hostnames: [localhost]}}\n"
    )
    r = await api.client.post(
        URL, content=text, headers={**headers, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["steps"][0]["output"].strip() == "yaml"


@pytest.mark.parametrize(
    ("plan", "path", "message"),
    [
        (
            {
                "name": "p",
                "steps": [
                    {
                        "name": "a",
                        "type": "command",
                        "comand": "true",
                        "command": "true",
                        "targets": LOCAL,
                    }
                ],
            },
            "steps[0].comand",
            "unknown field",
        ),
        (
            {
                "name": "p",
                "steps": [
                    {
                        "name": "a",
                        "type": "command",
                        "command": "true",
                        "targets": LOCAL,
                        "timeout_s": -1,
                    }
                ],
            },
            "steps[0].timeout_s",
            "must be > 0",
        ),
        (
            {
                "name": "p",
                "steps": [
                    {
                        "name": "a",
                        "type": "command",
                        "command": "true",
                        "targets": {"hostnames": ["nowhere"]},
                    }
                ],
            },
            "steps[0].targets",
            "no asset matches",
        ),
        ({"name": "p", "steps": []}, "steps", "must not be empty"),
    ],
)
async def test_invalid_plan_is_422_with_the_field_path(
    api: Api, plan: dict[str, Any], path: str, message: str
) -> None:
    headers = await api.login("acme", "alice", "admin")
    r = await api.client.post(URL, json=plan, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 422
    assert problem["detail"].startswith(f"{path}: {message}")
    assert problem["errors"][0]["path"] == path


async def test_malformed_body_is_400_and_not_a_traceback(api: Api) -> None:
    headers = await api.login("acme", "alice", "admin")
    r = await api.client.post(
        URL, content=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]
    assert "Traceback" not in r.text


async def test_background_plan_is_accepted_at_once_and_runs(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    # Ten one-second estimates make 10 s: the medium SLA class, background mode.
    plan = command_plan(*[(f"echo {i}", "read", LOCAL) for i in range(10)])
    r = await api.client.post(URL, json=plan, headers=headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["mode"] == "background"
    assert body["status"] == "queued"  # queued by the submission, for the worker pool
    assert body["sla_class"] == "medium"
    finished = await _poll_until_finished(api, headers, body["id"])
    assert finished["status"] == "completed"
    started = [e for e in finished["events"] if e["event_type"] == "step_started"]
    assert len(started) == 10
    steps = (await api.client.get(f"{URL}/{body['id']}/steps", headers=headers)).json()
    assert [s["output"].strip() for s in steps] == [str(i) for i in range(10)]


async def test_queue_true_hands_even_a_fast_plan_to_the_workers(api: Api) -> None:
    """``opsc submit`` through the API: the plan is queued, not run within the request."""
    headers = await api.login("acme", "alice", "operator")
    plan = command_plan(("echo fast", "read", LOCAL))
    r = await api.client.post(URL, json=plan, headers=headers, params={"queue": "true"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["mode"], body["status"], body["sla_class"]) == ("background", "queued", "fast")
    finished = await _poll_until_finished(api, headers, body["id"])
    assert finished["status"] == "completed"


async def test_list_filters_and_cursor_paging(api: Api) -> None:
    alice = await api.login("acme", "alice", "operator")
    bob = await api.login("acme", "bob", "operator")
    made = []
    for i in range(5):
        plan = command_plan((f"echo {i}", "read", LOCAL), name=f"p{i}", approval_level=1)
        r = await api.client.post(URL, json=plan, headers=alice if i < 4 else bob)
        made.append(r.json()["id"])
    await api.client.post(f"{URL}/{made[0]}/cancel", headers=alice)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get(URL, params=params, headers=alice)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(made))  # newest first, each exactly once

    by_bob = (await api.client.get(URL, params={"actor": "bob"}, headers=alice)).json()
    assert [i["id"] for i in by_bob["items"]] == [made[4]]
    cancelled = (await api.client.get(URL, params={"status": "cancelled"}, headers=alice)).json()
    assert [i["id"] for i in cancelled["items"]] == [made[0]]
    future = await api.client.get(URL, params={"since": "2999-01-01T00:00:00Z"}, headers=alice)
    assert future.json()["items"] == []

    bad_status = await api.client.get(URL, params={"status": "sleeping"}, headers=alice)
    assert bad_status.status_code == 422
    assert bad_status.json()["errors"][0]["path"] == "query.status"
    bad_cursor = await api.client.get(URL, params={"cursor": "garbage!"}, headers=alice)
    assert bad_cursor.status_code == 400


async def test_long_poll_returns_when_an_event_arrives(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic re-read: only the PostgreSQL notification can end the wait early.
    monkeypatch.setattr(routes_executions, "RECHECK_S", 300.0)
    headers = await api.login("acme", "alice", "operator")
    plan = command_plan(("true", "read", LOCAL), approval_level=1)
    ident = (await api.client.post(URL, json=plan, headers=headers)).json()["id"]
    first = (await api.client.get(f"{URL}/{ident}/events", headers=headers)).json()
    assert [e["event_type"] for e in first["events"]] == ["submitted"]
    cursor = first["last_event_id"]

    poll = asyncio.create_task(
        api.client.get(
            f"{URL}/{ident}/events", params={"after": cursor, "wait": 60}, headers=headers
        )
    )
    hub: EventHub = api.app.state.events
    await hub.listening.wait()
    await hub.until_waiting(ident)  # the request is parked on this execution
    assert not poll.done()
    # Another connection records news, as a worker in another process would.
    async with api.db.transaction() as conn:
        execution = await executions.get(conn, "acme", ident)
        await executions.append_event(conn, execution, "note", "someone", {"n": 1})

    r = await poll
    page = r.json()
    assert [e["event_type"] for e in page["events"]] == ["note"]
    assert page["last_event_id"] > cursor
    assert page["status"] == "pending_approval"


async def test_cancel_waiting_running_and_finished_executions(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    pending = (
        await api.client.post(
            URL, json=command_plan(("true", "read", LOCAL), approval_level=1), headers=headers
        )
    ).json()
    r = await api.client.post(f"{URL}/{pending['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "cancelled"
    assert r.json()["execution"]["cancelled_by"] == "alice"
    detail = (await api.client.get(f"{URL}/{pending['id']}", headers=headers)).json()
    assert detail["status"] == "cancelled"
    assert [s["status"] for s in detail["steps"]] == ["skipped"]  # it never ran

    again = await api.client.post(f"{URL}/{pending['id']}/cancel", headers=headers)
    assert again.status_code == 409
    assert "already ended: cancelled" in again.json()["detail"]

    # A running execution: the request is recorded for the cooperative cancel to act on.
    running = (
        await api.client.post(
            URL, json=command_plan(("echo 2", "read", LOCAL), approval_level=1), headers=headers
        )
    ).json()
    async with api.db.transaction() as conn:
        await executions.transition(
            conn, running["id"], Status.PENDING_APPROVAL, Status.APPROVED, actor_id="approver"
        )
        await executions.transition(
            conn, running["id"], Status.APPROVED, Status.RUNNING, actor_id="worker"
        )
    r = await api.client.post(f"{URL}/{running['id']}/cancel", headers=headers)
    assert r.status_code == 202
    assert r.json()["outcome"] == "requested"
    events = (await api.client.get(f"{URL}/{running['id']}/events", headers=headers)).json()
    assert events["events"][-1]["event_type"] == "cancel_requested"
    assert events["events"][-1]["actor_id"] == "alice"


async def test_oversize_body_is_413(api: Api) -> None:
    headers = await api.login("acme", "alice", "admin")
    big = {"name": "x" * (70 * 1024), "steps": []}
    r = await api.client.post(URL, json=big, headers=headers)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"

    async def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for _ in range(100):
            yield b"x" * 1024

    r = await api.client.post(
        URL, content=chunks(), headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert "exceeds" in r.json()["detail"]


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    headers = await api.login("acme", "alice", "admin")
    r = await api.client.get("/api/v1/nothing-here", headers=headers)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "no such resource: GET /api/v1/nothing-here"
    r = await api.client.delete(URL, headers=headers)
    assert r.status_code == 405
    assert r.json()["status"] == 405
    r = await api.client.get(f"{URL}/00000000-0000-0000-0000-000000000000", headers=headers)
    assert r.status_code == 404


async def test_stats_and_probes(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    await api.client.post(URL, json=command_plan(("true", "read", LOCAL)), headers=headers)
    await api.client.post(
        URL, json=command_plan(("false", "read", LOCAL), name="fails"), headers=headers
    )
    stats = (await api.client.get("/api/v1/stats", headers=headers)).json()
    assert stats["executions_by_status"] == {"completed": 1, "failed": 1}
    assert stats["executions_total"] == 2
    assert stats["queue_waiting"] == 0
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["pending_migrations"] == []


async def test_openapi_is_published_with_problem_errors(api: Api) -> None:
    doc = (await api.client.get("/api/v1/openapi.json")).json()
    submit = doc["paths"]["/api/v1/executions"]["post"]
    assert {"200", "201", "202", "401", "403", "413", "422"} <= set(submit["responses"])
    assert "application/problem+json" in submit["responses"]["422"]["content"]
    assert "token" in doc["components"]["securitySchemes"]


async def test_readyz_reports_unapplied_migrations(api: Api) -> None:
    async with api.db.connection() as conn:
        await conn.execute("DELETE FROM public.opsc_migrations WHERE version = 3")
    r = await api.client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "migrations not applied: 0003_auth"
