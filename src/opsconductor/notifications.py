"""Notifications (pure): the kinds of events a channel may subscribe to and the execution
events they come from, channel settings and their checks, the message a receiver gets, its
HMAC signature, and the back-off between tries. Storage is ``db/notifications.py``; sending
and the dispatcher are ``notification_dispatch.py``."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from enum import StrEnum
from typing import Any, Self
from urllib.parse import urlsplit

from opsconductor.errors import BadInput


class EventKind(StrEnum):
    APPROVAL_REQUESTED = "approval_requested"
    EXECUTION_FINISHED = "execution_finished"
    EXECUTION_FAILED = "execution_failed"
    EXECUTION_TIMED_OUT = "execution_timed_out"
    SLA_VIOLATED = "sla_violated"
    DLQ_ENTRY = "dlq_entry"
    #: ``opsc notifications channels test``: never subscribed to
    TEST = "test"


SUBSCRIBABLE = tuple(k for k in EventKind if k is not EventKind.TEST)


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


#: Which execution events tell which kind: (event_type, to_status or None for any, kind).
#: The dispatcher joins the events table on these rows (one statement per round).
RULES: tuple[tuple[str, str | None, EventKind], ...] = (
    ("submitted", "pending_approval", EventKind.APPROVAL_REQUESTED),
    # back to pending_approval when what the plan would do changed after approval
    ("status_changed", "pending_approval", EventKind.APPROVAL_REQUESTED),
    ("step_approval_requested", None, EventKind.APPROVAL_REQUESTED),
    ("status_changed", "completed", EventKind.EXECUTION_FINISHED),
    ("status_changed", "failed", EventKind.EXECUTION_FAILED),
    ("status_changed", "partial", EventKind.EXECUTION_FAILED),
    ("status_changed", "timeout", EventKind.EXECUTION_TIMED_OUT),
    ("sla_violation", None, EventKind.SLA_VIOLATED),
    ("dead_lettered", None, EventKind.DLQ_ENTRY),
)


def rules_json() -> list[dict[str, str | None]]:
    return [{"event_type": t, "to_status": s, "kind": k.value} for t, s, k in RULES]


#: Tries of one delivery before it is marked failed; waits between them (seconds).
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 300.0
#: Every send is bounded: connect, TLS, request and answer together.
SEND_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Opsc-Signature"
TIMESTAMP_HEADER = "X-Opsc-Timestamp"
DELIVERY_HEADER = "X-Opsc-Delivery"
MAX_RECIPIENTS = 20

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# A deliberately plain address: local@domain, no display names, quotes or comments.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$")
_HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Channel:
    """One ``execution.notification_channels`` row."""

    id: int
    tenant_id: str
    name: str
    kind: ChannelKind
    config: dict[str, Any]
    secret_ref: str | None
    events: tuple[EventKind, ...]
    created_by: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            id=int(row["id"]),
            tenant_id=str(row["tenant_id"]),
            name=str(row["name"]),
            kind=ChannelKind(row["kind"]),
            config=dict(row["config"]),
            secret_ref=row["secret_ref"],
            events=tuple(EventKind(e) for e in row["events"]),
            created_by=str(row["created_by"]),
            created_at=row["created_at"],
        )

    @property
    def target(self) -> str:
        """Where it sends, for listings: the URL or the recipients."""
        if self.kind is ChannelKind.WEBHOOK:
            return str(self.config["url"])
        return ", ".join(self.config["recipients"])


@dataclass(frozen=True)
class Delivery:
    """One ``execution.notification_deliveries`` row (with its channel's name)."""

    id: int
    channel_id: int
    channel_name: str
    tenant_id: str
    event_kind: EventKind
    event_id: int | None
    execution_id: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        execution_id = row["execution_id"]
        return cls(
            id=int(row["id"]),
            channel_id=int(row["channel_id"]),
            channel_name=str(row["channel_name"]),
            tenant_id=str(row["tenant_id"]),
            event_kind=EventKind(row["event_kind"]),
            event_id=row["event_id"],
            execution_id=None if execution_id is None else str(execution_id),
            state=DeliveryState(row["state"]),
            attempts=int(row["attempts"]),
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
        )


@dataclass(frozen=True)
class DeliveryAttempt:
    """One try of a delivery: what the receiver answered, or why it was not reached."""

    delivery_id: int
    attempt: int
    ok: bool
    detail: str
    at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            int(row["delivery_id"]),
            int(row["attempt"]),
            bool(row["ok"]),
            str(row["detail"]),
            row["at"],
        )


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadInput(f"name: {name!r}: use 1-63 lower-case letters, digits, - or _")
    return name


def parse_events(values: Iterable[str]) -> tuple[EventKind, ...]:
    """Subscribed kinds, in a stable order; ``all`` stands for every kind."""
    chosen: set[EventKind] = set()
    for value in values:
        if value == "all":
            chosen.update(SUBSCRIBABLE)
            continue
        try:
            kind = EventKind(value)
        except ValueError:
            kind = EventKind.TEST
        if kind is EventKind.TEST:
            raise BadInput(
                f"events: {value!r}: must be one of {', '.join(SUBSCRIBABLE)} or all"
            ) from None
        chosen.add(kind)
    if not chosen:
        raise BadInput("events: subscribe to at least one kind of event (or all)")
    return tuple(k for k in SUBSCRIBABLE if k in chosen)


def webhook_config(url: str) -> dict[str, Any]:
    """``{"url": ...}`` of a webhook channel; the URL may carry no credentials (they would
    be stored in clear: the signing key is a secret reference instead)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"url: {url!r}: must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise BadInput("url: credentials in the URL are refused (they would be stored in clear)")
    if len(url) > 2048 or _CONTROL.search(url):
        raise BadInput("url: at most 2048 characters, no control characters")
    return {"url": url}


def email_config(
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str],
    *,
    starttls: bool,
    username: str | None,
) -> dict[str, Any]:
    if not _HOST.match(host):
        raise BadInput(f"smtp_host: {host!r} is not a host name or address")
    if not 0 < port < 65536:
        raise BadInput(f"smtp_port: {port} is not a port")
    for field, address in (("sender", sender), *(("recipients", r) for r in recipients)):
        if not _ADDRESS.match(address):
            raise BadInput(f"{field}: {address!r} is not a plain address (local@domain)")
    if not recipients or len(recipients) > MAX_RECIPIENTS:
        raise BadInput(f"recipients: give 1 to {MAX_RECIPIENTS} addresses")
    if username is not None and not starttls:
        # smtplib would send the password in clear over a plain connection.
        raise BadInput("smtp_username: credentials need STARTTLS (they are never sent in clear)")
    if username is not None and (not username or _CONTROL.search(username)):
        raise BadInput("smtp_username: empty or with control characters")
    return {
        "host": host,
        "port": port,
        "sender": sender,
        "recipients": list(recipients),
        "starttls": starttls,
        "username": username,
    }


def link_path(execution_id: str | None) -> str | None:
    """Where the console shows the execution (a path: receivers know the server's address)."""
    return None if execution_id is None else f"/console/#/executions/{execution_id}"


def payload(
    *,
    key: str,
    kind: EventKind,
    tenant_id: str,
    occurred_at: datetime,
    execution: Mapping[str, Any] | None,
    detail: Mapping[str, Any],
    failures: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What a receiver gets (before masking: the dispatcher masks all of it). ``key`` is the
    idempotency key: the same on every retry, so a receiver can drop duplicates."""
    execution_id = None if execution is None else str(execution["id"])
    return {
        "id": key,
        "event": kind.value,
        "tenant": tenant_id,
        "occurred_at": occurred_at.isoformat(),
        "execution_id": execution_id,
        "plan_name": None if execution is None else execution["plan_name"],
        "status": None if execution is None else str(execution["status"]),
        "reason": None if execution is None else execution["status_reason"],
        "link": link_path(execution_id),
        "detail": dict(detail),
        "failures": [dict(f) for f in failures],
    }


def body(message: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed."""
    return json.dumps(message, sort_keys=True, separators=(",", ":"), default=str).encode()


def signature(key: bytes, timestamp: str, content: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` (the timestamp is signed
    so a receiver can refuse an old message replayed)."""
    digest = hmac.new(key, timestamp.encode() + b"." + content, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(key: bytes, timestamp: str, content: bytes, header: str) -> bool:
    return hmac.compare_digest(signature(key, timestamp, content), header)


def backoff_s(attempt: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Wait after the ``attempt``-th failed try (1-based): base, 2 x base, 4 x base, ..."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))


def _header_text(text: str) -> str:
    return _CONTROL.sub(" ", text)[:200]


def email_message(config: Mapping[str, Any], message: Mapping[str, Any]) -> EmailMessage:
    """The email of one (already masked) message: a subject line and the fields as text,
    with the JSON itself for machines."""
    email = EmailMessage()
    what = message.get("plan_name") or "test"
    email["Subject"] = _header_text(f"[opsc] {message['event']}: {what} ({message['tenant']})")
    email["From"] = config["sender"]
    email["To"] = ", ".join(config["recipients"])
    email["X-Opsc-Delivery"] = _header_text(str(message["id"]))
    lines = [f"{k}: {message[k]}" for k in ("event", "tenant", "execution_id", "plan_name")]
    lines += [f"{k}: {message[k]}" for k in ("status", "reason", "link", "occurred_at")]
    for failure in message.get("failures") or []:
        lines.append(f"failed: step {failure['step']!r}: {failure['message']} x{failure['count']}")
    lines += ["", json.dumps(message, indent=2, sort_keys=True, default=str)]
    email.set_content("\n".join(lines) + "\n")
    return email
