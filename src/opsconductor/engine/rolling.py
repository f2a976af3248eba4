"""Rolling updates (plan ``serial:``): batch by batch, every step on the batch's hosts
before the next batch starts; ``max_fail_percentage`` checked after each batch.

Within a batch a host whose step failed runs none of its later steps, while the batch's
healthy hosts go on (breadth-first plans stop every host at a failing step instead). A
resumed run walks the same batches: finished (step, target) points return their recorded
outcome without running again (``Run.point``), so it picks up at the right batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from opsconductor import rollout
from opsconductor.db import steps
from opsconductor.db.connection import Database
from opsconductor.engine import verdict
from opsconductor.engine.state import DONE, Run
from opsconductor.status_machine import Status

StepRunner = Callable[[Run, int], Awaitable[dict[str, str]]]
StepGate = Callable[[Run, int], Awaitable[None]]


def plan_batches(run: Run) -> list[list[str]]:
    assert run.plan.serial is not None
    hosts = rollout.hosts_of([[a.asset_id for a in targets] for targets in run.targets])
    return rollout.batches(run.plan.serial, hosts)


async def run_batches(
    db: Database, run: Run, run_step: StepRunner, approve: StepGate
) -> tuple[Status, str | None]:
    batches = plan_batches(run)
    failed_all: dict[str, str] = {}
    try:
        for number, batch in enumerate(batches, 1):
            failed: dict[str, str] = {}  # host -> what failed there
            for index, step in enumerate(run.plan.steps):
                run.only = frozenset(batch) - failed.keys()
                if not run.step_targets(index):
                    continue  # this step has no (healthy) host in this batch
                if run.abort.is_set() and run.unfinished(index):
                    return verdict.after_abort(run, index)
                await approve(run, index)
                outcomes = await run_step(run, index)
                run.results.setdefault(index, {}).update(outcomes)
                for asset, status in outcomes.items():
                    if status not in DONE:
                        failed.setdefault(asset, f"step {step.name!r} {status}")
                if run.abort.is_set():
                    return verdict.after_abort(run, index)
                if run.deadline_hit:
                    return Status.TIMEOUT, f"execution timeout reached during step {step.name!r}"
            run.only = None
            outcome = rollout.BatchOutcome(
                number, len(batches), tuple(batch), tuple(sorted(failed))
            )
            if failed:
                await _skip(db, run, sorted(failed), "not run: an earlier step failed on this host")
            if rollout.exceeds(len(failed), len(batch), run.plan.fail_limit):
                rest = [host for later in batches[number:] for host in later]
                if rest:
                    await _skip(db, run, rest, rollout.not_run_reason(outcome))
                return Status.FAILED, rollout.stop_reason(outcome, run.plan.fail_limit)
            failed_all.update(failed)
    finally:
        run.only = None
    return _verdict(failed_all, sum(len(b) for b in batches))


def _verdict(failed: dict[str, str], hosts: int) -> tuple[Status, str | None]:
    """Every batch ran: completed, or failures each batch tolerated."""
    if not failed:
        return Status.COMPLETED, None
    where = ", ".join(f"{host} ({why})" for host, why in sorted(failed.items()))
    status = Status.FAILED if len(failed) == hosts else Status.PARTIAL
    return status, f"rollout finished, {len(failed)} of {hosts} hosts failed: {where}"


async def _skip(db: Database, run: Run, asset_ids: list[str], reason: str) -> None:
    async with db.connection() as conn:
        await steps.skip_pending_targets(conn, run.id, asset_ids, reason)
