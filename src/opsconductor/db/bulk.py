"""Many submissions of one tenant stored at once: the same rows, events, approval requests
and queue entries as ``executions.submit`` writes one by one, with one set-based statement
(see sql/bulk.sql). All or nothing: a crash stores none of them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.errors import UniqueViolation
from psycopg.rows import tuple_row

from opsconductor import status_machine
from opsconductor.db import executions, queries
from opsconductor.db.connection import Database
from opsconductor.db.executions import NewExecution, Submitted
from opsconductor.errors import DatabaseError
from opsconductor.ids import uuid4_hexes
from opsconductor.records import Execution
from opsconductor.status_machine import Status

Q = queries.load("bulk")

#: ``submit`` with its ``-- racing:`` line live: ON CONFLICT DO NOTHING, for a bulk whose
#: plain insert met a key held twice in it or by a transaction that had not committed.
_RACING_MARK = "-- racing: "
if Q["submit"].count(_RACING_MARK) != 1:
    raise RuntimeError("sql/bulk.sql: submit must hold exactly one `-- racing:` line")
_SUBMIT_RACING = Q["submit"].replace(_RACING_MARK, "")
#: The unique index of held keys (schema.sql): its violation is the race above, nothing else.
_KEYS_INDEX = "executions_idempotency_key_uniq"


async def submit_many(db: Database, news: Sequence[NewExecution]) -> list[Submitted]:
    """Store every new execution; answers in the order given. A key already held (a
    duplicate, or a failed run under the same key) takes the one-by-one path afterwards,
    which answers it exactly as a single submission would."""
    statuses = [_created_as(new) for new in news]
    trace_ids = uuid4_hexes(len(news))
    items = json.dumps(
        [_item(new, statuses[i], trace_ids[i]) for i, new in enumerate(news)],
        separators=(",", ":"),
    )
    snapshots = "[" + ",".join(map(_snapshot_json, news)) + "]"
    params = {"items": items, "snapshots": snapshots}
    # A key given twice in the bulk would be a unique violation of the plain insert: such a
    # bulk takes the statement that skips it at once.
    unique = len({new.idempotency_key for new in news}) == len(news)
    try:
        rows = await _store(db, Q["submit"] if unique else _SUBMIT_RACING, params)
    except DatabaseError as exc:
        if not _key_raced(exc):
            raise
        rows = await _store(db, _SUBMIT_RACING, params)  # nothing of the first was kept
    answers: dict[int, Submitted] = {}
    for row in rows:
        i = row[0] - 1
        execution = _created(news[i], trace_ids[i], statuses[i], row[1])
        answers[i] = Submitted(execution, created=True)
    for i, new in enumerate(news):
        if i not in answers:  # after the commit: the holder of its key is visible now
            answers[i] = await executions.submit(db, new)
    return [answers[i] for i in range(len(news))]


async def _store(db: Database, statement: str, params: dict[str, str]) -> list[tuple[Any, ...]]:
    """One ``submit`` in a transaction of its own: (ord, created_at) of each execution made."""
    async with db.transaction() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute(statement, params)
        return await cur.fetchall()


def _key_raced(exc: DatabaseError) -> bool:
    """Whether the plain insert met a held key it could not see before (see ``submit``)."""
    cause = exc.__cause__
    return isinstance(cause, UniqueViolation) and cause.diag.constraint_name == _KEYS_INDEX


def _item(new: NewExecution, status: Status, trace_id: str) -> list[Any]:
    """One execution of the ``submit`` statement, by position (see sql/bulk.sql)."""
    keys = new.step_keys
    payload = executions.submitted_payload(new)
    return [
        new.id.hex,
        new.tenant_id,
        new.actor_id,
        new.idempotency_key,
        new.plan_name,
        new.plan_hash,
        status.value,
        new.mode.value,
        new.sla_class.value,
        new.approval_level,
        new.priority,
        new.estimated_duration_s,
        trace_id,
        new.record_only,
        new.record_only_reason,
        str(new.rerun_of) if new.rerun_of else None,
        new.job_name,
        new.job_version,
        new.min_lease_s,
        list(new.action_classes),  # sorted, once each (policies.plan_timeout)
        [
            [index, name, kind, asset_id, keys[index] if keys else None]
            for index, name, kind, asset_id in new.step_targets
        ],
        payload,
        None if new.plan_timeout is None else new.plan_timeout.plan_s,
        None if new.plan_timeout is None else new.plan_timeout.steps_s,
        None if new.first_locks is None else list(new.first_locks),
    ]


def _created(new: NewExecution, trace_id: str, status: Status, created_at: datetime) -> Execution:
    """The row just inserted, from what was sent (the columns' defaults for the rest: a
    new execution has not run, retried, renewed or been cancelled); the same record as
    ``Execution.from_row`` of it (tests/test_bulk_submit.py compares them)."""
    return Execution(
        id=new.id,
        tenant_id=new.tenant_id,
        actor_id=new.actor_id,
        idempotency_key=new.idempotency_key,
        retry_of=None,
        plan_name=new.plan_name,
        plan_snapshot=new.plan_snapshot,
        plan_hash=new.plan_hash,
        status=status,
        status_reason=None,
        mode=new.mode,
        sla_class=new.sla_class,
        approval_level=new.approval_level,
        priority=new.priority,
        estimated_duration_s=new.estimated_duration_s,
        trace_id=trace_id,
        worker_id=None,
        timeout_at=None,
        cancelled_by=None,
        cancelled_at=None,
        cancel_requested_by=None,
        cancel_requested_at=None,
        record_only=new.record_only,
        created_at=created_at,
        started_at=None,
        finished_at=None,
        rerun_of=new.rerun_of,
        record_only_reason=new.record_only_reason,
        job_name=new.job_name,
        job_version=new.job_version,
    )


def _snapshot_json(new: NewExecution) -> str:
    if new.plan_snapshot_json is not None:
        return new.plan_snapshot_json
    return json.dumps(new.plan_snapshot, separators=(",", ":"))


def _created_as(new: NewExecution) -> Status:
    """What one submission ends with before it commits: approved by policy and for the
    workers is queued at once (one row version, not an insert and an update)."""
    initial = status_machine.initial_status(new.approval_level)
    return Status.QUEUED if new.enqueue and initial is Status.APPROVED else initial
