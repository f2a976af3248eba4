"""``/api/v1/notifications``: a tenant's notification channels (webhooks, email) and their
delivery log; admins only (``notifications:manage``). Secrets are named by reference:
no request carries, and no answer returns, a signing key or a password."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from opsconductor.api.auth import Db, Who
from opsconductor.api.inputs import CleanInput
from opsconductor.config import load_settings
from opsconductor.errors import BadInput
from opsconductor.notifications import Channel
from opsconductor.services import notifications
from opsconductor.services.notifications import DeliveryLog, EmailSettings

router = APIRouter(prefix="/notifications", tags=["notifications"])

ChannelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class ChannelIn(CleanInput):
    name: str = Field(min_length=1, max_length=63)
    kind: Literal["webhook", "email"]
    events: list[str] = Field(min_length=1, max_length=10)
    #: webhook: where to POST, and the secret reference of the HMAC key
    url: str | None = Field(default=None, max_length=2048)
    secret: str | None = Field(default=None, max_length=500)
    #: email
    smtp_host: str | None = Field(default=None, max_length=253)
    smtp_port: int = 25
    sender: str | None = Field(default=None, max_length=320)
    recipients: list[str] = Field(default_factory=list, max_length=20)
    starttls: bool = False
    smtp_username: str | None = Field(default=None, max_length=200)
    smtp_password_secret: str | None = Field(default=None, max_length=500)


class ChannelOut(BaseModel):
    name: str
    kind: str
    target: str
    events: list[str]
    secret_ref: str | None
    config: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, channel: Channel) -> ChannelOut:
        return cls(
            name=channel.name,
            kind=channel.kind.value,
            target=channel.target,
            events=[e.value for e in channel.events],
            secret_ref=channel.secret_ref,
            config=channel.config,
            created_by=channel.created_by,
            created_at=channel.created_at,
        )


class TryOut(BaseModel):
    attempt: int
    ok: bool
    detail: str
    at: datetime


class DeliveryOut(BaseModel):
    id: int
    channel: str
    event_kind: str
    event_id: int | None
    execution_id: str | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    tries: list[TryOut]

    @classmethod
    def of(cls, log: DeliveryLog) -> DeliveryOut:
        d = log.delivery
        return cls(
            id=d.id,
            channel=d.channel_name,
            event_kind=d.event_kind.value,
            event_id=d.event_id,
            execution_id=d.execution_id,
            state=d.state.value,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_error=d.last_error,
            created_at=d.created_at,
            finished_at=d.finished_at,
            tries=[
                TryOut(attempt=a.attempt, ok=a.ok, detail=a.detail, at=a.at) for a in log.attempts
            ],
        )


def _required(value: str | None, field: str, kind: str) -> str:
    if not value:
        raise BadInput(f"{field}: required for a {kind} channel")
    return value


@router.post("/channels", status_code=201, response_model=ChannelOut, summary="Add a channel")
async def add_channel(body: ChannelIn, db: Db, who: Who) -> ChannelOut:
    settings = load_settings()
    if body.kind == "webhook":
        channel = await notifications.add_webhook(
            db,
            who,
            settings,
            body.name,
            url=_required(body.url, "url", body.kind),
            secret=_required(body.secret, "secret", body.kind),
            events=body.events,
        )
    else:
        email = EmailSettings(
            host=_required(body.smtp_host, "smtp_host", body.kind),
            port=body.smtp_port,
            sender=_required(body.sender, "sender", body.kind),
            recipients=tuple(body.recipients),
            starttls=body.starttls,
            username=body.smtp_username,
            password_secret=body.smtp_password_secret,
        )
        channel = await notifications.add_email(
            db, who, settings, body.name, email=email, events=body.events
        )
    return ChannelOut.of(channel)


@router.get("/channels", response_model=list[ChannelOut], summary="The tenant's channels")
async def list_channels(db: Db, who: Who) -> list[ChannelOut]:
    return [ChannelOut.of(c) for c in await notifications.channels(db, who)]


@router.delete("/channels/{name}", status_code=204, summary="Remove a channel")
async def remove_channel(name: ChannelName, db: Db, who: Who) -> Response:
    await notifications.remove(db, who, name)
    return Response(status_code=204)


@router.post("/channels/{name}/test", response_model=DeliveryOut, summary="Send a test message now")
async def test_channel(name: ChannelName, db: Db, who: Who) -> DeliveryOut:
    return DeliveryOut.of(await notifications.test(db, who, load_settings(), name))


@router.get("/deliveries", response_model=list[DeliveryOut], summary="The delivery log")
async def list_deliveries(
    db: Db,
    who: Who,
    channel: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[DeliveryOut]:
    return [DeliveryOut.of(d) for d in await notifications.deliveries(db, who, channel, limit)]
