"""Many submissions of one tenant stored at once: the same rows, events, approval requests
and queue entries as ``executions.submit`` writes one by one, with set-based statements in
one transaction (see sql/bulk.sql). All or nothing: a crash stores none of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from opsconductor.db import approval_requests, batching, executions, queries
from opsconductor.db.connection import Conn, Database
from opsconductor.db.executions import NewExecution, Submitted
from opsconductor.errors import StaleStatus
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
        cur = await conn.execute(
            Q["insert_executions"],
            {
                "items": batching.as_json(
                    [
                        {**executions.columns(new), "ord": i, "id": str(ids[i])}
                        for i, new in enumerate(news)
                    ]
                )
            },
        )
        order = {execution_id: i for i, execution_id in enumerate(ids)}
        made = {order[row["id"]]: Execution.from_row(row) for row in await cur.fetchall()}
        if made:
            await _after_insert(conn, news, made)
        for i, execution in made.items():
            answers[i] = Submitted(execution, created=True)
    for i, new in enumerate(news):
        if i not in answers:  # after the commit: the holder of its key is visible now
            answers[i] = await executions.submit(db, new)
    return [answers[i] for i in range(len(news))]


async def _after_insert(
    conn: Conn, news: Sequence[NewExecution], made: dict[int, Execution]
) -> None:
    await conn.execute(
        Q["insert_submitted_events"],
        {
            "items": batching.as_json(
                [
                    {
                        "ord": i,
                        "execution_id": str(e.id),
                        "tenant_id": e.tenant_id,
                        "to_status": e.status.value,
                        "actor_id": news[i].actor_id,
                        "payload": {
                            "plan_hash": news[i].plan_hash,
                            "idempotency_key": news[i].idempotency_key,
                            **_reason(news[i]),
                        },
                    }
                    for i, e in sorted(made.items())
                ]
            )
        },
    )
    await conn.execute(
        Q["insert_pending_steps"],
        {
            "items": batching.as_json(
                [
                    {
                        "execution_id": str(e.id),
                        "tenant_id": e.tenant_id,
                        "step_index": index,
                        "step_name": name,
                        "step_type": kind,
                        "asset_id": asset_id,
                        "step_key": news[i].step_keys[index] if news[i].step_keys else None,
                    }
                    for i, e in made.items()
                    for index, name, kind, asset_id in news[i].step_targets
                ]
            )
        },
    )
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
    queued = sorted(i for i, e in made.items() if news[i].enqueue and e.status is Status.APPROVED)
    if not queued:
        return
    moves = [
        {
            **executions.transition_item(
                made[i].id, Status.APPROVED, Status.QUEUED, actor_id=news[i].actor_id
            ),
            "ord": n,
        }
        for n, i in enumerate(queued)
    ]
    rows = await batching.run(conn, executions.Q["transition"], moves)
    if any(row["id"] is None for row in rows):  # nobody else can see these rows yet
        raise StaleStatus("a new execution changed status while it was being submitted")
    await conn.execute(
        Q["enqueue"],
        {
            "items": batching.as_json(
                [
                    {
                        "ord": i,
                        "execution_id": str(made[i].id),
                        "action_classes": sorted(set(news[i].action_classes)),
                        "min_lease_s": news[i].min_lease_s,
                    }
                    for i in queued
                ]
            )
        },
    )
    for i in queued:
        made[i] = replace(made[i], status=Status.QUEUED)


def _reason(new: NewExecution) -> dict[str, str]:
    """As the single submission's ``submitted`` event says it (db/executions.py)."""
    return {"record_only_reason": new.record_only_reason} if new.record_only_reason else {}
