"""API fixtures: the real app over the test database, reached through httpx's ASGI transport
(the lifespan runs, so the event listener and background work are the real ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from opsconductor.api.app import create_app
from opsconductor.db.connection import Database
from opsconductor.worker import WorkerOptions
from tests.api.support import Api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    app = create_app(db, max_body_bytes=64 * 1024, workers=WorkerOptions(concurrency=4, poll_s=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, app, db)
