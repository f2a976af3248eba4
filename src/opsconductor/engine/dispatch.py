"""One attempt of one step on one target: validate steps are checked here, every other
type goes to its connector with the step's secrets filled in and the run's abort as its
cancel."""

from __future__ import annotations

from typing import Any

from opsconductor import policies, pushed_files, validation
from opsconductor.connectors.outcome import RECORD_ONLY
from opsconductor.db import steps
from opsconductor.db.connection import Database
from opsconductor.engine.live import LiveOutput
from opsconductor.engine.state import Attempt, Run
from opsconductor.inventory import Asset
from opsconductor.output import cap_text
from opsconductor.plan import CommandStep, ScriptStep, ValidateStep, fill_secrets
from opsconductor.records import parse
from opsconductor.status_machine import StepStatus
from opsconductor.templating import uses_step_results


def target_env(run: Run, index: int, asset: Asset) -> dict[str, str]:
    """What a local command may want to know about where and why it runs."""
    return {
        "OPSC_EXECUTION_ID": str(run.id),
        "OPSC_STEP_INDEX": str(index),
        "OPSC_STEP_NAME": run.plan.steps[index].name,
        "OPSC_ASSET_ID": asset.asset_id,
        "OPSC_ASSET_HOSTNAME": asset.hostname,
        "OPSC_ASSET_ADDRESS": asset.address,
        "OPSC_ASSET_ENVIRONMENT": asset.environment,
    }


async def execute(
    db: Database, run: Run, index: int, step: Any, asset: Asset, attempt: int = 1
) -> Attempt:
    if isinstance(step, ValidateStep):
        if run.connectors.record_only:  # nothing ran, so there is nothing to check
            return Attempt(StepStatus.SKIPPED, output=RECORD_ONLY)
        return await _validate(db, run, step, asset)
    limit = policies.step_timeout(step, run.execution.sla_class, run.matrix)
    budget = min(limit, run.remaining())
    results = None
    if uses_step_results(step.model_dump_json()):
        async with db.connection() as conn:
            found = await steps.target_results(conn, run.id, asset.asset_id, index)
        results = {name: result.template_fields() for name, result in found.items()}
    filled = fill_secrets(step, run.secrets.get(index, {}))
    env, live = None, None
    if isinstance(filled, CommandStep | ScriptStep):
        env = {**target_env(run, index, asset), **{k: str(v) for k, v in filled.env.items()}}
        live = LiveOutput.of(db, run, index, asset, attempt)
    try:
        outcome = await run.connectors.execute(
            filled,
            asset,
            where=f"steps[{index}]",
            timeout_s=budget,
            cancel=run.abort,
            env=env,
            results=results,
            approved_files=run.files.get(index, {}) if pushed_files.is_push(step) else None,
            on_output=None if live is None else live.line,
        )
    finally:
        if live is not None:  # its last lines go out before the step_finished event
            await live.close()
    if outcome.status == "cancelled":
        return Attempt(
            run.abort_status, outcome.exit_code, outcome.output, outcome.stderr, run.abort_message
        )
    if outcome.status == "timeout" and budget < limit:
        run.deadline_hit = True
    status = parse(StepStatus, outcome.status, "connector outcome status")
    return Attempt(status, outcome.exit_code, outcome.output, outcome.stderr, outcome.error)


async def _validate(db: Database, run: Run, step: ValidateStep, asset: Asset) -> Attempt:
    checked = next(i for i, s in enumerate(run.plan.steps) if s.name == step.step)
    async with db.connection() as conn:
        rows = await steps.latest_results(conn, run.id, checked)
    row = rows.get(asset.asset_id)
    if row is None:
        return Attempt(StepStatus.FAILED, error=f"step {step.step!r} has no result on this target")
    seen = validation.Observed(row.status, row.exit_code, row.output)
    problems = validation.failures(step.expect, seen)
    if problems:
        return Attempt(
            StepStatus.FAILED,
            output=cap_text("\n".join(problems)),
            error=cap_text("; ".join(problems)),
        )
    return Attempt(StepStatus.COMPLETED, output="all expectations hold")
