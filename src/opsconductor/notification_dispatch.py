"""The notification dispatcher, run by every worker each second: it fills the outbox from
``execution_events`` behind a cursor (one dispatcher at a time), then sends what is due,
signed webhooks over HTTP and emails over SMTP, with bounded timeouts, and logs each try.

Nothing runs on the executions' own path: events are read after the fact. Delivery is at
least once (a dispatcher dying mid-send leaves the row to be tried again); every message
carries an idempotency key (``id``) for receivers to drop duplicates. Every message, and
every error stored about it, passes the tenant's masker, which also knows the values of
the secrets the execution's plan references and of the channel's own secret.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from opsconductor import failures, masking, notifications
from opsconductor.config import Settings
from opsconductor.connectors import loopback
from opsconductor.connectors.access import TenantAccess
from opsconductor.db import connectors, steps
from opsconductor.db import notifications as store
from opsconductor.db.connection import Database
from opsconductor.errors import DatabaseError, OpsError, SecretError
from opsconductor.notifications import ChannelKind, DeliveryState, EventKind
from opsconductor.secret_store import SecretResolver, tenant_masker

log = structlog.get_logger("opsconductor.notifications")

#: Kinds whose message lists the failure groups (failed steps, causes, last stderr lines).
_WITH_FAILURES = frozenset({EventKind.EXECUTION_FAILED, EventKind.EXECUTION_TIMED_OUT})
#: Failure groups in a message, at most.
MAX_FAILURE_GROUPS = 3


@dataclass(frozen=True)
class DispatchOptions:
    batch: int = 10
    #: a claimed delivery is tried again after this if its dispatcher vanished mid-send
    lease_s: float = 60.0
    max_attempts: int = notifications.MAX_ATTEMPTS
    backoff_base_s: float = notifications.BACKOFF_BASE_S
    timeout_s: float = notifications.SEND_TIMEOUT_S


class Undeliverable(Exception):
    """This try failed; ``final``: trying again cannot help (the destination is refused)."""

    def __init__(self, detail: str, *, final: bool = False) -> None:
        super().__init__(detail)
        self.final = final


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        options: DispatchOptions | None = None,
        resolver: SecretResolver | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.options = options or DispatchOptions()
        self.resolver = resolver or SecretResolver(
            db, settings.home, env_prefix=settings.secret_env_prefix
        )

    async def round(self) -> list[DeliveryState]:
        """Fill, then send what is due: one round of the worker's loop."""
        await self.fill()
        return await self.deliver_due()

    async def fill(self) -> int | None:
        """New outbox rows from the events after the cursor; None: another dispatcher is
        filling. The cursor moves only past ids every writer is done with (see 0025)."""
        async with self.db.transaction() as conn:
            cursor = await store.lock_cursor(conn)
            if cursor is None:
                return None
            added = await store.fill(conn, cursor.done_id)
            done = cursor.horizon_id if cursor.settled and cursor.horizon_id else cursor.done_id
            if cursor.settled or cursor.horizon_id is None:
                await store.move_cursor(conn, done)
        return added

    async def deliver_due(self) -> list[DeliveryState]:
        async with self.db.connection() as conn:
            claimed = await store.claim_due(
                conn, limit=self.options.batch, lease_s=self.options.lease_s
            )
        if not claimed:
            return []
        return list(await asyncio.gather(*(self.deliver(i) for i in claimed)))

    async def deliver(self, delivery_id: int) -> DeliveryState:
        """Try one claimed delivery once and log the try."""
        async with self.db.connection() as conn:
            row = await store.delivery_context(conn, delivery_id)
        if row is None:
            return DeliveryState.FAILED  # its channel was removed meanwhile
        masker = await tenant_masker(self.db, row["tenant_id"])
        ok, final = False, False
        try:
            key = await self._channel_secret(row)
            masker = masker.with_secrets(await self._plan_secrets(row) + ([key] if key else []))
            message = masker.mask_data(await self._message(row, masker))
            detail = await self._send(row, message, key)
            ok = True
        except Undeliverable as exc:
            detail, final = masker.mask(str(exc)), exc.final
        except DatabaseError:
            raise  # nothing was recorded: the claim's lease runs out and it is tried again
        except OpsError as exc:  # e.g. its tenant is gone: a failed try like any other
            detail = masker.mask(f"{type(exc).__name__}: {exc}")
        attempt = int(row["attempts"])
        async with self.db.connection() as conn:
            state = await store.record_attempt(
                conn,
                delivery_id,
                ok=ok,
                detail=detail,
                backoff_s=notifications.backoff_s(attempt, self.options.backoff_base_s),
                max_attempts=self.options.max_attempts,
                final=final,
            )
        log.info(
            "notification_attempt",
            delivery_id=delivery_id,
            channel=row["name"],
            attempt=attempt,
            ok=ok,
            detail=detail,
            state=state.value,
        )
        return state

    async def _channel_secret(self, row: Mapping[str, Any]) -> str | None:
        ref = row["secret_ref"]
        if ref is None:
            return None
        try:
            return (await self.resolver.resolve(row["tenant_id"], ref)).value
        except SecretError as exc:
            raise Undeliverable(f"channel secret: {exc}") from None

    async def _plan_secrets(self, row: Mapping[str, Any]) -> list[str]:
        """Values of the secrets the execution's plan references, to mask them wherever
        they may have slipped through (best effort: one that no longer resolves is skipped)."""
        values = []
        for path in sorted(set(_secret_paths(row["plan_snapshot"]))):
            try:
                values.append((await self.resolver.resolve(row["tenant_id"], path)).value)
            except SecretError:
                continue
        return values

    async def _message(self, row: Mapping[str, Any], masker: masking.Masker) -> dict[str, Any]:
        kind = EventKind(row["event_kind"])
        execution = None
        if row["execution_id"] is not None and row["plan_name"] is not None:
            execution = {
                "id": row["execution_id"],
                "plan_name": row["plan_name"],
                "status": row["status"],
                "status_reason": row["status_reason"],
            }
        if row["event_id"] is not None and row["event_at"] is None:
            raise Undeliverable("its event is gone (history pruned)", final=True)
        found: list[dict[str, Any]] = []
        if execution is not None and kind in _WITH_FAILURES:
            async with self.db.connection() as conn:
                attempts = await steps.list_for(conn, row["execution_id"])
            for group in failures.group(attempts, masker.mask)[:MAX_FAILURE_GROUPS]:
                found.append(
                    {
                        "step": group.step_name,
                        "message": group.message,
                        "count": group.count,
                        "targets": list(group.targets[:10]),
                        "tail": list(group.tail),
                    }
                )
        return notifications.payload(
            key=f"opsc-{row['channel_id']}-{row['event_id'] or 'test-' + str(row['id'])}",
            kind=kind,
            tenant_id=row["tenant_id"],
            occurred_at=row["event_at"] or row["created_at"],
            execution=execution,
            detail=row["event_payload"] or {},
            failures=found,
        )

    async def _check_destination(self, tenant_id: str, host: str, field: str) -> None:
        async with self.db.connection() as conn:
            tenant = await connectors.tenant_settings(conn, tenant_id)
        access = TenantAccess.of(self.settings, tenant_id, tenant)
        refused = await loopback.refusal([host], access, field)
        if refused is not None:
            raise Undeliverable(refused, final=True)

    async def _send(self, row: Mapping[str, Any], message: dict[str, Any], key: str | None) -> str:
        config = row["config"]
        if ChannelKind(row["kind"]) is ChannelKind.WEBHOOK:
            host = urlsplit(config["url"]).hostname or ""
            await self._check_destination(row["tenant_id"], host, "url")
            if key is None:
                raise Undeliverable("a webhook channel needs its signing secret", final=True)
            return await self._post(config["url"], message, key)
        await self._check_destination(row["tenant_id"], config["host"], "smtp_host")
        email = notifications.email_message(config, message)
        try:
            async with asyncio.timeout(self.options.timeout_s * 3):
                return await asyncio.to_thread(
                    _send_mail, config, key, email, self.options.timeout_s
                )
        except (OSError, smtplib.SMTPException, TimeoutError) as exc:
            raise Undeliverable(f"smtp: {type(exc).__name__}: {exc}") from None

    async def _post(self, url: str, message: dict[str, Any], key: str) -> str:
        content = notifications.body(message)
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "opsconductor-notifications",
            notifications.TIMESTAMP_HEADER: stamp,
            notifications.SIGNATURE_HEADER: notifications.signature(key.encode(), stamp, content),
            notifications.DELIVERY_HEADER: str(message["id"]),
        }
        # No redirects (a 30x could point at a refused host) and no proxy from the
        # environment: the destination checked is the one reached.
        async with httpx.AsyncClient(
            timeout=self.options.timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            try:
                answer = await client.post(url, content=content, headers=headers)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise Undeliverable(f"http: {type(exc).__name__}: {exc}") from None
        if not 200 <= answer.status_code < 300:
            raise Undeliverable(f"HTTP {answer.status_code}")
        return f"HTTP {answer.status_code}"


def _send_mail(
    config: Mapping[str, Any], password: str | None, email: EmailMessage, timeout_s: float
) -> str:
    """Blocking: run in a thread. smtplib, not a new dependency: one message per delivery,
    and its socket timeout bounds every step of the dialogue."""
    with smtplib.SMTP(config["host"], int(config["port"]), timeout=timeout_s) as smtp:
        if config.get("starttls"):
            smtp.starttls(context=ssl.create_default_context())
        if config.get("username"):
            smtp.login(config["username"], password or "")
        refused = smtp.send_message(email)
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)
    return f"SMTP accepted for {len(config['recipients'])} recipient(s)"


def _secret_paths(value: Any) -> Iterator[str]:
    """``{secret: path}`` references anywhere in a stored plan snapshot."""
    if isinstance(value, dict):
        if set(value) == {"secret"} and isinstance(value["secret"], str):
            yield value["secret"]
            return
        for inner in value.values():
            yield from _secret_paths(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _secret_paths(inner)
