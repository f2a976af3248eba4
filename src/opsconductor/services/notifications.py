"""Notification channels of a tenant and their delivery log: the tenant's admins only
(``notifications:manage``); adding and removing a channel are audited."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from opsconductor import notifications
from opsconductor.config import Settings
from opsconductor.db import assets, connectors
from opsconductor.db import notifications as store
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, NotFound, SecretError
from opsconductor.notifications import Channel, ChannelKind, Delivery, DeliveryAttempt
from opsconductor.services.caller import Caller


@dataclass(frozen=True)
class EmailSettings:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    #: secret reference of the SMTP password (never the password)
    password_secret: str | None = None


@dataclass(frozen=True)
class DeliveryLog:
    delivery: Delivery
    attempts: tuple[DeliveryAttempt, ...]


async def add_webhook(
    db: Database,
    who: Caller,
    settings: Settings,
    name: str,
    *,
    url: str,
    secret: str,
    events: Sequence[str],
) -> Channel:
    """A webhook channel: JSON POSTs to ``url`` signed with the secret ``secret`` refers to."""
    who.require("notifications", "manage")
    config = notifications.webhook_config(url)
    return await _add(
        db,
        who,
        settings,
        name,
        ChannelKind.WEBHOOK,
        config,
        secret,
        events,
        host=urlsplit(url).hostname or "",
        field="url",
    )


async def add_email(
    db: Database,
    who: Caller,
    settings: Settings,
    name: str,
    *,
    email: EmailSettings,
    events: Sequence[str],
) -> Channel:
    who.require("notifications", "manage")
    if (email.username is None) != (email.password_secret is None):
        raise BadInput("smtp_username and smtp_password_secret go together")
    config = notifications.email_config(
        email.host,
        email.port,
        email.sender,
        email.recipients,
        starttls=email.starttls,
        username=email.username,
    )
    return await _add(
        db,
        who,
        settings,
        name,
        ChannelKind.EMAIL,
        config,
        email.password_secret,
        events,
        host=email.host,
        field="smtp_host",
    )


async def _add(
    db: Database,
    who: Caller,
    settings: Settings,
    name: str,
    kind: ChannelKind,
    config: dict[str, object],
    secret_ref: str | None,
    events: Sequence[str],
    *,
    host: str,
    field: str,
) -> Channel:
    notifications.check_name(name)
    kinds = notifications.parse_events(events)
    # Deferred: the checks read the network and the secret store (httpx, asyncssh stay out
    # of the CLI's start-up).
    from opsconductor.connectors import loopback
    from opsconductor.connectors.access import TenantAccess
    from opsconductor.secret_store import SecretResolver

    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        tenant = await connectors.tenant_settings(conn, who.tenant_id)
    refused = await loopback.refusal(
        [host], TenantAccess.of(settings, who.tenant_id, tenant), field
    )
    if refused is not None:
        raise BadInput(refused)
    if secret_ref is not None:
        resolver = SecretResolver(db, settings.home, env_prefix=settings.secret_env_prefix)
        try:
            await resolver.resolve(who.tenant_id, secret_ref)
        except SecretError as exc:
            raise BadInput(f"secret: {exc}") from None
    async with db.transaction() as conn:
        return await store.add_channel(
            conn,
            who.tenant_id,
            who.actor_id,
            name=name,
            kind=kind.value,
            config=config,
            secret_ref=secret_ref,
            events=kinds,
        )


async def channels(db: Database, who: Caller) -> list[Channel]:
    who.require("notifications", "manage")
    async with db.connection() as conn:
        return await store.list_channels(conn, who.tenant_id)


async def remove(db: Database, who: Caller, name: str) -> None:
    who.require("notifications", "manage")
    async with db.transaction() as conn:
        if not await store.remove_channel(conn, who.tenant_id, who.actor_id, name):
            raise NotFound(f"notification channel {name!r} not found")


async def test(db: Database, who: Caller, settings: Settings, name: str) -> DeliveryLog:
    """Send a test message through the channel now; the try is logged like any other (a
    failed one is retried with back-off by the workers)."""
    who.require("notifications", "manage")
    from opsconductor.notification_dispatch import Dispatcher  # httpx: not at CLI start-up

    dispatcher = Dispatcher(db, settings)
    async with db.transaction() as conn:
        channel = await store.get_channel(conn, who.tenant_id, name)
        if channel is None:
            raise NotFound(f"notification channel {name!r} not found")
        delivery_id = await store.add_test_delivery(conn, channel, dispatcher.options.lease_s)
    await dispatcher.deliver(delivery_id)
    found = [d for d in await deliveries(db, who, name, limit=50) if d.delivery.id == delivery_id]
    return found[0]


async def deliveries(
    db: Database, who: Caller, channel: str | None = None, limit: int = 50
) -> list[DeliveryLog]:
    """The newest deliveries first, each with its tries."""
    who.require("notifications", "manage")
    if not 0 < limit <= 1000:
        raise BadInput("limit: must be between 1 and 1000")
    async with db.connection() as conn:
        found = await store.list_deliveries(conn, who.tenant_id, channel, limit)
        tries = await store.list_attempts(conn, [d.id for d in found])
    by_delivery: dict[int, list[DeliveryAttempt]] = {}
    for attempt in tries:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return [DeliveryLog(d, tuple(by_delivery.get(d.id, ()))) for d in found]
