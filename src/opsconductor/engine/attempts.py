"""Step attempts as records: started, finished, refused by RBAC, failed without running.
Each write also tells the observer (progress displays) and goes out masked."""

from __future__ import annotations

import structlog

from opsconductor import rbac
from opsconductor.db import executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine.state import Attempt, Observer, Run, StepEvent
from opsconductor.inventory import Asset
from opsconductor.status_machine import StepStatus

log = structlog.get_logger("opsconductor.engine")


def _where(index: int, step: str, asset: Asset, attempt: int) -> dict[str, object]:
    """What every attempt event names: which step, on which target, which try."""
    return {"step_index": index, "step": step, "target": asset.asset_id, "attempt": attempt}


class Attempts:
    def __init__(self, db: Database, observer: Observer) -> None:
        self.db = db
        self.observer = observer

    async def start(self, run: Run, index: int, asset: Asset, attempt: int) -> int:
        step = run.plan.steps[index]
        attempt_id = await steps.start_attempt_logged(
            self.db.batch,
            execution_id=run.id,
            tenant_id=run.tenant_id,
            step_index=index,
            step_name=step.name,
            step_type=step.type,
            asset_id=asset.asset_id,
            attempt=attempt,
            retry_count=attempt - 1,
            actor_id=run.actor_id,
            payload=_where(index, step.name, asset, attempt),
            masker=run.masker,
        )
        self.observer(StepEvent(index, step.name, asset.asset_id, StepStatus.RUNNING, attempt))
        return attempt_id

    async def finish(
        self,
        run: Run,
        index: int,
        asset: Asset,
        attempt: int,
        attempt_id: int,
        result: Attempt,
        final: bool,
    ) -> None:
        step = run.plan.steps[index]
        item = steps.finish_item(
            attempt_id,
            execution_id=run.id,
            tenant_id=run.tenant_id,
            status=result.status,
            exit_code=result.exit_code,
            output=result.output,
            stderr=result.stderr,
            error=result.error,
            actor_id=run.actor_id,
            payload={
                **_where(index, step.name, asset, attempt),
                "status": result.status,
                "exit_code": result.exit_code,
                "error": result.error,
            },
            masker=run.masker,
        )
        if final and run.ending.last_target():  # goes with the end (engine/ending.py)
            run.ending.attempt = item
        else:
            await steps.finish_attempt_logged(self.db.batch, item)
        # Logged raw: the masking processor is the sink that masks it (see logs.py).
        log.info(
            "step_finished",
            execution_id=str(run.id),
            step=step.name,
            target=asset.asset_id,
            attempt=attempt,
            status=result.status,
            exit_code=result.exit_code,
            error=result.error,
            # Masked before the cut: a cut through a secret leaves pieces no masker knows.
            stdout_tail=run.masker.mask_output(result.output)[-500:],
            stderr_tail=run.masker.mask_output(result.stderr)[-500:],
        )
        # A skipped step's reason (``when`` false, record-only) is its output.
        shown = result.output if result.status is StepStatus.SKIPPED else None
        reason = result.error if result.error is not None else shown
        detail = None if reason is None else run.masker.mask(reason)
        self.observer(
            StepEvent(index, step.name, asset.asset_id, result.status, attempt, detail, final)
        )

    async def fail_step(self, run: Run, index: int, message: str) -> dict[str, str]:
        """Record the step as failed on every target without running anything (a target
        that finished before a crash keeps its outcome)."""
        run.step_failure = message
        failed = StepStatus.FAILED
        outcomes: dict[str, str] = {}
        for asset in run.step_targets(index):
            point = run.point(index, asset.asset_id)
            if point.outcome is not None:
                outcomes[asset.asset_id] = point.outcome
                continue
            attempt = point.next_attempt
            attempt_id = await self.start(run, index, asset, attempt)
            await self.finish(
                run, index, asset, attempt, attempt_id, Attempt(failed, error=message), True
            )
            outcomes[asset.asset_id] = failed
        return outcomes

    async def denied(
        self, run: Run, index: int, asset: Asset, check: rbac.StepCheck, why: str
    ) -> None:
        """RBAC refused the step on this target: a failed attempt and an ``rbac_violation``
        event (who, what, where), nothing run."""
        step = run.plan.steps[index]
        error = f"denied by RBAC: {why}"
        async with self.db.transaction() as conn:
            await steps.record_denied(
                conn,
                execution_id=run.id,
                tenant_id=run.tenant_id,
                step_index=index,
                step_name=step.name,
                step_type=step.type,
                asset_id=asset.asset_id,
                error=error,
                masker=run.masker,
            )
            await executions.append_event(
                conn,
                run.execution,
                "rbac_violation",
                run.actor_id,
                {
                    "actor": check.actor_id,
                    "step_index": index,
                    "step": step.name,
                    "action_class": step.action_class,
                    "target": asset.asset_id,
                    "environment": asset.environment,
                    "reason": why,
                },
            )
        self.observer(
            StepEvent(index, step.name, asset.asset_id, StepStatus.FAILED, 1, error, True)
        )
