"""Live streams of events: Server-Sent Events, WebSocket, per execution and tenant-wide.

Every stream follows the same course (``follow``): subscribe to the process's event hub,
replay from the table what came after the client's cursor, then send what the hub pushes.
Ids of one execution's events become visible in id order (0007_streams), so a cursor is
exact: resuming after id N replays precisely the events the client has not seen.

Browsers cannot set headers on ``EventSource`` or ``WebSocket``, so besides
``Authorization: Bearer`` a token is accepted as the ``token`` query parameter or the
``opsc_token`` cookie (the server keeps no access log, so query tokens are not written
down; prefer the cookie where the page can set it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from opsconductor import metrics
from opsconductor.api.auth import authenticate, bearer
from opsconductor.db import executions, replay
from opsconductor.db.connection import Database
from opsconductor.db.notify import OVERFLOW, EventHub, StreamEvent, stream_event
from opsconductor.errors import NotFound, OpsError, PermissionDenied, Unauthenticated
from opsconductor.records import Execution
from opsconductor.services.caller import Caller
from opsconductor.status_machine import Status, is_terminal

router = APIRouter(tags=["streams"])

COOKIE = "opsc_token"
#: Comment lines keep proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: A stream re-checks its caller's token this often: revoked or expired, the stream ends
#: (it was authorised when it opened, and would otherwise go on for as long as it stays open).
RECHECK_S = 5.0
#: Rows per replay query; a client far behind is replayed page by page.
REPLAY_PAGE = 500
#: What an EventSource waits before reconnecting (it sends Last-Event-ID then).
RETRY_MS = 1000
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class Resync:
    """The client fell behind and events were dropped: re-read after ``last_event_id``."""

    last_event_id: int
    detail: str = "client too slow: events were dropped; resume from last_event_id"


@dataclass(frozen=True)
class End:
    """The execution is finished and every event of it was sent; or, with ``reason``, the
    stream was ended early (``status`` None) because its token no longer allows it."""

    status: str | None
    reason: str | None = None


@dataclass(frozen=True)
class Keepalive:
    pass


Message = StreamEvent | Resync | End | Keepalive

#: Returns None while the stream may go on, else why it must end.
Recheck = Callable[[], Awaitable[str | None]]


def _token(conn: HTTPConnection, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value
    return conn.query_params.get("token") or conn.cookies.get(COOKIE) or ""


def token_recheck(db: Database, token: str) -> Recheck:
    """Authenticate ``token`` again (roles as of now): None while it still may view."""

    async def recheck() -> str | None:
        try:
            who = await authenticate(db, token)
            who.require("executions", "view")
        except Unauthenticated:
            return "token revoked"
        except PermissionDenied:
            return "permission withdrawn"
        return None

    return recheck


async def stream_caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    token: Annotated[
        str | None, Query(description="API token, for browsers' EventSource (no headers)")
    ] = None,
) -> Caller:
    """Bearer header, ``?token=`` or the ``opsc_token`` cookie; needs executions:view."""
    db: Database = request.app.state.db
    who = await authenticate(db, _token(request, credentials))
    who.require("executions", "view")
    return who


async def follow(
    hub: EventHub,
    db: Database,
    tenant_id: str,
    execution: Execution | None,
    cursor: int,
    keepalive_s: float = KEEPALIVE_S,
    recheck: Recheck | None = None,
    recheck_s: float = RECHECK_S,
) -> AsyncIterator[Message]:
    """Replay after ``cursor``, then live events; ends after an execution's final event, or
    when ``recheck`` (run every ``recheck_s``) says the caller may no longer watch."""
    loop = asyncio.get_running_loop()
    execution_id = str(execution.id) if execution else None
    seen = _Seen()
    with hub.feed(tenant_id, execution_id) as feed, metrics.stream_client():
        # Status first, replay second: if it had ended, its final event is in the replay.
        status = await _status(db, tenant_id, execution_id) if execution_id else None
        while True:
            async with db.connection() as conn:
                rows = await replay.events_after(conn, tenant_id, execution_id, cursor, REPLAY_PAGE)
            for event in rows:
                cursor = event.id
                seen.note(str(event.execution_id), cursor)
                yield stream_event(event)
            if len(rows) < REPLAY_PAGE:
                break
        if status is not None and is_terminal(status):
            yield End(status)
            return
        checked = quiet_since = loop.time()
        while True:
            item = await feed.next(min(keepalive_s, recheck_s) if recheck else keepalive_s)
            now = loop.time()
            if recheck is not None and now - checked >= recheck_s:
                checked = now
                reason = await recheck()
                if reason is not None:
                    yield End(None, reason)
                    return
            if item is None:
                if now - quiet_since >= keepalive_s:
                    quiet_since = now
                    yield Keepalive()
                continue
            quiet_since = now
            if item is OVERFLOW:
                metrics.STREAM_RESYNCS.inc()
                yield Resync(cursor)
                return
            elif isinstance(item, StreamEvent) and (
                item.id > cursor if execution is not None else seen.is_new(item)
            ):
                cursor = max(cursor, item.id)
                yield item
                if execution is not None and _final(item):
                    yield End(str(item.to_status))
                    return


class _Seen:
    """Which events a tenant-wide stream has sent. Ids are in commit order within one
    execution only: across executions an event with a lower id can commit after a higher
    one, so one cursor for the whole tenant would drop it. Per execution, the last id sent
    tells a replayed duplicate from a new event; the map is bounded (the oldest entries go
    first), and a forgotten execution can cost at most a duplicate, never a loss."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def note(self, execution_id: str, event_id: int) -> None:
        self.last.pop(execution_id, None)  # re-inserted last: the newest stay
        self.last[execution_id] = event_id
        if len(self.last) > self.LIMIT:
            del self.last[next(iter(self.last))]

    def is_new(self, event: StreamEvent) -> bool:
        if event.id <= self.last.get(event.execution_id, 0):
            return False
        self.note(event.execution_id, event.id)
        return True


async def _status(db: Database, tenant_id: str, execution_id: str) -> Status:
    async with db.connection() as conn:
        return (await executions.get(conn, tenant_id, execution_id)).status


def _final(event: StreamEvent) -> bool:
    return (
        event.event_type == "status_changed"
        and event.to_status is not None
        and is_terminal(Status(event.to_status))
    )


def _cursor(last_event_id: str | None, after: int | None) -> int:
    """``Last-Event-ID`` (set by a reconnecting EventSource) wins over ``after``."""
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return after or 0


def sse_lines(message: Message) -> str:
    if isinstance(message, StreamEvent):
        return f"id: {message.id}\ndata: {message.data}\n\n"
    if isinstance(message, Resync):
        body = {"last_event_id": message.last_event_id, "detail": message.detail}
        return f"event: resync\ndata: {json.dumps(body)}\n\n"
    if isinstance(message, End):
        ended: dict[str, Any] = {"status": message.status}
        if message.reason is not None:
            ended["reason"] = message.reason
        return f"event: end\ndata: {json.dumps(ended)}\n\n"
    return ": keepalive\n\n"


def _sse(messages: AsyncIterator[Message]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        async for message in messages:
            if isinstance(message, StreamEvent):
                metrics.STREAM_EVENTS_SENT.labels("sse").inc()
            yield sse_lines(message)

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", description="Resume after this event id")
]
After = Annotated[
    int | None, Query(ge=0, le=2**63 - 1, description="First connection: events after this id")
]
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: `id:` = event id, `data:` = the masked event row; "
        "`event: resync` (buffer overflow: reconnect with Last-Event-ID), `event: end` "
        '(`{"status": s}` when the execution finished; `{"status": null, "reason": '
        '"token revoked"}` when the token was revoked or expired, re-checked every 5 s)',
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/executions/{execution_id}/stream",
    response_class=StreamingResponse,
    responses=SSE_DOC,
    summary="Server-Sent Events of one execution, resumable with Last-Event-ID",
)
async def execution_stream(
    execution_id: str,
    request: Request,
    who: Annotated[Caller, Depends(stream_caller)],
    last_event_id: LastEventId = None,
    after: After = None,
) -> StreamingResponse:
    """Replays the events after the cursor, then sends each new one as it is recorded; ends
    with `event: end` after the execution's final status change."""
    db: Database = request.app.state.db
    async with db.connection() as conn:
        execution = await executions.get(conn, who.tenant_id, execution_id)
    hub: EventHub = request.app.state.events
    recheck = token_recheck(db, _token(request, None))
    return _sse(
        follow(hub, db, who.tenant_id, execution, _cursor(last_event_id, after), recheck=recheck)
    )


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses=SSE_DOC,
    summary="Server-Sent Events of every execution of the caller's tenant",
)
async def tenant_stream(
    request: Request,
    who: Annotated[Caller, Depends(stream_caller)],
    last_event_id: LastEventId = None,
    after: After = None,
) -> StreamingResponse:
    """For the console: without a cursor it starts at the present (no history replay).
    Across executions, events arrive in commit order."""
    db: Database = request.app.state.db
    cursor = _cursor(last_event_id, after)
    if last_event_id is None and after is None:
        async with db.connection() as conn:
            cursor = await replay.latest_event_id(conn, who.tenant_id)
    hub: EventHub = request.app.state.events
    recheck = token_recheck(db, _token(request, None))
    return _sse(follow(hub, db, who.tenant_id, None, cursor, recheck=recheck))


@router.websocket("/executions/{execution_id}/ws")
async def execution_ws(websocket: WebSocket, execution_id: str) -> None:
    """JSON messages ``{"type": "event", "event": row}``, ``{"type": "resync",
    "last_event_id": N}`` (then the server closes with 1013: reconnect with ``?after=N``) and
    ``{"type": "end", "status": s}`` (then 1000). Auth failures close with 4401/4403/4404; a
    token revoked or expired while the socket is open ends it with ``{"type": "end", "status":
    null, "reason": "token revoked"}`` and 4401 (re-checked every few seconds)."""
    await websocket.accept()
    db: Database = websocket.app.state.db
    token = _token(websocket, None)
    try:
        who = await authenticate(db, token)
        who.require("executions", "view")
        async with db.connection() as conn:
            execution = await executions.get(conn, who.tenant_id, execution_id)
        after = websocket.query_params.get("after", "0")
        cursor = int(after) if after.isdigit() else 0
    except OpsError as exc:
        await websocket.close(code=_close_code(exc), reason=str(exc)[:120])
        return
    hub: EventHub = websocket.app.state.events
    try:
        recheck = token_recheck(db, token)
        async for message in follow(hub, db, who.tenant_id, execution, cursor, recheck=recheck):
            if isinstance(message, StreamEvent):
                await websocket.send_text(f'{{"type":"event","event":{message.data}}}')
                metrics.STREAM_EVENTS_SENT.labels("websocket").inc()
            elif isinstance(message, Resync):
                await websocket.send_json({"type": "resync", **message.__dict__})
                await websocket.close(code=1013, reason="resync")
                return
            elif isinstance(message, End):
                ended: dict[str, Any] = {"type": "end", "status": message.status}
                if message.reason is not None:
                    ended["reason"] = message.reason
                await websocket.send_json(ended)
                # 4401 like a refused token at the start: the client must authenticate anew.
                await websocket.close(code=1000 if message.reason is None else 4401)
                return
            else:  # also finds out, by failing, that a silent client has gone
                await websocket.send_json({"type": "keepalive"})
    except WebSocketDisconnect:
        return


def _close_code(exc: OpsError) -> int:
    if isinstance(exc, Unauthenticated):
        return 4401
    if isinstance(exc, PermissionDenied):
        return 4403
    if isinstance(exc, NotFound):
        return 4404
    return 4400
