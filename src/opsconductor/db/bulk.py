"""Many submissions of one tenant stored at once: the same rows, events, approval requests
and queue entries as ``executions.submit`` writes one by one, with set-based statements in
one transaction (see sql/bulk.sql). All or nothing: a crash stores none of them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opsconductor import status_machine
from opsconductor.db import approval_requests, batching, executions, queries
from opsconductor.db.connection import Conn, Database
from opsconductor.db.executions import NewExecution, Submitted
from opsconductor.ids import uuid4_hexes
from opsconductor.records import Execution
from opsconductor.status_machine import Status

Q = queries.load("bulk")


async def submit_many(db: Database, news: Sequence[NewExecution]) -> list[Submitted]:
    """Store every new execution; answers in the order given. A key already held (a
    duplicate, or a failed run under the same key) takes the one-by-one path afterwards,
    which answers it exactly as a single submission would."""
    ids = [new.id for new in news]
    answers: dict[int, Submitted] = {}
    async with db.transaction() as conn:
        items = []
        statuses = [_created_as(new) for new in news]
        trace_ids = uuid4_hexes(len(news))
        for i, new in enumerate(news):
            item = executions.columns(new, trace_ids[i])
            del item["plan_snapshot"]  # sent apart, as the JSON text it already is
            item.update(status=statuses[i].value, ord=i, id=str(ids[i]))
            items.append(item)
        snapshots = "[" + ",".join(map(_snapshot_json, news)) + "]"
        cur = await conn.execute(
            Q["insert_executions"], {"items": batching.as_json(items), "snapshots": snapshots}
        )
        order = {execution_id: i for i, execution_id in enumerate(ids)}
        made: dict[int, Execution] = {}
        for row in await cur.fetchall():
            i = order[row["id"]]
            made[i] = _created(news[i], items[i], statuses[i], row["created_at"])
        if made:
            # Their events need no per-event row lock for id order (migration 0031): no
            # other transaction can see these executions before this one commits.
            await conn.execute(Q["events_of_new_executions"])
            await _after_insert(conn, news, made, items)
        for i, execution in made.items():
            answers[i] = Submitted(execution, created=True)
    for i, new in enumerate(news):
        if i not in answers:  # after the commit: the holder of its key is visible now
            answers[i] = await executions.submit(db, new)
    return [answers[i] for i in range(len(news))]


def _created(
    new: NewExecution, item: dict[str, Any], status: Status, created_at: datetime
) -> Execution:
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
        trace_id=item["trace_id"],
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


async def _after_insert(
    conn: Conn,
    news: Sequence[NewExecution],
    made: dict[int, Execution],
    inserted: Sequence[dict[str, Any]],
) -> None:
    """``inserted``: the items of ``insert_executions`` (their id as text already)."""
    items = []
    for i in sorted(made):
        new, e, keys = news[i], made[i], news[i].step_keys
        payload = {"plan_hash": new.plan_hash, "idempotency_key": new.idempotency_key}
        if new.record_only_reason:  # as the single submission's ``submitted`` event says it
            payload["record_only_reason"] = new.record_only_reason
        items.append(
            {
                "ord": i,
                "execution_id": inserted[i]["id"],
                "tenant_id": e.tenant_id,
                "actor_id": new.actor_id,
                "initial": status_machine.initial_status(new.approval_level).value,
                "queued": e.status is Status.QUEUED,
                "payload": payload,
                "steps": [
                    {
                        "step_index": index,
                        "step_name": name,
                        "step_type": kind,
                        "asset_id": asset_id,
                        "step_key": keys[index] if keys else None,
                    }
                    for index, name, kind, asset_id in new.step_targets
                ],
                "priority": e.priority,
                "sla_class": e.sla_class.value,
                "action_classes": sorted(set(new.action_classes)),
                "min_lease_s": new.min_lease_s,
            }
        )
    await conn.execute(Q["after_insert"], {"items": batching.as_json(items)})
    for i, e in sorted(made.items()):
        if news[i].approval_level >= 1:
            await approval_requests.request(
                conn,
                execution_id=e.id,
                tenant_id=e.tenant_id,
                level=news[i].approval_level,
                plan_hash=news[i].plan_hash,
                requested_by=news[i].actor_id,
            )
