"""An ``ansible`` step in the engine: one playbook run serves all the step's targets, yet
every target keeps its own attempts, as for any step. Per target first (resume point,
``when``, RBAC), then one run for the targets still to go; each target's attempt is that
host's result. A retry runs the playbook again on the targets that failed only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opsconductor import policies
from opsconductor.db.connection import Database
from opsconductor.engine import dispatch
from opsconductor.engine.attempts import Attempts
from opsconductor.engine.live import LiveOutput
from opsconductor.engine.state import DONE, Attempt, Run
from opsconductor.inventory import Asset
from opsconductor.params import secret_params
from opsconductor.plan import AnsibleStep, fill_secrets
from opsconductor.records import parse
from opsconductor.status_machine import StepStatus
from opsconductor.template_check import shown_params

Denied = Callable[[Run, int, Asset], Awaitable[bool]]
Pause = Callable[[Run, float], Awaitable[None]]


async def run_step(
    db: Database, run: Run, index: int, attempts: Attempts, denied: Denied, pause: Pause
) -> dict[str, str]:
    """Outcome by asset id, in target order."""
    step = run.plan.steps[index]
    assert isinstance(step, AnsibleStep)
    targets = run.step_targets(index)
    outcomes: dict[str, str] = {}
    pending: list[Asset] = []
    numbers: dict[str, int] = {}
    lasts: dict[str, int] = {}
    for asset in targets:
        point = run.point(index, asset.asset_id)
        if point.outcome is not None:  # finished before a crash: never run it again
            outcomes[asset.asset_id] = point.outcome
            continue
        instead = await dispatch.unless(db, run, index, step, asset)
        if instead is not None:
            attempt_id = await attempts.start(run, index, asset, point.next_attempt)
            await attempts.finish(run, index, asset, point.next_attempt, attempt_id, instead, True)
            outcomes[asset.asset_id] = instead.status
            continue
        if await denied(run, index, asset):
            outcomes[asset.asset_id] = StepStatus.FAILED
            continue
        pending.append(asset)
        numbers[asset.asset_id] = point.next_attempt
        # attempts cut short by a dead worker do not spend the step's retries
        lasts[asset.asset_id] = step.retries + 1 + point.interrupted
    while pending:
        if run.remaining() <= 0 or run.abort.is_set():
            stopped = StepStatus.TIMEOUT if run.remaining() <= 0 else run.abort_status
            run.deadline_hit = run.deadline_hit or stopped is StepStatus.TIMEOUT
            outcomes.update((a.asset_id, stopped) for a in pending)
            break
        ids = {
            a.asset_id: await attempts.start(run, index, a, numbers[a.asset_id]) for a in pending
        }
        results = await execute(db, run, index, step, pending, numbers)
        again: list[Asset] = []
        for asset in pending:
            n, result = numbers[asset.asset_id], results[asset.asset_id]
            last = lasts[asset.asset_id]
            final = result.status in DONE or n >= last or run.deadline_hit or run.abort.is_set()
            await attempts.finish(run, index, asset, n, ids[asset.asset_id], result, final)
            if final:
                outcomes[asset.asset_id] = result.status
            else:
                numbers[asset.asset_id] = n + 1
                again.append(asset)
        if again:
            attempt = min(numbers[a.asset_id] for a in again)
            await pause(run, min(policies.backoff_s(attempt - 2), run.remaining()))
        pending = again
    return {a.asset_id: str(outcomes[a.asset_id]) for a in targets}


async def execute(
    db: Database,
    run: Run,
    index: int,
    step: AnsibleStep,
    assets: list[Asset],
    numbers: dict[str, int],
) -> dict[str, Attempt]:
    """One playbook run on ``assets``; an attempt result per asset id. Each target's
    lines stream as its own ``step_output`` events; lines about every host go to all."""
    limit = policies.step_timeout(step, run.execution.sla_class, run.matrix)
    budget = min(limit, run.remaining())
    resolved = run.secrets.get(index, {})
    filled = fill_secrets(step, resolved)
    shown = shown_params(run.plan, dispatch.bound_params(run), secrets=resolved)
    plain = _plain_params(run)
    lives = {a.asset_id: LiveOutput.of(db, run, index, a, numbers[a.asset_id]) for a in assets}

    def line(host: str | None, stream: str, text: str) -> None:
        for name, live in lives.items():
            if host is None or host == name:
                live.line(stream, text)

    try:
        outcomes = await run.connectors.ansible(
            filled,
            assets,
            index=index,
            timeout_s=budget,
            cancel=run.abort,
            params=shown,
            plain_params=plain,
            approved_files=run.files.get(index),
            on_output=line,
        )
    finally:
        for live in lives.values():  # last lines out before the step_finished events
            await live.close()
    found: dict[str, Attempt] = {}
    for asset in assets:
        outcome = outcomes[asset.asset_id]
        if outcome.status == "cancelled":
            found[asset.asset_id] = Attempt(
                run.abort_status, outcome.exit_code, outcome.output, "", run.abort_message
            )
            continue
        if outcome.status == "timeout" and budget < limit:
            run.deadline_hit = True
        status = parse(StepStatus, outcome.status, "connector outcome status")
        found[asset.asset_id] = Attempt(
            status, outcome.exit_code, outcome.output, outcome.stderr, outcome.error
        )
    return found


def _plain_params(run: Run) -> dict[str, Any]:
    """The bound parameters but secret references: those reach a playbook only where its
    step's ``extra_vars`` put them (``{{ params.db_password }}``)."""
    secret = set(secret_params(run.plan.params))
    return {k: v for k, v in dispatch.bound_params(run).items() if k not in secret}
