"""``/api/v1/jobs``: saved, versioned plans run by name (services/jobs.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from opsconductor.api import models
from opsconductor.api.auth import Db, Who
from opsconductor.api.job_models import (
    FormFieldOut,
    JobDetail,
    JobListed,
    JobOut,
    JobVersionOut,
    RunFormOut,
    RunIn,
    Saved,
)
from opsconductor.api.routes_executions import body_data
from opsconductor.services import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


def _parse(body: bytes, content_type: str) -> Any:
    from opsconductor.plan import parse_plan

    return parse_plan(body_data(body, content_type))


@router.put(
    "/{name}",
    response_model=Saved,
    responses={201: {"model": Saved, "description": "A new version was saved"}},
    summary="Save a plan as the job's next version",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The plan (JSON or YAML), its `params` declarations included",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
)
async def save_job(name: JobName, request: Request, response: Response, db: Db, who: Who) -> Saved:
    """201 and the new version when the content differs from the latest (or the job is
    new); 200 and the latest version when it is the same."""
    body = await request.body()
    plan = await asyncio.to_thread(_parse, body, request.headers.get("content-type", ""))
    saved = await jobs.save(db, who, name, plan)
    response.status_code = 201 if saved.created else 200
    return Saved(created=saved.created, version=JobVersionOut.of(saved.version))


@router.get("", response_model=list[JobListed], summary="The tenant's jobs and their latest runs")
async def list_jobs(db: Db, who: Who) -> list[JobListed]:
    return [JobListed.listed(found) for found in await jobs.list_jobs(db, who)]


@router.get("/{name}", response_model=JobDetail, summary="A job and its latest version")
async def show_job(
    name: JobName, db: Db, who: Who, version: Annotated[int | None, Query(ge=1)] = None
) -> JobDetail:
    job, found = await jobs.show(db, who, name, version)
    return JobDetail(**JobOut.of(job).model_dump(), version=JobVersionOut.of(found))


@router.get("/{name}/form", response_model=RunFormOut, summary="The run form of a version")
async def run_form(
    name: JobName, db: Db, who: Who, version: Annotated[int | None, Query(ge=1)] = None
) -> RunFormOut:
    """One field per declared parameter (type, required, default, choices, the pattern
    its text must match) for a client to draw and check before it POSTs the run."""
    found, fields = await jobs.form(db, who, name, version)
    return RunFormOut(
        job=found.job_name,
        version=found.version,
        plan_name=found.plan_name,
        fields=[FormFieldOut.of(f) for f in fields],
    )


@router.get("/{name}/versions", response_model=list[JobVersionOut], summary="Every version")
async def job_versions(name: JobName, db: Db, who: Who) -> list[JobVersionOut]:
    return [JobVersionOut.of(v) for v in await jobs.history(db, who, name)]


@router.delete("/{name}", status_code=204, summary="Delete a job (its runs stay)")
async def delete_job(name: JobName, db: Db, who: Who) -> Response:
    await jobs.delete(db, who, name)
    return Response(status_code=204)


@router.post(
    "/{name}/runs",
    status_code=202,
    response_model=models.Execution,
    responses={200: {"model": models.Execution, "description": "Duplicate: the existing one"}},
    summary="Run the job (queued for the workers)",
)
async def run_job(
    name: JobName,
    body: RunIn,
    response: Response,
    db: Db,
    who: Who,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=200, description="Dedup key"),
    ] = None,
) -> models.Execution:
    """202 with the new execution (queued, or waiting for approval); 200 with the existing
    one for a duplicate within the deduplication window."""
    submitted = await jobs.run(
        db, who, name, body.params, version=body.version, idempotency_key=idempotency_key
    )
    if not submitted.created:
        response.status_code = 200
    return models.Execution.from_record(submitted.execution)


@router.get("/{name}/runs", response_model=list[models.Execution], summary="The job's runs")
async def job_runs(
    name: JobName, db: Db, who: Who, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[models.Execution]:
    return [models.Execution.from_record(e) for e in await jobs.runs(db, who, name, limit)]
