"""Shapes of the API's answers (published in the OpenAPI document)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsconductor import failures, records
from opsconductor.api.inputs import CleanInput
from opsconductor.inventory import Asset

if TYPE_CHECKING:  # the CLI renders these shapes too: it must not load the plan models
    from opsconductor.plan import Plan
    from opsconductor.services.executions import Validated


def _fields(model: type[BaseModel], record: object) -> dict[str, Any]:
    """The record's attributes the model publishes (statuses as their string values)."""
    return {name: getattr(record, name) for name in model.model_fields}


class Answer(BaseModel):
    """Base of the answer shapes. Their validators are built on first use, not at import:
    a CLI command that shows one kind of answer does not pay for all of them."""

    model_config = ConfigDict(defer_build=True)


class Progress(Answer):
    """Over (step, target) pairs at their latest attempt; ETA in seconds when known."""

    total: int
    done: int
    failed: int
    running: int
    pending: int
    skipped: int
    percent: float
    #: None when there is no basis for one (``eta_basis`` says why)
    eta_s: float | None
    #: where the ETA comes from, or why it is unknown; None when nothing is left to run
    eta_basis: str | None = None


class ProgressReport(Progress):
    """``GET /executions/{id}/progress``: counts, percent and an ETA from what the same steps
    took before (by step key: median seconds in ``typical_s``, over ``samples`` runs)."""

    execution_id: uuid.UUID
    status: str
    typical_s: dict[str, float]
    samples: dict[str, int] = {}


class Execution(Answer):
    id: uuid.UUID
    tenant_id: str
    actor_id: str
    idempotency_key: str
    retry_of: uuid.UUID | None
    #: the execution whose failed targets this one re-runs (``opsc rerun ID --failed``)
    rerun_of: uuid.UUID | None = None
    plan_name: str
    plan_hash: str
    status: str
    status_reason: str | None
    mode: str
    sla_class: str
    approval_level: int
    priority: int
    estimated_duration_s: float
    trace_id: str
    worker_id: str | None
    timeout_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None
    #: dark launch: every step was recorded as skipped, no target was touched
    record_only: bool
    #: why staged enablement made it record-only (None: it did not)
    record_only_reason: str | None = None
    #: the saved job and version this execution is a run of (None: a plain plan)
    job_name: str | None = None
    job_version: int | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, execution: records.Execution) -> Execution:
        return cls.model_validate(_fields(cls, execution))


class BulkItem(Answer):
    execution: Execution
    #: false: a duplicate within the deduplication window, answered by the existing one
    created: bool


class BulkSubmitted(Answer):
    items: list[BulkItem]
    created: int
    duplicates: int


class Step(Answer):
    step_index: int
    step_name: str
    step_type: str
    target_asset_id: str
    status: str
    attempt: int
    retry_count: int
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    output: str
    stderr: str
    error: str | None

    @classmethod
    def from_record(cls, attempt: records.StepAttempt) -> Step:
        return cls.model_validate(_fields(cls, attempt))


class ApprovalDecision(Answer):
    actor_id: str
    decision: str
    plan_hash: str | None
    comment: str | None
    decided_at: datetime

    @classmethod
    def from_record(cls, decision: records.ApprovalDecision) -> ApprovalDecision:
        return cls.model_validate(_fields(cls, decision))


class Approval(Answer):
    """One approval request (of the plan, or of a step at level 3) and its decisions."""

    id: int
    step_index: int | None
    level: int
    plan_hash: str
    state: str
    requested_by: str
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime
    comment: str | None
    decisions: list[ApprovalDecision]

    @classmethod
    def from_record(cls, approval: records.ApprovalRequest) -> Approval:
        values = _fields(cls, approval)
        values["decisions"] = [ApprovalDecision.from_record(d) for d in approval.decisions]
        return cls.model_validate(values)


class ReviewStep(Answer):
    """One step as an approver reads it: its resolved targets and what it does."""

    index: int
    name: str
    type: str
    action_class: str | None
    targets: list[str]
    #: what it does, field by field, in the plan's order: ``[["command", "systemctl ..."]]``
    work: list[tuple[str, str]]
    settings: list[tuple[str, str]]


class DiffLine(Answer):
    #: same, added, removed, or gap (unchanged lines left out)
    op: str
    text: str


class WaitingApproval(Answer):
    """``GET /approvals``: an open approval, its execution, the plan laid out, the server's
    clock (for a countdown that does not trust the browser's) and the change since the last
    run of the same job, else of the same plan name (``previous``, which one in
    ``compared_with``: ``job`` or ``plan_name``; ``diff`` empty: the same plan)."""

    approval: Approval
    execution: Execution
    steps: list[ReviewStep]
    params: dict[str, Any]
    previous: Execution | None
    diff: list[DiffLine] | None
    now: datetime
    compared_with: Literal["job", "plan_name"] | None = None


class Failure(Answer):
    """Targets that failed one step the same way: same cause, same last line of stderr."""

    step_index: int
    step_name: str
    #: ``exit 1: disk /var 97% full``: the cause, then the last line of stderr
    message: str
    #: ``exit 1``, or the recorded error (``timed out after 10 s``)
    cause: str
    #: the last non-empty line of stderr, masked as stored ("" when there is none)
    detail: str
    count: int
    targets: list[str]
    #: the last lines of stderr of the first target
    tail: list[str]

    @classmethod
    def of(cls, found: failures.FailureGroup) -> Failure:
        return cls(
            step_index=found.step_index,
            step_name=found.step_name,
            message=found.message,
            cause=found.cause,
            detail=found.detail,
            count=found.count,
            targets=list(found.targets),
            tail=list(found.tail),
        )


class ExecutionDetail(Execution):
    plan: dict[str, Any]
    progress: Progress
    steps: list[Step]
    approvals: list[Approval] = []
    #: failed targets grouped by step and cause, largest group first
    failures: list[Failure] = []


class ExecutionPage(Answer):
    items: list[Execution]
    #: pass as ``cursor`` to get the next page; null on the last page
    next_cursor: str | None


class Event(Answer):
    id: int
    event_type: str
    from_status: str | None
    to_status: str | None
    actor_id: str
    payload: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_record(cls, event: records.Event) -> Event:
        return cls.model_validate(_fields(cls, event))


class EventPage(Answer):
    events: list[Event]
    #: the cursor to pass as ``after`` next time
    last_event_id: int
    status: str


class CancelResult(Answer):
    execution: Execution
    #: ``cancelled``: it will never run; ``requested``: it is running, the request is recorded
    outcome: Literal["cancelled", "requested"]


class AssetFields(CleanInput):
    hostname: str = Field(min_length=1, max_length=255)
    address: str | None = Field(default=None, min_length=1, max_length=255)
    environment: str = Field(default="dev", min_length=1, max_length=63)
    connection_type: Literal["local", "ssh"] = "local"
    port: int | None = Field(default=None, ge=1, le=65535)
    os: str | None = Field(default=None, max_length=63)
    credential_ref: str | None = Field(default=None, min_length=1, max_length=255)
    #: SSH login name; None means the user running the worker
    username: str | None = Field(default=None, min_length=1, max_length=255)
    tags: dict[str, str] = Field(default_factory=dict)
    #: asset id of the SSH bastion this asset is reached through
    proxy_jump: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    #: inventory variables, ``asset.vars.*`` in templates
    vars: dict[str, Any] = Field(default_factory=dict)

    def to_asset(self, asset_id: str) -> Asset:
        return Asset(
            asset_id=asset_id,
            hostname=self.hostname,
            address=self.address or self.hostname,
            environment=self.environment,
            connection_type=self.connection_type,
            port=self.port,
            os=self.os,
            credential_ref=self.credential_ref,
            username=self.username,
            tags=self.tags,
            proxy_jump=self.proxy_jump,
            vars=self.vars,
        )


class AssetCreate(AssetFields):
    asset_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class AssetOut(Answer):
    asset_id: str
    hostname: str
    address: str
    environment: str
    connection_type: str
    port: int | None
    os: str | None
    credential_ref: str | None
    username: str | None
    tags: dict[str, str]
    proxy_jump: str | None = None
    vars: dict[str, Any]

    @classmethod
    def from_asset(cls, asset: Asset) -> AssetOut:
        return cls(
            asset_id=asset.asset_id,
            hostname=asset.hostname,
            address=asset.address,
            environment=asset.environment,
            connection_type=asset.connection_type,
            port=asset.port,
            os=asset.os,
            credential_ref=asset.credential_ref,
            username=asset.username,
            tags=dict(asset.tags),
            proxy_jump=asset.proxy_jump,
            vars=dict(asset.vars),
        )


class Stats(Answer):
    executions_by_status: dict[str, int]
    executions_total: int
    queue_waiting: int
    queue_leased: int
    dlq_open: int


class DeadLetter(Answer):
    """An execution that ran out of attempts (the dead-letter queue)."""

    id: int
    execution_id: uuid.UUID
    plan_name: str
    status: str
    failure_reason: str
    attempt_count: int
    failed_at: datetime
    requeued: bool
    requeued_at: datetime | None
    requeued_by: str | None


class Health(Answer):
    status: Literal["ok"]


class WorkerHealth(Answer):
    alive: int
    stale: int
    in_flight: int


class Readiness(Answer):
    """Ready means the database answers and its schema is current. Workers are reported, not
    required: an API node serves reads, approvals and immediate plans without any."""

    status: Literal["ready"]
    database: bool
    pending_migrations: list[str]
    workers: WorkerHealth


class PushedFile(Answer):
    #: the step's ``src`` as rendered for its targets
    src: str
    #: SHA-256 of its bytes now: part of the plan hash, checked again before the push
    sha256: str


class ValidatedStep(Answer):
    name: str
    type: str
    #: the class RBAC, timeouts and crash re-runs go by
    action_class: str
    #: true when the plan does not declare it and it was inferred from the step
    action_class_inferred: bool = False
    #: asset ids the step's selector resolves to now
    targets: list[str]
    #: files this step pushes (push ``file`` steps only)
    files: list[PushedFile] = []
    #: estimated seconds per target, and where that figure comes from
    estimated_s: float | None = None
    estimate_source: str | None = None


class Validation(Answer):
    """A plan checked against the caller's inventory; nothing stored."""

    name: str
    plan_hash: str
    steps: list[ValidatedStep]
    #: every declared parameter's bound value (a secret-ref parameter: its path)
    params: dict[str, str | int | bool | None] = {}
    #: the routing it gets: estimate (steps x targets, one after another), SLA class, mode
    estimated_s: float | None = None
    sla_class: str | None = None
    mode: str | None = None
    #: the execution's time budget, and why that much
    budget_s: float | None = None
    budget_why: str | None = None
    #: a rolling update (plan ``serial``): the batches of hosts, in the order they run
    serial: int | str | list[int | str] | None = None
    max_fail_percentage: float | None = None
    batches: list[list[str]] | None = None

    @classmethod
    def of(cls, plan: Plan, found: Validated) -> Validation:
        from opsconductor import rollout

        batches = None
        if plan.serial is not None:
            hosts = rollout.hosts_of([[a.asset_id for a in t] for t in found.targets])
            batches = rollout.batches(plan.serial, hosts)
        return cls(
            serial=plan.serial,
            max_fail_percentage=None if plan.serial is None else plan.fail_limit,
            batches=batches,
            name=plan.name,
            plan_hash=found.plan_hash,
            params=found.params,
            estimated_s=found.estimate.total_s,
            sla_class=found.route.sla_class,
            mode=found.route.mode,
            budget_s=found.budget_s,
            budget_why=found.budget_why,
            steps=[
                ValidatedStep(
                    name=step.name,
                    type=step.type,
                    action_class=step.action_class,
                    action_class_inferred=step.action_class_inferred,
                    targets=[a.asset_id for a in targets],
                    files=[
                        PushedFile(src=src, sha256=sha256)
                        for src, sha256 in sorted(found.files.get(index, {}).items())
                    ],
                    estimated_s=found.estimate.steps[index].per_target_s,
                    estimate_source=found.estimate.steps[index].source,
                )
                for index, (step, targets) in enumerate(zip(plan.steps, found.targets, strict=True))
            ],
        )
