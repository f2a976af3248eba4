"""Shapes of the API's answers and bodies for jobs, schedules and inbound webhooks (light:
the CLI renders them too)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from opsconductor.api.inputs import CleanInput
from opsconductor.api.models import Answer
from opsconductor.hooks import Hook
from opsconductor.jobs import Job, JobSummary, JobVersion
from opsconductor.run_form import FormField
from opsconductor.schedule import Schedule


class JobVersionOut(Answer):
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


class JobOut(Answer):
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


class JobListed(JobOut):
    """``GET /jobs``: a job with its latest run (none yet: null)."""

    last_run_id: uuid.UUID | None = None
    last_run_status: str | None = None
    last_run_at: datetime | None = None

    @classmethod
    def listed(cls, found: JobSummary) -> JobListed:
        return cls(
            **JobOut.of(found.job, found.plan_name, found.schedules).model_dump(),
            last_run_id=found.last_run_id,
            last_run_status=found.last_run_status,
            last_run_at=found.last_run_at,
        )


class FormFieldOut(Answer):
    name: str
    #: the declared type: string, int, bool, choice or secret-ref
    type: str
    #: how to draw it: text, integer, select or secret_path
    control: str
    required: bool
    default: str | int | bool | None
    description: str | None
    choices: list[str]
    max_length: int | None
    #: a JavaScript regular expression the text must match
    pattern: str | None
    hint: str

    @classmethod
    def of(cls, found: FormField) -> FormFieldOut:
        return cls(
            name=found.name,
            type=found.type,
            control=found.control.value,
            required=found.required,
            default=found.default,
            description=found.description,
            choices=list(found.choices),
            max_length=found.max_length,
            pattern=found.pattern,
            hint=found.hint,
        )


class RunFormOut(Answer):
    """``GET /jobs/{name}/form``: the run form of one version (POST its values to
    ``/jobs/{name}/runs`` with that ``version``)."""

    job: str
    version: int
    plan_name: str
    fields: list[FormFieldOut]


class JobDetail(JobOut):
    version: JobVersionOut


class Saved(Answer):
    created: bool
    version: JobVersionOut


class RunIn(CleanInput):
    params: dict[str, Any] = Field(default_factory=dict)
    #: a version to run (default: the latest)
    version: int | None = Field(default=None, ge=1)


class ScheduleIn(CleanInput):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    job: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    #: 5 fields, or 6 with seconds last
    cron: str = Field(min_length=9, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    #: after a downtime: fire nothing for the missed slots, or one run for all of them
    missed: Literal["skip", "run_once"] = "skip"
    #: the job version it runs (default: the latest now)
    version: int | None = Field(default=None, ge=1)
    #: run the job's latest version at each fire instead (as the schedule's creator)
    follow_latest: bool = False


class ScheduleOut(Answer):
    id: uuid.UUID
    name: str
    job: str
    #: the version it runs; null: the job's latest at each fire
    job_version: int | None = None
    cron: str
    timezone: str
    params: dict[str, Any]
    missed: str
    paused: bool
    next_fire_at: datetime
    #: the next fire times (none while paused)
    upcoming: list[datetime]
    created_by: str
    last_slot: datetime | None = None
    last_execution_id: uuid.UUID | None = None
    last_error: str | None = None

    @classmethod
    def of(cls, found: Schedule, upcoming: list[datetime]) -> ScheduleOut:
        return cls(
            id=found.id,
            name=found.name,
            job=found.job_name,
            job_version=found.job_version,
            cron=found.cron,
            timezone=found.timezone,
            params=found.params,
            missed=found.missed.value,
            paused=found.paused,
            next_fire_at=found.next_fire_at,
            upcoming=upcoming,
            created_by=found.created_by,
            last_slot=found.last_slot,
            last_execution_id=found.last_execution_id,
            last_error=found.last_error,
        )


class FireOut(Answer):
    slot: datetime
    catch_up: bool
    execution_id: uuid.UUID | None
    error: str | None
    fired_at: datetime
    fired_by: str | None


class HookIn(CleanInput):
    #: param name -> JSON pointer ("/release/tag") or dotted path ("release.tag")
    mapping: dict[str, str] = Field(default_factory=dict)
    #: fixed param values (mapped ones override them)
    params: dict[str, Any] = Field(default_factory=dict)
    #: the job version it runs (default: the latest now)
    version: int | None = Field(default=None, ge=1)
    #: run the job's latest version at each delivery instead (as the hook's creator)
    follow_latest: bool = False


class HookOut(Answer):
    id: str
    job: str
    #: the version it runs; null: the job's latest at each delivery
    job_version: int | None = None
    #: where senders POST (under the API's prefix)
    path: str
    mapping: dict[str, str]
    params: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, hook: Hook) -> HookOut:
        return cls(
            id=hook.id,
            job=hook.job_name,
            job_version=hook.job_version,
            path=f"/api/v1/hooks/{hook.id}",
            mapping=hook.mapping,
            params=hook.params,
            created_by=hook.created_by,
            created_at=hook.created_at,
        )


class HookCreated(HookOut):
    #: the signing secret: shown this once (sealed in the secret store afterwards)
    secret: str


class DeliveryOut(Answer):
    id: int
    accepted: bool
    status_code: int
    reason: str | None
    signature: str | None
    delivery_id: str | None
    body_sha256: str | None
    execution_id: uuid.UUID | None
    received_at: datetime


class HookAccepted(Answer):
    execution_id: uuid.UUID
    status: str
    job: str
    job_version: int | None
