"""One attempt of one step on one target: validate steps are checked here, every other
type goes to its connector with the step's secrets filled in and the run's abort as its
cancel."""

from __future__ import annotations

import asyncio
from typing import Any

from opsconductor import params as plan_params
from opsconductor import policies, pushed_files, validation
from opsconductor.connectors.outcome import RECORD_ONLY, StepInputError
from opsconductor.db import steps
from opsconductor.db.connection import Database
from opsconductor.engine.live import LiveOutput
from opsconductor.engine.state import Attempt, Run
from opsconductor.inventory import Asset
from opsconductor.output import cap_text
from opsconductor.plan import CommandStep, ScriptStep, ValidateStep, fill_secrets
from opsconductor.records import parse
from opsconductor.status_machine import StepStatus
from opsconductor.template_check import shown_params
from opsconductor.templating import asset_context, condition, render, uses_step_results


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


def bound_params(run: Run) -> dict[str, plan_params.Value]:
    """The parameter values the execution was submitted (and hashed, approved) with."""
    return dict(run.execution.plan_snapshot.get("params") or {})


def shown(run: Run) -> dict[str, Any]:
    """Parameters as templates read them where no secret is fetched (pushed sources)."""
    return shown_params(run.plan, bound_params(run), secrets=None)


def params_env(run: Run) -> dict[str, str]:
    """``OPSC_PARAM_<NAME>`` for every parameter but secret references (a secret reaches a
    command only where the plan puts it: ``env: {PW: "{{ params.db_password }}"}``)."""
    secret = set(plan_params.secret_params(run.plan.params))
    return {
        plan_params.env_name(name): _env_text(value)
        for name, value in bound_params(run).items()
        if name not in secret
    }


def _env_text(value: plan_params.Value) -> str:
    if isinstance(value, bool):  # before int: True is an int too
        return "true" if value else "false"
    return "" if value is None else str(value)


async def _results(
    db: Database, run: Run, index: int, asset: Asset, text: str
) -> dict[str, dict[str, Any]] | None:
    """Earlier results on this target, loaded only when ``text`` refers to ``steps.``."""
    if not uses_step_results(text):
        return None
    async with db.connection() as conn:
        found = await steps.target_results(conn, run.id, asset.asset_id, index)
    return {name: result.template_fields() for name, result in found.items()}


async def unless(db: Database, run: Run, index: int, step: Any, asset: Asset) -> Attempt | None:
    """A step's ``when`` on one target: None to run it, else the attempt to record instead:
    ``skipped`` with the reason, or ``failed`` when the condition cannot be evaluated.
    Secret-ref parameters read as a stand-in here (params.secret_stand_in)."""
    if step.when is None:
        return None
    results = await _results(db, run, index, asset, step.when)
    context = asset_context(asset, results, shown_params(run.plan, bound_params(run), secrets=None))
    where = f"steps[{index}].when"
    try:  # tenant input: evaluated (budgeted) off the event loop
        holds = await asyncio.to_thread(condition, step.when, context, where)
    except StepInputError as exc:
        return Attempt(StepStatus.FAILED, error=str(exc))
    if holds:
        return None
    return Attempt(StepStatus.SKIPPED, output=cap_text(f"skipped: when: {step.when} is false"))


async def execute(
    db: Database, run: Run, index: int, step: Any, asset: Asset, attempt: int = 1
) -> Attempt:
    if isinstance(step, ValidateStep):
        if run.connectors.record_only:  # nothing ran, so there is nothing to check
            return Attempt(StepStatus.SKIPPED, output=RECORD_ONLY)
        return await _validate(db, run, step, asset)
    limit = policies.step_timeout(step, run.execution.sla_class, run.matrix)
    budget = min(limit, run.remaining())
    results = await _results(db, run, index, asset, step.model_dump_json(exclude={"when"}))
    resolved = run.secrets.get(index, {})
    filled = fill_secrets(step, resolved)
    shown = shown_params(run.plan, bound_params(run), secrets=resolved)
    env, live = None, None
    if isinstance(filled, CommandStep | ScriptStep):
        context = asset_context(asset, results, shown)
        try:  # env values are templates (a secret's value never is: SecretText)
            own = {
                k: render(v, context, f"steps[{index}].env.{k}") if isinstance(v, str) else str(v)
                for k, v in filled.env.items()
            }
        except StepInputError as exc:
            return Attempt(StepStatus.FAILED, error=str(exc))
        env = {**target_env(run, index, asset), **params_env(run), **own}
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
            params=shown,
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
