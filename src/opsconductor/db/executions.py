"""Storage of executions: race-safe submission, compare-and-set transitions, events."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypedDict, Unpack

from psycopg.types.json import Jsonb

from opsconductor import masking, status_machine
from opsconductor.db import approval_requests, batching, queries, queue, steps
from opsconductor.db.batching import Executor
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import BadInput, LeaseLost, NotFound, StaleStatus
from opsconductor.idempotency import DEDUP_WINDOW, RETRYABLE
from opsconductor.policies import PlanTimeout
from opsconductor.quick_init import quick_init
from opsconductor.records import Event, Execution, Mode, SlaClass
from opsconductor.status_machine import Status

Q = queries.load("executions")
Row = dict[str, Any]


@quick_init
@dataclass(frozen=True)
class NewExecution:
    tenant_id: str
    actor_id: str
    idempotency_key: str
    plan_name: str
    plan_snapshot: dict[str, Any]
    plan_hash: str
    mode: Mode
    sla_class: SlaClass
    approval_level: int
    priority: int
    estimated_duration_s: float
    #: (step_index, step_name, step_type, asset_id) for every first attempt
    step_targets: list[tuple[int, str, str, str]]
    record_only: bool = False
    #: background work: move it approved -> queued and enqueue it in the same transaction
    enqueue: bool = False
    #: the least visibility timeout its queue lease needs (from observed step durations)
    min_lease_s: float = 0.0
    #: each step's duration-history key, by step index (routing.step_key)
    step_keys: tuple[str, ...] = ()
    #: the plan's part of its execution budget (policies.plan_timeout), stored with its
    #: queue row so the claim can begin it; None: not known, the engine begins it
    plan_timeout: PlanTimeout | None = None
    #: the execution whose failed targets this one re-runs (``opsc rerun --failed``)
    rerun_of: uuid.UUID | None = None
    #: chosen before it is stored: staged enablement decides from it (staging.py)
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    #: why staging made it record-only (None: it did not)
    record_only_reason: str | None = None
    #: the saved job and version it runs (services/jobs.py), None for a plain plan
    job_name: str | None = None
    job_version: int | None = None
    #: ``plan_snapshot`` as canonical JSON, when the submission has serialised it already
    #: (db/bulk.py stores this text rather than serialise the snapshot again)
    plan_snapshot_json: str | None = None
    #: the assets its first lock takes (first_locks.py), stored with its queue row: the
    #: claim leaves it queued while another run holds one; None: no filter
    first_locks: tuple[str, ...] | None = None

    @property
    def action_classes(self) -> tuple[str, ...]:
        """Its steps' action classes, sorted, once each (they pick the queue's retry budget
        and lease timeout): the plan timeout's, which holds them."""
        return () if self.plan_timeout is None else self.plan_timeout.action_classes


@dataclass(frozen=True)
class Submitted:
    execution: Execution
    created: bool
    #: set when this submission retried a failed execution under the same key
    retry_of: uuid.UUID | None = None


async def submit(db: Database, new: NewExecution) -> Submitted:
    """Create the execution, or return the one that already holds the idempotency key.

    Race-safe by the partial unique index: of N concurrent identical submissions one
    INSERT wins, the others wait for it to commit, find it and return it.
    """
    async with db.transaction() as conn:
        return await submit_in(conn, new)


async def submit_in(conn: Conn, new: NewExecution) -> Submitted:
    """``submit`` within the caller's transaction: a schedule's fire or a webhook's
    delivery row commits with its execution, or neither does."""
    retry_of: uuid.UUID | None = None
    for _ in range(5):  # each pass either returns or frees the key once
        row = await _insert(conn, new, retry_of)
        if row is not None:
            execution = await _after_insert(conn, new, Execution.from_row(row), retry_of)
            return Submitted(execution, created=True, retry_of=retry_of)
        cur = await conn.execute(
            Q["lock_active_by_key"],
            {**_key(new), "window_s": DEDUP_WINDOW.total_seconds()},
        )
        held = await cur.fetchone()
        if held is None:
            continue  # released between our INSERT and SELECT: try the INSERT again
        execution = Execution.from_row(held)
        if execution.status in RETRYABLE or held["window_passed"]:
            await conn.execute(Q["release_key"], {"id": execution.id})
            retry_of = execution.id if execution.status in RETRYABLE else None
            continue
        await append_event(conn, execution, "duplicate_submission", new.actor_id, {})
        return Submitted(execution, created=False)
    raise StaleStatus(f"idempotency key {new.idempotency_key} kept changing hands; try again")


def _key(new: NewExecution) -> dict[str, Any]:
    return {"tenant_id": new.tenant_id, "idempotency_key": new.idempotency_key}


async def _insert(conn: Conn, new: NewExecution, retry_of: uuid.UUID | None) -> Row | None:
    cur = await conn.execute(
        Q["insert_execution"],
        {
            **columns(new),
            "id": new.id,
            "retry_of": retry_of,
            "plan_snapshot": Jsonb(new.plan_snapshot),
        },
    )
    return await cur.fetchone()


def columns(new: NewExecution, trace_id: str | None = None) -> dict[str, Any]:
    """The new execution's row as inserted (the id and the plan snapshot's adaptation are
    the caller's: one row, or a JSON array of many in db/bulk.py). ``trace_id``: a fresh
    ``uuid4().hex`` (a bulk draws them all at once), else one is drawn here."""
    return {
        **_key(new),
        "actor_id": new.actor_id,
        "plan_name": new.plan_name,
        "plan_snapshot": new.plan_snapshot,
        "plan_hash": new.plan_hash,
        "status": status_machine.initial_status(new.approval_level).value,
        "mode": new.mode.value,
        "sla_class": new.sla_class.value,
        "approval_level": new.approval_level,
        "priority": new.priority,
        "estimated_duration_s": new.estimated_duration_s,
        "trace_id": trace_id or uuid.uuid4().hex,
        "record_only": new.record_only,
        "rerun_of": new.rerun_of,
        "record_only_reason": new.record_only_reason,
        "job_name": new.job_name,
        "job_version": new.job_version,
    }


def submitted_payload(new: NewExecution, retry_of: uuid.UUID | None = None) -> dict[str, Any]:
    """The ``submitted`` event's payload, for one submission and for a bulk alike."""
    payload: dict[str, Any] = {"plan_hash": new.plan_hash, "idempotency_key": new.idempotency_key}
    if retry_of:
        payload["retry_of"] = str(retry_of)
    if new.rerun_of:
        payload["rerun_of"] = str(new.rerun_of)
    if new.record_only_reason:
        payload["record_only_reason"] = new.record_only_reason
    if new.job_name:
        payload.update(job=new.job_name, job_version=new.job_version)
    return payload


async def _after_insert(
    conn: Conn, new: NewExecution, execution: Execution, retry_of: uuid.UUID | None
) -> Execution:
    payload = submitted_payload(new, retry_of)
    await conn.execute(
        Q["insert_event"],
        {
            "execution_id": execution.id,
            "tenant_id": execution.tenant_id,
            "event_type": "submitted",
            "to_status": execution.status.value,
            "actor_id": new.actor_id,
            "payload": Jsonb(payload),
        },
    )
    await steps.insert_pending(conn, execution.id, new.tenant_id, new.step_targets, new.step_keys)
    if new.approval_level >= 1:
        await approval_requests.request(
            conn,
            execution_id=execution.id,
            tenant_id=new.tenant_id,
            level=new.approval_level,
            plan_hash=new.plan_hash,
            requested_by=new.actor_id,
        )
    if new.enqueue and execution.status is Status.APPROVED:
        return await _enqueue(conn, new, execution)
    return execution


async def _enqueue(conn: Conn, new: NewExecution, execution: Execution) -> Execution:
    """approved -> queued plus the queue row and its wake-up NOTIFY, all in the submission's
    transaction: a crash can never leave a queued execution without its queue row."""
    await transition(conn, execution.id, Status.APPROVED, Status.QUEUED, actor_id=new.actor_id)
    await queue.enqueue(
        conn,
        execution.id,
        new.action_classes,
        min_lease_s=new.min_lease_s,
        plan_timeout=new.plan_timeout,
        first_locks=new.first_locks,
    )
    return replace(execution, status=Status.QUEUED)


async def append_event(
    conn: Conn,
    execution: Execution | Mapping[str, Any],
    event_type: str,
    actor_id: str,
    payload: dict[str, Any],
    *,
    masker: masking.Masker = masking.DEFAULT,
) -> int:
    """Append to the audit trail; the payload is masked here, at the sink. ``execution``
    may be a mapping with ``id`` and ``tenant_id`` (the lock reaper knows no more)."""
    if isinstance(execution, Execution):
        execution_id, tenant_id = execution.id, execution.tenant_id
    else:
        execution_id, tenant_id = execution["id"], execution["tenant_id"]
    cur = await conn.execute(
        Q["insert_event"],
        {
            "execution_id": execution_id,
            "tenant_id": tenant_id,
            "event_type": event_type,
            "to_status": None,
            "actor_id": actor_id,
            "payload": Jsonb(masker.mask_data(payload)),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def append_events(
    conn: Executor,
    execution: Execution,
    event_type: str,
    actor_id: str,
    payloads: list[dict[str, Any]],
) -> None:
    """Append several events in one statement, shared with other executions' when ``conn``
    is the batcher. The payloads must be masked already: the caller is the sink that masks
    (``engine/live.py`` masks output lines with what came before them)."""
    await batching.run(
        conn,
        Q["append_events"],
        [
            {
                "execution_id": execution.id,
                "tenant_id": execution.tenant_id,
                "event_type": event_type,
                "actor_id": actor_id,
                "payload": payload,
            }
            for payload in payloads
        ],
    )


@dataclass(frozen=True)
class Closing:
    """What a run held back to write with its end, in the same statement (engine/ending.py):
    its last attempt's result (a ``steps.finish_item``) and the asset locks it still holds.
    Both are written whether or not the lease holds, as they were when written apart."""

    tenant_id: str
    attempt: dict[str, Any] | None = None
    #: ``{"asset_id": ..., "owner_tag": ...}`` per lock, let go of only where still ours
    locks: list[dict[str, str]] = field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        """The ``end_run`` statement's columns for it (besides the transition's own)."""
        attempt = self.attempt or {}
        return {
            "tenant_id": self.tenant_id,
            "attempt_id": attempt.get("id"),
            "step_status": attempt.get("status"),
            "exit_code": attempt.get("exit_code"),
            "output": attempt.get("output"),
            "stderr": attempt.get("stderr"),
            "error": attempt.get("error"),
            "step_actor": attempt.get("actor_id"),
            "step_payload": attempt.get("payload"),
            "locks": self.locks or None,
        }


class TransitionOptions(TypedDict, total=False):
    """What a status change may carry besides who made it (see ``transition``)."""

    reason: str | None
    payload: dict[str, Any] | None
    timeout_at: datetime | None
    worker_id: str | None
    masker: masking.Masker
    lease_token: uuid.UUID | None
    skip_pending: bool
    closing: Closing | None


def transition_item(
    execution_id: uuid.UUID,
    current: Status,
    target: Status,
    *,
    actor_id: str,
    **options: Unpack[TransitionOptions],
) -> dict[str, Any]:
    """One item of the set-based ``transition`` statement (checked against the status
    machine; reason and payload masked here, at the sink)."""
    status_machine.check(current, target)
    masker = options.get("masker", masking.DEFAULT)
    reason = options.get("reason")
    reason = None if reason is None else masker.mask(reason)
    payload = options.get("payload")
    payload = masker.mask_data(payload) if payload else payload
    return {
        "id": execution_id,
        "from_status": current.value,
        "to_status": target.value,
        "terminal": status_machine.is_terminal(target),
        "reason": reason,
        "actor_id": actor_id,
        "payload": {"reason": reason, **(payload or {})} if reason else payload or {},
        "timeout_at": options.get("timeout_at"),
        "worker_id": options.get("worker_id"),
        "lease_token": options.get("lease_token"),
        "skip_pending": options.get("skip_pending", False),
    }


async def transition(
    conn: Executor,
    execution_id: uuid.UUID,
    current: Status,
    target: Status,
    *,
    actor_id: str,
    **options: Unpack[TransitionOptions],
) -> int:
    """Compare-and-set ``current -> target``; returns the event id. Of two concurrent
    writers from the same status exactly one wins, the other gets ``StaleStatus``.
    The reason and payload are masked here, at the sink.

    With ``lease_token`` (a worker ending its execution) the move happens only while that
    queue lease is held, and the queue row goes with it; ``LeaseLost`` otherwise, with
    nothing changed. ``skip_pending`` also marks the steps still pending as skipped.
    ``closing``: what the run held back for its end (written even if the lease was lost).
    All of it is one statement: it commits as a whole or not at all, in one round trip."""
    item = transition_item(execution_id, current, target, actor_id=actor_id, **options)
    lease_token = options.get("lease_token")
    closing = options.get("closing")
    query = Q["transition"]
    if closing is not None:
        item.update(closing.columns())
        query = Q["end_run"]
    # key: an execution's status never changes twice in one batched statement
    (row,) = await batching.run(conn, query, [item], key=execution_id)
    if not row["leased"]:
        raise LeaseLost(
            f"execution {execution_id}: lease {lease_token} is no longer held by this "
            "worker; its result was not recorded"
        )
    if row["id"] is None:
        found = await batching.fetch(conn, Q["current_status"], {"id": execution_id})
        now = found[0] if found else None
        if now is None:
            raise NotFound(f"execution {execution_id} does not exist")
        raise StaleStatus(
            f"execution {execution_id} is {now['status']}, not {current}: "
            f"cannot move it to {target}"
        )
    return int(row["id"])


async def get(conn: Conn, tenant_id: str, execution_id: str) -> Execution:
    """By full id or by a unique prefix of at least 6 characters (as ``opsc show`` prints)."""
    try:
        full = uuid.UUID(execution_id)
    except ValueError:
        full = None
    if full is not None:
        cur = await conn.execute(Q["get_execution"], {"tenant_id": tenant_id, "id": full})
        rows = await cur.fetchall()
    elif len(execution_id) >= 6 and all(c in "0123456789abcdef-" for c in execution_id.lower()):
        cur = await conn.execute(
            Q["find_execution_by_prefix"], {"tenant_id": tenant_id, "prefix": execution_id.lower()}
        )
        rows = await cur.fetchall()
        if len(rows) > 1:
            raise BadInput(f"execution id {execution_id!r} is ambiguous: give more characters")
    else:
        raise BadInput(f"execution id {execution_id!r} is not a UUID or a prefix of 6+ hex digits")
    if not rows:
        raise NotFound(f"execution {execution_id} not found")
    return Execution.from_row(rows[0])


async def events(conn: Conn, execution_id: uuid.UUID, after: int = 0) -> list[Event]:
    cur = await conn.execute(Q["list_events"], {"execution_id": execution_id, "after": after})
    return [Event.from_row(row) for row in await cur.fetchall()]


async def policies(conn: Conn) -> list[Row]:
    cur = await conn.execute(Q["load_policies"])
    return await cur.fetchall()
