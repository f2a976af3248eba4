"""Running plans: validate, run (here, now, with progress) and submit (to the workers).
Locally as the database's administrator, or through the REST API after ``opsc login``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from opsconductor import status_machine
from opsconductor.api import models
from opsconductor.cli import render
from opsconductor.cli.runtime import Local, Remote, Session, err, fail, out, run, session
from opsconductor.cli.watching import execution, follow, follow_stream, show_one
from opsconductor.config import Settings
from opsconductor.errors import BadInput, OpsError
from opsconductor.services import executions
from opsconductor.status_machine import Status, StepStatus

# Every command module is imported at start-up (typer registers them all): what only
# running a plan needs (the plan models, the engine, the progress bar, the approval gate)
# is imported where it is used, so `opsc list` does not pay for it.
if TYPE_CHECKING:
    from opsconductor.engine import StepEvent
    from opsconductor.plan import Plan

app = typer.Typer()

PlanFile = Annotated[Path, typer.Argument(help="Plan file, YAML or JSON")]
IdempotencyKey = Annotated[
    str | None, typer.Option("--idempotency-key", "-k", help="Deduplicate on this key")
]
YAML = {"Content-Type": "application/yaml"}
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", "-e", help="A parameter value, name=value (repeatable)"),
]
ValuesFile = Annotated[
    Path | None,
    typer.Option("--values", help="Parameter values from a YAML or JSON file (a mapping)"),
]


def _plan_or_exit(path: Path) -> Plan:
    from opsconductor.plan import load_plan_file

    try:
        return load_plan_file(path)
    except OpsError as exc:
        raise fail(str(exc), exc.exit_code) from None


def _plan_bytes(path: Path) -> bytes:
    return path.read_bytes()  # already read and validated once by _plan_or_exit


def _params_or_exit(plan: Plan, sets: list[str] | None, values: Path | None) -> dict[str, Any]:
    """``--values FILE`` (typed, as written), then ``--set name=value`` over it (text,
    converted by the declared type); checked against the plan's declarations here, so a
    wrong value is exit 2 naming the parameter before anything is sent."""
    from opsconductor import params as plan_params
    from opsconductor import safe_parse

    given: dict[str, Any] = {}
    try:
        if values is not None:
            try:
                text = values.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise OpsError(f"--values {values}: cannot read: {exc}") from None
            data = safe_parse.load_yaml(text, str(values))
            if data is not None and not isinstance(data, dict):
                raise BadInput(f"--values {values}: must be a mapping of parameter names")
            given.update(data or {})
        given.update(plan_params.parse_sets(plan.params, sets or []))
        plan_params.bind(plan.params, given)
    except OpsError as exc:
        raise fail(str(exc), 2 if isinstance(exc, BadInput) else exc.exit_code) from None
    return given


def _body(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """What the API takes: the plan's bytes as YAML, or with parameter values an envelope
    ``{"plan": text, "params": {...}}`` as JSON."""
    if not params:
        return {"content": _plan_bytes(path), "headers": dict(YAML)}
    return {"json_body": {"plan": path.read_text(encoding="utf-8"), "params": params}}


@app.command()
def validate(plan_file: PlanFile, set_: Sets = None, values: ValuesFile = None) -> None:
    """Check a plan without running anything: parameters, targets, every template and
    ``when`` on every target; print the hash and the SLA class and budget it would get."""
    plan = _plan_or_exit(plan_file)
    given = _params_or_exit(plan, set_, values)

    async def work(settings: Settings) -> models.Validation:
        async with session(settings) as s:
            if isinstance(s, Remote):
                _, found = await s.api.call(
                    "POST", "/executions/validate", **_body(plan_file, given)
                )
                return models.Validation.model_validate(found)
            checked = await executions.validate(s.db, s.caller, plan, given)
            return models.Validation.of(plan, checked)

    checked = run(work)
    out.print(f"[green]valid[/green]: {escape(plan.name)} ({len(plan.steps)} steps)")
    for name, value in checked.params.items():
        out.print(escape(f"  param {name} = {value!r}"), highlight=False)
    for step in checked.steps:
        kind = f"{step.type}/{step.action_class}"
        if step.action_class_inferred:  # not in the plan: say so, it decides RBAC
            kind += ", inferred"
        # escaped: rich would take "[command/read]" for markup and print nothing
        out.print(escape(f"  {step.name} [{kind}] -> {', '.join(step.targets)}"))
        if step.estimated_s is not None:
            out.print(
                escape(f"    ~{step.estimated_s:.2g} s per target: {step.estimate_source}"),
                highlight=False,
            )
        for pushed in step.files:
            out.print(escape(f"    pushes {pushed.src} (sha256 {pushed.sha256})"))
    if checked.batches is not None:
        out.print(
            escape(
                f"rollout: serial {checked.serial!r}, max_fail_percentage "
                f"{checked.max_fail_percentage or 0:g}: {len(checked.batches)} batches, each "
                "running every step before the next starts"
            ),
            highlight=False,
        )
        for number, batch in enumerate(checked.batches, 1):
            out.print(escape(f"  batch {number}: {', '.join(batch)}"), highlight=False)
    if checked.sla_class is not None and checked.estimated_s is not None:
        out.print(
            escape(
                f"route: {checked.sla_class} ({checked.mode}): estimated "
                f"{checked.estimated_s:.1f} s (steps x targets, one after another; fast below "
                f"10 s, long above 30 s)"
            ),
            highlight=False,
        )
    if checked.budget_s is not None:
        out.print(
            escape(f"budget: {checked.budget_s:g} s, from {checked.budget_why}"), highlight=False
        )
    out.print(f"plan hash: {checked.plan_hash}")


async def _submit(
    s: Session, plan: Plan, path: Path, key: str | None, **kw: Any
) -> tuple[models.Execution, bool]:
    """Submit; returns the execution and whether it is new (not a duplicate)."""
    if isinstance(s, Remote):
        body = _body(path, kw.get("params") or {})
        headers = body.pop("headers", {})
        if key:
            headers["Idempotency-Key"] = key
        params = {"record_only": "true"} if kw.get("record_only") else {}
        if kw.get("enqueue"):
            params["queue"] = "true"  # opsc submit: the workers run it, however fast
        status, found = await s.api.call(
            "POST", "/executions", headers=headers, params=params, **body
        )
        return models.Execution.model_validate(found), status != 200
    submitted = await executions.submit(s.db, s.caller, plan, idempotency_key=key, **kw)
    return models.Execution.from_record(submitted.execution), submitted.created


@app.command("run")
def run_(
    plan_file: PlanFile,
    idempotency_key: IdempotencyKey = None,
    record_only: Annotated[
        bool, typer.Option("--record-only", help="Dark launch: resolve and record, touch nothing")
    ] = False,
    set_: Sets = None,
    values: ValuesFile = None,
) -> None:
    """Validate, submit and run a plan now, showing progress; exit 0 if it completed.
    Locally it runs in this process; after ``opsc login`` the server runs it."""
    plan = _plan_or_exit(plan_file)
    given = _params_or_exit(plan, set_, values)

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            kw: dict[str, Any] = {"record_only": record_only, "params": given}
            if isinstance(s, Local):
                kw["enqueue"] = False
                from opsconductor.cli import host

                await host.bootstrap_local_exec(s)
            found, created = await _submit(s, plan, plan_file, idempotency_key, **kw)
            key = str(found.id)
            if not created:
                out.print(
                    f"already submitted within the deduplication window: execution "
                    f"{key} ({found.status}). Pass --idempotency-key to run it again."
                )
            return await see_through(s, found, f"execution {key} ({plan.name})")

    status = run(work)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)


async def see_through(s: Session, found: models.Execution, starting: str | None = None) -> str:
    """After a submission (``opsc run``, ``opsc rerun``): wait for its approval, run it here
    (locally) or follow it (after a login) to its end, show it; its final status."""
    key = str(found.id)
    if found.status == Status.PENDING_APPROVAL:
        found = await _wait_for_approval(s, found)
    if isinstance(s, Remote):
        if not status_machine.is_terminal(Status(found.status)):
            await follow_stream(s, key)
    else:
        if found.status == Status.APPROVED:
            # New, or left unstarted by an earlier run that died: the engine's
            # compare-and-set makes sure only one process runs it.
            if starting:
                out.print(starting)
            await _run_with_progress(s, key)
        current = await execution(s, key)
        if not status_machine.is_terminal(Status(current.status)):
            # Another process runs it (the server that took the approval, say):
            # follow it to its end rather than report it half-way.
            await follow(s, key)
    await show_one(s, key, events=False)
    return (await execution(s, key)).status


PlanFiles = Annotated[
    list[Path],
    typer.Argument(help="Plan files (YAML or JSON), or directories of them: many go as one"),
]


def _plan_files(paths: list[Path]) -> list[Path]:
    """Files as given; a directory gives its *.yaml, *.yml and *.json files, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(
                p for p in path.iterdir() if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
            )
            if not inside:
                raise fail(f"{path}: no .yaml, .yml or .json files in this directory", 2)
            found.extend(inside)
        else:
            found.append(path)
    return found


@app.command("submit")
def submit_(
    plan_files: PlanFiles,
    idempotency_key: IdempotencyKey = None,
    set_: Sets = None,
    values: ValuesFile = None,
) -> None:
    """Validate and queue plans for the workers; print each execution id at once. Many
    files (or a directory) are checked first and stored together: all of them, or none."""
    files = _plan_files(plan_files)
    if len(files) > 1:
        if idempotency_key:
            raise fail("--idempotency-key: names one plan; give one file with it", 2)
        if set_ or values:
            raise fail("--set/--values: name one plan's parameters; give one file with them", 2)
        _submit_many(files)
        return
    plan_file = files[0]
    plan = _plan_or_exit(plan_file)
    given = _params_or_exit(plan, set_, values)

    async def work(settings: Settings) -> tuple[models.Execution, bool]:
        async with session(settings) as s:
            return await _submit(
                s,
                plan,
                plan_file,
                idempotency_key,
                enqueue=True,
                params=given,
            )

    found, created = run(work)
    if created and found.status == Status.PENDING_APPROVAL:
        hash_hint = f" --hash {found.plan_hash}" if found.approval_level >= 2 else ""
        err.print(
            f"waits for approval (level {found.approval_level}); once approved it is "
            f"queued. Another person approves it with: opsc approve {found.id}{hash_hint}",
            highlight=False,
        )
    elif created:
        err.print(
            f"queued: {plan.name} ({found.sla_class}, est. "
            f"{found.estimated_duration_s:.1f}s); follow it with opsc watch {found.id}",
            highlight=False,
        )
    else:
        err.print(
            f"already submitted within the deduplication window ({found.status}); "
            "pass --idempotency-key to submit it again",
            highlight=False,
        )
    out.print(str(found.id), highlight=False)


def _submit_many(files: list[Path]) -> None:
    from opsconductor.plan import load_plan_file

    plans = []
    for path in files:  # every file is checked before anything is sent
        try:
            plans.append(load_plan_file(path))
        except OpsError as exc:
            raise fail(f"{path}: {exc}", exc.exit_code) from None

    async def work(settings: Settings) -> list[models.BulkItem]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                texts = [path.read_text() for path in files]
                try:
                    _, found = await s.api.call(
                        "POST", "/executions/bulk", json_body={"plans": texts}
                    )
                except OpsError as exc:  # the server names plans[i]: name the file too
                    raise type(exc)(_name_files(str(exc), files)) from None
                return models.BulkSubmitted.model_validate(found).items
            try:
                done = await executions.submit_many(s.db, s.caller, plans)
            except OpsError as exc:
                raise type(exc)(_name_files(str(exc), files)) from None
            return [
                models.BulkItem(
                    execution=models.Execution.from_record(d.execution), created=d.created
                )
                for d in done
            ]

    items = run(work)
    rows = [
        [
            str(item.execution.id),
            str(path),
            item.execution.status if item.created else f"{item.execution.status} (duplicate)",
        ]
        for path, item in zip(files, items, strict=True)
    ]
    render.table(["execution", "file", "status"], rows)
    created = sum(item.created for item in items)
    err.print(
        f"{created} submitted, {len(items) - created} already submitted within the "
        "deduplication window; follow them with opsc list or opsc watch ID",
        highlight=False,
    )


def _name_files(message: str, files: list[Path]) -> str:
    """``plans[3].steps[0]...`` -> ``plans[3] (web.yaml).steps[0]...``."""
    for index, path in enumerate(files):
        message = message.replace(f"plans[{index}]", f"plans[{index}] ({path})")
    return message


async def _wait_for_approval(s: Session, found: models.Execution) -> models.Execution:
    """Block (durably: the request survives us) until someone decides or it expires."""
    hash_hint = f" --hash {found.plan_hash}" if found.approval_level >= 2 else ""
    out.print(
        f"execution {found.id} waits for approval (level "
        f"{found.approval_level}). Another person approves it with:\n"
        f"  opsc approve {found.id}{hash_hint}",
        highlight=False,
    )
    with out.status("waiting for approval (Ctrl-C stops waiting; the request stays open)"):
        while found.status == Status.PENDING_APPROVAL:
            await asyncio.sleep(0.5)
            if isinstance(s, Local):
                from opsconductor.approvals import gate

                await gate.expire_overdue(s.db)
            found = await execution(s, str(found.id))
    out.print(f"approval outcome: {render.styled(found.status)}")
    return found


async def _run_with_progress(s: Local, execution_id: str) -> None:
    seen = await executions.view(s.db, s.caller, execution_id)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    )
    task = bar.add_task("running", total=len(seen.steps))

    def observe(event: StepEvent) -> None:
        label = f"{event.step_name} @ {event.asset_id}"
        if event.status is StepStatus.RUNNING:
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            bar.update(task, description=f"running {label}{retry}")
            return
        detail = f": {event.detail}" if event.detail else ""
        bar.console.print(f"  {render.styled(event.status)} {label}{detail}", highlight=False)
        if event.final:
            bar.advance(task)

    with bar:
        await executions.run_here(s.db, s.caller, seen.execution, observer=observe)
