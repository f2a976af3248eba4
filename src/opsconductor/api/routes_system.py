"""Statistics (authenticated) and health/readiness probes (open, for load balancers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from opsconductor import metrics
from opsconductor.api import models
from opsconductor.api.auth import Db, Who
from opsconductor.api.problems import problem
from opsconductor.db import metrics as db_metrics
from opsconductor.db import migrations, workers
from opsconductor.errors import DatabaseError
from opsconductor.services import executions

router = APIRouter(tags=["system"])
probes = APIRouter(tags=["probes"])


@router.get("/stats", response_model=models.Stats, summary="Counts by status, queue depth")
async def stats(db: Db, who: Who) -> models.Stats:
    found = await executions.stats(db, who)
    return models.Stats(
        executions_by_status=found.by_status,
        executions_total=sum(found.by_status.values()),
        queue_waiting=found.queue_waiting,
        queue_leased=found.queue_leased,
        dlq_open=found.dlq_open,
    )


@probes.get("/healthz", response_model=models.Health, summary="The process is up")
async def healthz() -> models.Health:
    return models.Health(status="ok")


@probes.get(
    "/readyz",
    response_model=models.Readiness,
    responses={503: {"description": "Not ready: the detail says why"}},
    summary="The database is reachable and its schema current",
)
async def readyz(db: Db) -> models.Readiness | JSONResponse:
    try:
        waiting = [f"{m.version:04d}_{m.name}" for m in await migrations.pending(db)]
    except DatabaseError:
        return problem(503, "the database is unreachable", instance="/readyz")
    if waiting:
        return problem(503, f"migrations not applied: {', '.join(waiting)}", instance="/readyz")
    async with db.connection() as conn:
        rows = await workers.listing(conn)
    alive = [r for r in rows if r["state"] == "alive"]
    return models.Readiness(
        status="ready",
        database=True,
        pending_migrations=[],
        workers=models.WorkerHealth(
            alive=len(alive),
            stale=sum(r["state"] == "stale" for r in rows),
            in_flight=sum(int(r["in_flight"]) for r in alive),
        ),
    )


@probes.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics (text exposition format)",
)
async def prometheus_metrics(db: Db) -> Response:
    """Cluster-wide figures read from the database at scrape time, then this process's own
    (stream clients, API denials, lock waits); see the README's Metrics section."""
    async with db.connection() as conn:
        found = await db_metrics.snapshot(conn, stale_s=workers.STALE_S)
    return Response(metrics.exposition(found), media_type=metrics.CONTENT_TYPE)
