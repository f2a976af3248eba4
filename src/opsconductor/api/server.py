"""``opsc serve``: the API on uvicorn over one database pool; optional demo tenant."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from opsconductor.api.app import PREFIX, create_app
from opsconductor.config import Settings
from opsconductor.db import auth, migrations
from opsconductor.db.connection import Database, database_url
from opsconductor.db.notify import EventHub
from opsconductor.worker import WorkerOptions

DEMO_ACTOR = "demo-admin"


@dataclass(frozen=True)
class DemoAccess:
    tenant_id: str
    actor_id: str
    token: str
    created: bool


async def ensure_demo(db: Database, home: Path, tenant_id: str) -> DemoAccess:
    """An admin token in ``tenant_id``, made on first start and reused after.

    The tenant is the one the CLI acts in (``settings.tenant``: ``$OPSC_TENANT``, else
    ``default``), so what a user runs from the shell shows in the console they open with
    this token. The token is kept in ``$OPSC_HOME/demo-token`` (mode 0600) so later starts
    can show it again; the database, as always, holds only its hash.
    """
    saved = home / "demo-token"
    async with db.transaction() as conn:
        token = _read_token(saved)
        if token:
            found = await auth.authenticate(conn, token)
            if found is not None and found.tenant_id == tenant_id:
                return DemoAccess(found.tenant_id, found.actor_id, token, created=False)
        made = await auth.create_token(conn, tenant_id, DEMO_ACTOR, name="demo (opsc serve)")
        await auth.grant(conn, tenant_id, DEMO_ACTOR, "admin", granted_by="opsc serve --demo")
    _save_token(saved, made.token)
    return DemoAccess(tenant_id, DEMO_ACTOR, made.token, created=True)


def _read_token(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _save_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


class _Server(uvicorn.Server):
    """uvicorn's server, telling us its real address once bound (port 0 picks a free one)."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, on_listen: Callable[[str], None]
    ) -> None:
        super().__init__(config)
        self.app = app
        self.on_listen = on_listen

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_listen(f"http://{f'[{host}]' if ':' in host else host}:{port}{PREFIX}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for open connections to finish: streams and long polls first.
        hub: EventHub | None = getattr(self.app.state, "events", None)
        if hub is not None:
            hub.end_all()
        await super().shutdown(sockets)


async def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    demo: bool,
    announce: Callable[[str, DemoAccess | None], None],
    workers: int = 4,
) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn drains requests, then the lifespan drains the
    in-process worker pool (handing back what does not finish) and the pool closes."""
    async with Database(database_url(settings), min_size=1, max_size=20) as db:
        await migrations.migrate(db)
        access = await ensure_demo(db, settings.home, settings.tenant) if demo else None
        # ``workers`` executions at once from the queue, in this process (0: none, for
        # deployments that run ``opsc worker`` processes separately).
        app = create_app(
            db,
            workers=WorkerOptions(
                concurrency=workers,
                retention_s=settings.worker_retention_s,
                schedule_every_s=settings.schedule_tick_s,
                schedule_grace_s=settings.schedule_grace_s,
            )
            if workers
            else None,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=False,
            server_header=False,
        )
        await _Server(config, app, lambda url: announce(url, access)).serve()
