"""The ASGI application: routers, RFC 9457 errors, body limit, OpenAPI at /api/v1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import opsconductor
from opsconductor import logs, sla
from opsconductor.api import (
    console_files,
    problems,
    routes_access,
    routes_approvals,
    routes_assets,
    routes_dlq,
    routes_executions,
    routes_hooks,
    routes_jobs,
    routes_me,
    routes_notifications,
    routes_schedules,
    routes_secrets,
    routes_sources,
    routes_staging,
    routes_system,
    routes_tenant,
    streams,
)
from opsconductor.api.inputs import check_text
from opsconductor.db.connection import Database
from opsconductor.db.notify import DEFAULT_BUFFER, EventHub
from opsconductor.worker import Worker, WorkerOptions

PREFIX = "/api/v1"
#: Plans are small; a body past this is a mistake or an attack.
MAX_BODY_BYTES = 1024 * 1024

#: Error answers every authenticated operation may give (all problem+json).
_COMMON_ERRORS = {
    "400": "Bad request: the detail names the field",
    "401": "Missing, unknown, revoked or expired token",
    "403": "The caller's roles do not allow it",
    "404": "No such resource in the caller's tenant",
    "409": "Conflicts with the current state",
    "413": "Request body too large",
    "422": "Invalid input: errors lists every bad field with its path",
    "503": "Database unavailable",
}


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problems.problem(413, self._detail(), instance=scope["path"])
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route, so the problem handler answers it.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"request body exceeds {self.max_bytes} bytes"


async def clean_parameters(request: HTTPConnection) -> None:
    """App-wide dependency: path and query parameters go through the same check as bodies
    (here, not in api/inputs.py: the CLI uses those models and must not load the server)."""
    check_text(dict(request.path_params), "path")
    check_text(dict(request.query_params), "query")


def create_app(
    db: Database,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    workers: WorkerOptions | None = None,
    stream_buffer: int = DEFAULT_BUFFER,
    sla_sweep_s: float | None = None,
) -> FastAPI:
    """The app over an open database (the caller owns and closes it). With ``workers``, the
    process also runs a worker pool for the queue, stopped (drained) with the app.
    ``stream_buffer`` is how many events a stream client may lag before a resync;
    ``sla_sweep_s`` the period of the SLA sweep (default ``OPSC_SLA_SWEEP_S`` or 1 s)."""
    # An ASGI server may import this app without our CLI: its logs still pass the masker.
    logs.ensure_configured()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub: EventHub = app.state.events
        await hub.start()
        pool = Worker(db, actor_id="system:api-worker", options=workers) if workers else None
        running = asyncio.create_task(pool.serve()) if pool else None
        app.state.worker = pool
        sweeper = asyncio.create_task(sla.watch(db, sla_sweep_s))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if pool is not None and running is not None:
                pool.stop()
                await running
            await hub.stop()

    app = FastAPI(
        title="OpsConductor Execution",
        version=opsconductor.__version__,
        description="Run infrastructure operations plans safely. Every /api/v1 call needs a "
        "bearer token; errors are RFC 9457 problem documents.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(clean_parameters)],
    )
    app.state.db = db
    app.state.events = EventHub(db.url, db, buffer=stream_buffer)
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    for router in (
        routes_executions.router,
        routes_approvals.router,
        routes_assets.router,
        routes_dlq.router,
        routes_access.router,
        routes_me.router,
        routes_secrets.router,
        routes_secrets.patterns,
        routes_tenant.router,
        routes_staging.router,
        routes_notifications.router,
        routes_sources.router,
        routes_jobs.router,
        routes_schedules.router,
        routes_hooks.router,
        routes_hooks.manage,
        routes_system.router,
        streams.router,
    ):
        app.include_router(router, prefix=PREFIX)
    app.include_router(routes_system.probes)
    console_files.install(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error answer declared as a problem document."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    problem_schema = problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    as_problem = {
        problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}},
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            if path.startswith(PREFIX):
                for code, text in _COMMON_ERRORS.items():
                    answers.setdefault(code, {"description": text})
            for code, answer in answers.items():
                if int(code) >= 400:
                    answer["content"] = as_problem
    app.openapi_schema = schema
    return schema
