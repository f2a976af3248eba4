"""The dead-letter queue over HTTP: list what ran out of attempts, requeue, it completes."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from opsconductor.api.app import create_app
from opsconductor.db import queue
from opsconductor.db.connection import Database
from opsconductor.plan import parse_plan
from opsconductor.submission import Request, submit
from opsconductor.worker import Worker, WorkerOptions
from tests.api.support import Api
from tests.helpers import admin

PLAN = parse_plan(
    {
        "name": "flaky infra",
        "steps": [
            {
                "name": "s",
                "type": "command",
                "command": "echo ok",
                "targets": {"hostnames": ["localhost"]},
            }
        ],
    }
)


async def _dead_letter(db: Database) -> uuid.UUID:
    """Queue an execution and let every attempt end without a verdict, as crashes do."""
    submitted = await submit(
        db, Request(PLAN, "acme", await admin(db, "alice", "acme"), enqueue=True)
    )
    execution_id = submitted.execution.id
    while True:
        async with db.connection() as conn:
            await conn.execute("UPDATE execution.execution_queue SET available_at = now()")
        leases = await queue.claim(db, "crashy-worker", limit=1)
        assert [lease.execution_id for lease in leases] == [execution_id]
        if await queue.fail(db, leases[0], "worker lost", "crashy-worker") == "dead_letter":
            return uuid.UUID(str(execution_id))


async def test_list_and_requeue_dead_letters(db: Database) -> None:
    app = create_app(db)  # no worker pool: nothing runs until we say so
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(client, app, db)
            operator = await api.login("acme", "olga", "operator")
            viewer = await api.login("acme", "vic", "viewer")
            other = await api.login("globex", "gus", "admin")
            await api.login("acme", "alice", "operator")  # the submitter may run it
            execution_id = await _dead_letter(db)

            listed = (await client.get("/api/v1/dlq", headers=viewer)).json()
            assert [(d["execution_id"], d["failure_reason"]) for d in listed] == [
                (str(execution_id), "worker lost (attempt 3 of 3)")
            ]
            assert listed[0]["attempt_count"] == 3
            assert (await client.get("/api/v1/dlq", headers=other)).json() == []

            denied = await client.post(f"/api/v1/dlq/{execution_id}/requeue", headers=viewer)
            assert denied.status_code == 403
            hidden = await client.post(f"/api/v1/dlq/{execution_id}/requeue", headers=other)
            assert hidden.status_code == 404

            requeued = await client.post(f"/api/v1/dlq/{execution_id}/requeue", headers=operator)
            assert requeued.status_code == 200, requeued.text
            assert requeued.json()["requeued_by"] == "olga"
            again = await client.post(f"/api/v1/dlq/{execution_id}/requeue", headers=operator)
            assert again.status_code == 404
            assert again.headers["content-type"].startswith("application/problem+json")
            assert (await client.get("/api/v1/dlq", headers=viewer)).json() == []

    worker = Worker(db, actor_id="w", options=WorkerOptions(concurrency=1, poll_s=0.2))
    serving = asyncio.create_task(worker.serve())
    try:
        for _ in range(200):
            async with db.connection() as conn:
                cur = await conn.execute(
                    "SELECT status::text AS s FROM execution.executions WHERE id = %s",
                    (execution_id,),
                )
                row = await cur.fetchone()
            if row and row["s"] == "completed":
                break
            await asyncio.sleep(0.1)
        assert row and row["s"] == "completed"
    finally:
        worker.stop()
        await serving
