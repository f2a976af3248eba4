"""No secret in any notification. Attack: a plan whose step prints the secret it was given
(as is, base64, on stderr) and fails, so the failure message, the last stderr lines and
the status travel to a webhook and an email; and a plan that writes the secret value into
its own name, which no capture-time masker ever sees. Neither receiver may get the value
in any form, nor the channel's own signing key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from opsconductor import masking, secret_store
from opsconductor.config import load_settings
from opsconductor.db.connection import Database
from opsconductor.notification_dispatch import Dispatcher, DispatchOptions
from opsconductor.services import notifications as service
from opsconductor.services.caller import local_admin
from opsconductor.status_machine import Status
from tests.helpers import run_plan
from tests.notify_support import dispatch_until, http_receiver, smtp_receiver
from tests.security.local_support import needs_sandbox

SECRET = "s3cr3t-Vq81-TOKEN-zz904"
SIGNING = "whsec-Pq41-signing-key-zz"


def _forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [
        raw,
        raw.lower(),
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
        json.dumps(value).encode(),
    ]


@needs_sandbox
async def test_no_secret_in_webhook_or_email_of_a_failed_run(
    db: Database, host_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSC_HOME", str(tmp_path / "home"))
    settings = load_settings()
    who = await local_admin(db, "default")
    await secret_store.put(db, settings.home, "default", "kv/app/token", SECRET, "t")
    await secret_store.put(db, settings.home, "default", "kv/hooks/sign", SIGNING, "t")
    plan = {
        "name": f"leaky {SECRET}",
        "steps": [
            {
                "name": "leak",
                "type": "command",
                "action_class": "read",
                "targets": {"hostnames": ["localhost"]},
                "env": {"TOKEN": {"secret": "kv/app/token"}},
                "command": (
                    'echo "token=$TOKEN"; printf %s "$TOKEN" | base64; '
                    'echo "failed with $TOKEN" >&2; printf %s "$TOKEN" | base64 >&2; exit 3'
                ),
            }
        ],
    }
    with http_receiver(200) as hook, smtp_receiver() as box:
        await service.add_webhook(
            db, who, settings, "hook", url=hook.url, secret="kv/hooks/sign", events=["all"]
        )
        await service.add_email(
            db,
            who,
            settings,
            "mail",
            email=service.EmailSettings(box.host, box.port, "opsc@example.org", ("a@example.org",)),
            events=["all"],
        )
        status, _, execution_id = await run_plan(db, plan)
        assert status is Status.FAILED
        dispatcher = Dispatcher(db, settings, DispatchOptions(backoff_base_s=0.0))
        await dispatch_until(dispatcher, lambda: bool(hook.requests and box.messages))
    [message] = [
        m for m in (json.loads(r.body) for r in hook.requests) if m["event"] == "execution_failed"
    ]
    assert message["execution_id"] == str(execution_id)
    assert message["failures"][0]["message"].startswith("exit 3")  # the failure is there...
    assert message["plan_name"] == f"leaky {masking.MASK}"  # ...the secret is not
    received = [r.body for r in hook.requests]
    received += [json.dumps(dict(r.headers)).encode() for r in hook.requests]
    for index, (_, _, raw) in enumerate(box.messages):
        mail = box.parsed(index)
        received += [raw, mail.get_content().encode(), str(mail["Subject"]).encode()]
    for blob in received:
        for value in (SECRET, SIGNING):
            for form in _forms(value):
                assert form not in blob, f"{form!r} reached a receiver"
