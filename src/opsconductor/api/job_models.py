"""Shapes of the API's answers and bodies for jobs, schedules and inbound webhooks (light:
the CLI renders them too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from opsconductor.api.inputs import CleanInput
from opsconductor.jobs import Job, JobVersion


class JobVersionOut(BaseModel):
    job_name: str
    version: int
    plan_name: str
    content_hash: str
    #: the declared parameters, as written in the plan
    params: dict[str, Any]
    plan: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, found: JobVersion) -> JobVersionOut:
        return cls(
            job_name=found.job_name,
            version=found.version,
            plan_name=found.plan_name,
            content_hash=found.content_hash,
            params=found.params,
            plan=found.plan,
            created_by=found.created_by,
            created_at=found.created_at,
        )


class JobOut(BaseModel):
    name: str
    latest_version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    plan_name: str = ""
    schedules: int = 0

    @classmethod
    def of(cls, job: Job, plan_name: str = "", schedules: int = 0) -> JobOut:
        return cls(
            name=job.name,
            latest_version=job.latest_version,
            created_by=job.created_by,
            created_at=job.created_at,
            updated_at=job.updated_at,
            plan_name=plan_name,
            schedules=schedules,
        )


class JobDetail(JobOut):
    version: JobVersionOut


class Saved(BaseModel):
    created: bool
    version: JobVersionOut


class RunIn(CleanInput):
    params: dict[str, Any] = Field(default_factory=dict)
    #: a version to run (default: the latest)
    version: int | None = Field(default=None, ge=1)
