"""Notifications end to end: real executions, the dispatcher of the workers, a real HTTP
receiver checking the signature, a real SMTP server (aiosmtpd), retries with back-off and
the delivery log."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor import notifications, secret_store, sla
from opsconductor.config import load_settings
from opsconductor.db import queue
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import BadInput
from opsconductor.notification_dispatch import Dispatcher, DispatchOptions
from opsconductor.notifications import DeliveryState
from opsconductor.plan import parse_plan
from opsconductor.services import notifications as service
from opsconductor.services.caller import Caller, local_admin
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import admin
from tests.notify_support import dispatch_until, http_receiver, self_signed, smtp_receiver

KEY = "whsec-7Hq2-signing-key-for-tests"


@pytest.fixture
async def caller(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Caller:
    """The tenant's admin, with the webhook signing key in the secret store."""
    monkeypatch.setenv("OPSC_HOME", str(tmp_path / "home"))
    who = await local_admin(db, "default")
    await secret_store.put(db, load_settings().home, "default", "kv/hooks/sign", KEY, "t")
    return who


def _dispatcher(db: Database, **options: Any) -> Dispatcher:
    return Dispatcher(db, load_settings(), DispatchOptions(backoff_base_s=0.0, **options))


async def _failing_run(db: Database, port: int) -> uuid.UUID:
    """An execution that fails: its http step expects 200 from a receiver answering 500."""
    plan = {
        "name": "health-check",
        "steps": [
            {
                "name": "probe",
                "type": "http",
                "targets": {"hostnames": ["localhost"]},
                "url": f"http://127.0.0.1:{port}/down",
                "method": "POST",
                "expect": {"status": 200},
            }
        ],
    }
    submitted = await submit(db, Request(parse_plan(plan), "default", await admin(db, "tester")))
    status = await Engine(db, actor_id="tester").run("default", submitted.execution.id)
    assert status is Status.FAILED
    return submitted.execution.id


async def test_a_failed_execution_reaches_a_webhook_signed(
    db: Database, host_network: None, caller: Caller
) -> None:
    with http_receiver(200) as hook, http_receiver(500) as down:
        await service.add_webhook(
            db,
            caller,
            load_settings(),
            "ops-hook",
            url=hook.url,
            secret="kv/hooks/sign",
            events=["execution_failed"],
        )
        execution_id = await _failing_run(db, int(down.url.split(":")[2].split("/")[0]))
        await dispatch_until(_dispatcher(db), lambda: len(hook.requests) == 1)
    got = hook.requests[0]
    stamp, sig = got.headers["X-Opsc-Timestamp"], got.headers["X-Opsc-Signature"]
    assert notifications.verify(KEY.encode(), stamp, got.body, sig)
    assert not notifications.verify(KEY.encode(), stamp, got.body + b" ", sig)
    assert not notifications.verify(b"another key", stamp, got.body, sig)
    message = json.loads(got.body)
    assert message["event"] == "execution_failed"
    assert message["execution_id"] == str(execution_id)
    assert message["tenant"] == "default"
    assert (message["plan_name"], message["status"]) == ("health-check", "failed")
    assert message["link"] == f"/console/#/executions/{execution_id}"
    assert message["failures"][0]["step"] == "probe"
    assert got.headers["X-Opsc-Delivery"] == message["id"]
    # Only what it subscribed to: the run's other status changes were not sent.
    logs = await service.deliveries(db, caller)
    assert [(d.delivery.event_kind.value, d.delivery.state) for d in logs] == [
        ("execution_failed", DeliveryState.DELIVERED)
    ]
    assert [(a.ok, a.detail) for a in logs[0].attempts] == [(True, "HTTP 200")]


async def test_email_for_a_failed_execution_reaches_an_smtp_server(
    db: Database, host_network: None, caller: Caller
) -> None:
    with smtp_receiver() as box, http_receiver(500) as down:
        await service.add_email(
            db,
            caller,
            load_settings(),
            "oncall-mail",
            email=service.EmailSettings(
                box.host, box.port, "opsc@example.org", ("oncall@example.org",)
            ),
            events=["execution_failed", "execution_timed_out"],
        )
        execution_id = await _failing_run(db, int(down.url.split(":")[2].split("/")[0]))
        await dispatch_until(_dispatcher(db), lambda: len(box.messages) == 1)
    sender, recipients, _ = box.messages[0]
    assert (sender, recipients) == ("opsc@example.org", ["oncall@example.org"])
    mail = box.parsed()
    assert mail["Subject"] == "[opsc] execution_failed: health-check (default)"
    text = mail.get_content()
    assert f"execution_id: {execution_id}" in text
    assert "failed: step 'probe'" in text


async def test_a_failed_delivery_is_retried_and_logged(
    db: Database, host_network: None, caller: Caller
) -> None:
    with http_receiver(500, 200) as hook:
        await service.add_webhook(
            db,
            caller,
            load_settings(),
            "flaky",
            url=hook.url,
            secret="kv/hooks/sign",
            events=["all"],
        )
        # An approval request is one of the events: a level-1 plan waits for one.
        plan = parse_plan(
            {
                "name": "needs-approval",
                "approval_level": 1,
                "steps": [
                    {
                        "name": "noop",
                        "type": "command",
                        "action_class": "read",
                        "targets": {"hostnames": ["localhost"]},
                        "command": "true",
                    }
                ],
            }
        )
        submitted = await submit(db, Request(plan, "default", await admin(db, "tester")))
        assert submitted.execution.status is Status.PENDING_APPROVAL
        await dispatch_until(_dispatcher(db), lambda: len(hook.requests) == 2)
    first, second = (json.loads(r.body) for r in hook.requests)
    assert first == second  # the same message, the same idempotency key
    assert first["event"] == "approval_requested"
    assert first["execution_id"] == str(submitted.execution.id)
    [log] = await service.deliveries(db, caller, "flaky")
    assert (log.delivery.state, log.delivery.attempts) == (DeliveryState.DELIVERED, 2)
    assert [(a.attempt, a.ok, a.detail) for a in log.attempts] == [
        (1, False, "HTTP 500"),
        (2, True, "HTTP 200"),
    ]


async def test_attempts_are_bounded_then_the_delivery_is_failed(
    db: Database, host_network: None, caller: Caller
) -> None:
    with http_receiver(503) as hook:
        await service.add_webhook(
            db,
            caller,
            load_settings(),
            "down",
            url=hook.url,
            secret="kv/hooks/sign",
            events=["all"],
        )
        tested = await service.test(db, caller, load_settings(), "down")
        assert tested.delivery.state is DeliveryState.PENDING  # retried later
        dispatcher = _dispatcher(db, max_attempts=3)
        await dispatch_until(dispatcher, lambda: len(hook.requests) == 3)
        for _ in range(5):  # nothing more is tried
            await dispatcher.round()
    assert len(hook.requests) == 3
    [log] = await service.deliveries(db, caller, "down")
    assert (log.delivery.state, log.delivery.attempts) == (DeliveryState.FAILED, 3)
    assert log.delivery.last_error == "HTTP 503"
    assert json.loads(hook.requests[0].body)["event"] == "test"


async def test_the_cursor_waits_for_an_event_that_commits_late(
    db: Database, host_network: None, caller: Caller
) -> None:
    """Event ids are drawn in commit order per execution only: an open transaction holding
    a lower id must still be seen once it commits, not skipped by the cursor."""
    with http_receiver(200) as hook:
        await service.add_webhook(
            db,
            caller,
            load_settings(),
            "late",
            url=hook.url,
            secret="kv/hooks/sign",
            events=["sla_violated"],
        )
        plan = parse_plan(
            {
                "name": "late",
                "steps": [
                    {"name": "noop", "type": "noop", "targets": {"hostnames": ["localhost"]}}
                ],
            }
        )
        first = await submit(db, Request(plan, "default", await admin(db, "tester"), "k1"))
        second = await submit(db, Request(plan, "default", "tester", "k2"))
        dispatcher = _dispatcher(db)
        event = (
            "INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, "
            "actor_id) VALUES (%s, 'default', 'sla_violation', 'test')"
        )
        async with db.transaction() as slow:
            await slow.execute(event, (first.execution.id,))  # the lower id, still open
            async with db.transaction() as fast:
                await fast.execute(event, (second.execution.id,))
            for _ in range(3):
                await dispatcher.round()  # sees the higher id only; the cursor must wait
        await dispatch_until(dispatcher, lambda: len(hook.requests) == 2)
    assert {json.loads(r.body)["execution_id"] for r in hook.requests} == {
        str(first.execution.id),
        str(second.execution.id),
    }


async def test_channel_settings_are_checked(db: Database, caller: Caller) -> None:
    settings = load_settings()
    with pytest.raises(BadInput, match="secret: secret 'kv/nope' not found"):
        await service.add_webhook(
            db,
            caller,
            settings,
            "x",
            url="https://hooks.example.org/a",
            secret="kv/nope",
            events=["all"],
        )
    with pytest.raises(BadInput, match="events: 'everything'"):
        await service.add_webhook(
            db,
            caller,
            settings,
            "x",
            url="https://hooks.example.org/a",
            secret="kv/hooks/sign",
            events=["everything"],
        )
    channel = await service.add_webhook(
        db,
        caller,
        settings,
        "x",
        url="https://hooks.example.org/a",
        secret="kv/hooks/sign",
        events=["dlq_entry", "sla_violated"],
    )
    assert channel.events == (
        notifications.EventKind.SLA_VIOLATED,
        notifications.EventKind.DLQ_ENTRY,
    )
    with pytest.raises(BadInput, match="exists already"):
        await service.add_webhook(
            db,
            caller,
            settings,
            "x",
            url="https://hooks.example.org/b",
            secret="kv/hooks/sign",
            events=["all"],
        )
    await service.remove(db, caller, "x")
    assert await service.channels(db, caller) == []


async def test_dead_letters_and_sla_violations_are_told(
    db: Database, host_network: None, caller: Caller
) -> None:
    with http_receiver(200) as hook:
        await service.add_webhook(
            db,
            caller,
            load_settings(),
            "ops",
            url=hook.url,
            secret="kv/hooks/sign",
            events=["dlq_entry", "sla_violated"],
        )
        plan = parse_plan(
            {
                "name": "poison",
                "steps": [{"name": "n", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
            }
        )
        actor = await admin(db, "tester")
        queued = await submit(db, Request(plan, "default", actor, "dlq", enqueue=True))
        for _ in range(3):  # three attempts without a verdict: dead-lettered
            (lease,) = await queue.claim(db, "w", limit=1)
            await queue.fail(db, lease, "worker lost", "w")
            async with db.connection() as conn:
                await conn.execute("UPDATE execution.execution_queue SET available_at = now()")
        ran = await submit(db, Request(plan, "default", actor, "sla"))
        await Engine(db, actor_id="tester").run("default", ran.execution.id)
        flagged = await sla.sweep(db, fast_s=0.0, medium_s=0.0)  # every budget is spent
        assert ran.execution.id in {row["execution_id"] for row in flagged}
        await dispatch_until(_dispatcher(db), lambda: len(hook.requests) >= 2)
    told = {(m["event"], m["execution_id"]) for m in (json.loads(r.body) for r in hook.requests)}
    assert ("dlq_entry", str(queued.execution.id)) in told
    assert ("sla_violated", str(ran.execution.id)) in told
    dead = next(json.loads(r.body) for r in hook.requests if b"dlq_entry" in r.body)
    assert "worker lost" in dead["detail"]["reason"]


async def test_email_over_starttls_with_a_login_from_the_secret_store(
    db: Database,
    host_network: None,
    caller: Caller,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = self_signed(tmp_path)
    password = "smtp-Pass-5521-zz"
    await secret_store.put(db, load_settings().home, "default", "kv/smtp/pw", password, "t")
    with smtp_receiver(tls=(cert, key), password=password) as box:
        await service.add_email(
            db,
            caller,
            load_settings(),
            "tls-mail",
            email=service.EmailSettings(
                box.host,
                box.port,
                "opsc@example.org",
                ("oncall@example.org",),
                starttls=True,
                username="opsc",
                password_secret="kv/smtp/pw",
            ),
            events=["all"],
        )
        untrusted = await service.test(db, caller, load_settings(), "tls-mail")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trust this server's certificate
        tested = await service.test(db, caller, load_settings(), "tls-mail")
    # The certificate is checked: nothing (no password) went to a server it could not trust.
    assert untrusted.delivery.state is DeliveryState.PENDING
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.delivery.last_error or "")
    assert tested.delivery.state is DeliveryState.DELIVERED, tested.attempts
    assert box.logins == [("opsc", password)]
    assert len(box.messages) == 1 and password.encode() not in box.messages[0][2]
    channel = (await service.channels(db, caller))[0]
    assert password not in repr(channel)  # stored and shown by reference only
