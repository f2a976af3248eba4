"""Storage of step attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from opsconductor import masking
from opsconductor.db import batching, queries
from opsconductor.db.batching import Executor
from opsconductor.db.connection import Conn
from opsconductor.errors import Conflict
from opsconductor.output import cap_text
from opsconductor.records import StepAttempt, StepResult
from opsconductor.status_machine import StepStatus

Q = queries.load("steps")


async def insert_pending(
    conn: Conn,
    execution_id: uuid.UUID,
    tenant_id: str,
    step_targets: list[tuple[int, str, str, str]],
    step_keys: Sequence[str] = (),
) -> None:
    """The first attempt of every (step, target), pending; ``step_keys`` by step index
    (routing.step_key) file each row under its step's duration history."""
    columns = list(zip(*step_targets, strict=True)) if step_targets else [(), (), (), ()]
    await conn.execute(
        Q["insert_pending_steps"],
        {
            "execution_id": execution_id,
            "tenant_id": tenant_id,
            "step_keys": list(step_keys),
            "step_index": list(columns[0]),
            "step_name": list(columns[1]),
            "step_type": list(columns[2]),
            "asset_id": list(columns[3]),
        },
    )


async def record_denied(
    conn: Conn,
    *,
    execution_id: uuid.UUID,
    tenant_id: str,
    step_index: int,
    step_name: str,
    step_type: str,
    asset_id: str,
    error: str,
    masker: masking.Masker = masking.DEFAULT,
) -> None:
    await conn.execute(
        Q["record_denied"],
        {
            "execution_id": execution_id,
            "tenant_id": tenant_id,
            "step_index": step_index,
            "step_name": step_name,
            "step_type": step_type,
            "asset_id": asset_id,
            "error": cap_text(masker.mask(error)),
        },
    )


async def start_attempt_logged(
    conn: Executor,
    *,
    execution_id: uuid.UUID,
    tenant_id: str,
    step_index: int,
    step_name: str,
    step_type: str,
    asset_id: str,
    attempt: int,
    retry_count: int,
    actor_id: str,
    payload: dict[str, Any],
    masker: masking.Masker = masking.DEFAULT,
) -> int:
    """Start an attempt, with its ``step_started`` event (payload masked here, at the sink)
    in one statement, shared with other executions' starts when ``conn`` is the batcher."""
    rows = await batching.run(
        conn,
        Q["start_attempt_logged"],
        [
            {
                "execution_id": execution_id,
                "tenant_id": tenant_id,
                "step_index": step_index,
                "step_name": step_name,
                "step_type": step_type,
                "asset_id": asset_id,
                "attempt": attempt,
                "retry_count": retry_count,
                "actor_id": actor_id,
                "payload": masker.mask_data(payload),
            }
        ],
    )
    row = rows[0] if rows else None
    if row is None:
        # A typed refusal, not a crash: the caller's execution fails with the reason
        # instead of being retried into the dead-letter queue.
        raise Conflict(f"step {step_index} on {asset_id}: attempt {attempt} was already started")
    return int(row["id"])


def finish_item(
    attempt_id: int,
    *,
    execution_id: uuid.UUID,
    tenant_id: str,
    status: StepStatus,
    exit_code: int | None,
    output: str,
    stderr: str,
    error: str | None,
    actor_id: str,
    payload: dict[str, Any],
    masker: masking.Masker = masking.DEFAULT,
) -> dict[str, Any]:
    """One item of ``finish_attempt_logged``: everything masked here, at the sink (a run's
    last one goes with its end instead, in ``executions.transition``'s ``closing``)."""
    return {
        "id": attempt_id,
        "status": status.value,
        "exit_code": exit_code,
        "output": cap_text(masker.mask_output(output)),
        "stderr": cap_text(masker.mask_output(stderr)),
        "error": None if error is None else cap_text(masker.mask(error)),
        "execution_id": execution_id,
        "tenant_id": tenant_id,
        "actor_id": actor_id,
        "payload": masker.mask_data(payload),
    }


async def finish_attempt_logged(conn: Executor, item: dict[str, Any]) -> None:
    """Store an attempt's result (a ``finish_item``) with its ``step_finished`` event in one
    statement, shared with other executions' ends when ``conn`` is the batcher."""
    await batching.run(conn, Q["finish_attempt_logged"], [item])


async def skip_pending(conn: Conn, execution_id: uuid.UUID) -> None:
    await conn.execute(Q["skip_pending"], {"execution_id": execution_id})


async def skip_pending_targets(
    conn: Conn, execution_id: uuid.UUID, asset_ids: list[str], reason: str
) -> None:
    await conn.execute(
        Q["skip_pending_targets"],
        {"execution_id": execution_id, "asset_ids": asset_ids, "reason": reason},
    )


async def list_for(conn: Conn, execution_id: uuid.UUID) -> list[StepAttempt]:
    """Every attempt, by step, target and attempt number."""
    cur = await conn.execute(Q["list_steps"], {"execution_id": execution_id})
    return [StepAttempt.from_row(row) for row in await cur.fetchall()]


async def latest_results(
    conn: Conn, execution_id: uuid.UUID, step_index: int
) -> dict[str, StepResult]:
    """Latest attempt of one step on each of its targets, by asset id."""
    cur = await conn.execute(
        Q["latest_results"], {"execution_id": execution_id, "step_index": step_index}
    )
    found = [StepResult.from_row(row) for row in await cur.fetchall()]
    return {result.target_asset_id: result for result in found}


async def observed_p95(
    conn: Conn,
    tenant_id: str,
    step_types: list[str],
    *,
    window: int = 1000,
    min_samples: int = 5,
) -> dict[str, float]:
    """p95 seconds per step type from this tenant's newest ``window`` finished attempts;
    types with fewer than ``min_samples`` attempts are absent (routing then uses defaults)."""
    cur = await conn.execute(
        Q["observed_p95"],
        {
            "tenant_id": tenant_id,
            "step_types": sorted(set(step_types)),
            "window": window,
            "min_samples": min_samples,
        },
    )
    return {row["step_type"]: float(row["p95"]) for row in await cur.fetchall()}


async def observed_p95_by_key(
    conn: Conn,
    tenant_id: str,
    step_keys: list[str],
    *,
    window: int = 200,
    min_samples: int = 3,
) -> dict[str, float]:
    """p95 seconds per step key (the same step, in any plan) from its newest ``window``
    finished attempts; keys with fewer than ``min_samples`` are absent."""
    if not step_keys:
        return {}
    cur = await conn.execute(
        Q["observed_p95_by_key"],
        {
            "tenant_id": tenant_id,
            "step_keys": sorted(set(step_keys)),
            "window": window,
            "min_samples": min_samples,
        },
    )
    return {row["step_key"]: float(row["p95"]) for row in await cur.fetchall()}


async def close_attempts(
    conn: Conn, attempt_ids: list[int], status: StepStatus, error: str
) -> None:
    """End attempts that were left ``running`` by a worker that died."""
    await conn.execute(
        Q["close_attempts"], {"ids": attempt_ids, "status": status.value, "error": error}
    )


async def target_results(
    conn: Conn, execution_id: uuid.UUID, asset_id: str, before: int
) -> dict[str, StepResult]:
    """Latest result of every earlier step on one target, by step name (for templates)."""
    cur = await conn.execute(
        Q["target_results"],
        {"execution_id": execution_id, "asset_id": asset_id, "before": before},
    )
    found = [StepResult.from_row(row) for row in await cur.fetchall()]
    return {result.step_name: result for result in found}
