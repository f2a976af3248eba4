"""Notification rules (pure): subscriptions, channel settings, the signature receivers
check, the back-off, the message and its email."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import pytest

from opsconductor import notifications as n
from opsconductor.errors import BadInput
from opsconductor.notification_dispatch import _secret_paths

pytestmark = pytest.mark.unit


def test_events_all_expands_and_unknown_kinds_name_the_field() -> None:
    assert n.parse_events(["all"]) == n.SUBSCRIBABLE
    assert n.parse_events(["dlq_entry", "approval_requested", "dlq_entry"]) == (
        n.EventKind.APPROVAL_REQUESTED,
        n.EventKind.DLQ_ENTRY,
    )
    for bad in (["test"], ["failed"], []):
        with pytest.raises(BadInput, match="events:"):
            n.parse_events(bad)


def test_every_subscribable_kind_comes_from_some_event() -> None:
    assert {kind for _, _, kind in n.RULES} == set(n.SUBSCRIBABLE)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://h/x", "must be an http"),
        ("https:///x", "must be an http"),
        ("https://user:pw@h/x", "credentials in the URL"),
        ("https://h/x\r\nX: y", "control characters"),
    ],
)
def test_webhook_urls_are_checked(url: str, error: str) -> None:
    with pytest.raises(BadInput, match=error):
        n.webhook_config(url)


def test_email_settings_are_checked() -> None:
    ok = n.email_config(
        "mx.example.org", 587, "o@example.org", ["a@example.org"], starttls=True, username="u"
    )
    assert ok["recipients"] == ["a@example.org"] and ok["starttls"] is True
    with pytest.raises(BadInput, match="credentials need STARTTLS"):
        n.email_config("mx", 25, "o@example.org", ["a@example.org"], starttls=False, username="u")
    with pytest.raises(BadInput, match="recipients: 'a@b\\\\nBcc: c@d'"):
        n.email_config("mx", 25, "o@example.org", ["a@b\nBcc: c@d"], starttls=False, username=None)
    with pytest.raises(BadInput, match="smtp_port"):
        n.email_config("mx", 0, "o@example.org", ["a@example.org"], starttls=False, username=None)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = n.body({"b": 1, "a": "x"})
    assert body == b'{"a":"x","b":1}'
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert n.signature(b"key", "1700000000", body) == f"sha256={expected}"
    assert n.verify(b"key", "1700000000", body, f"sha256={expected}")
    assert not n.verify(b"key", "1700000001", body, f"sha256={expected}")


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [n.backoff_s(a, 5.0, 60.0) for a in range(1, 6)] == [5.0, 10.0, 20.0, 40.0, 60.0]


def test_the_message_and_its_email() -> None:
    execution_id = uuid.uuid4()
    message = n.payload(
        key="opsc-1-42",
        kind=n.EventKind.EXECUTION_TIMED_OUT,
        tenant_id="acme",
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        execution={
            "id": execution_id,
            "plan_name": "x\r\nBcc: evil@example.org",
            "status": "timeout",
            "status_reason": "took too long",
        },
        detail={},
    )
    assert message["link"] == f"/console/#/executions/{execution_id}"
    assert (message["event"], message["status"]) == ("execution_timed_out", "timeout")
    email = n.email_message(
        {"sender": "o@example.org", "recipients": ["a@example.org", "b@example.org"]}, message
    )
    assert email["Subject"] == "[opsc] execution_timed_out: x  Bcc: evil@example.org (acme)"
    assert email["Bcc"] is None and email["To"] == "a@example.org, b@example.org"
    assert "reason: took too long" in email.get_content()


def test_secret_references_are_found_anywhere_in_a_snapshot() -> None:
    snapshot = {
        "plan": {
            "steps": [
                {"env": {"A": {"secret": "kv/a"}}},
                {"headers": [{"secret": "env:B"}], "x": {"secret": 3}},
            ]
        }
    }
    assert list(_secret_paths(snapshot)) == ["kv/a", "env:B"]
