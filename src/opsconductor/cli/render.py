"""How the CLI shows things: status colours, tables, progress bars, event lines. What it
shows are the API's published shapes (``api.models``): parsed from the server's answers
(remote), or built from the database's records (local), so both look the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from opsconductor import failures
from opsconductor.api import models
from opsconductor.cli.runtime import out

if TYPE_CHECKING:  # only live displays (run, watch) draw a bar
    from rich.progress import Progress, TaskID

STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "failed": "red",
    "timeout": "red",
    "partial": "yellow",
    "cancelled": "magenta",
    "skipped": "dim",
    "pending": "dim",
}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


#: After the status of a record-only execution, wherever one is shown: a dark launch
#: ends ``completed`` without having touched anything, and must not pass for a change.
RECORD_ONLY = "(record-only)"


def execution_status(found: models.Execution) -> str:
    """The execution's status, styled, marked when it was record-only."""
    if found.record_only:
        return f"{styled(found.status)} [bold yellow]{escape(RECORD_ONLY)}[/bold yellow]"
    return styled(found.status)


def _same(text: str) -> str:
    return text


def execution(
    header: models.Execution,
    step_rows: list[models.Step],
    approvals: list[models.Approval],
    events: list[models.Event] | None,
    mask: Callable[[str], str] = _same,
    cancel_requested: tuple[str, datetime] | None = None,
) -> None:
    """One execution: header, step attempts, approval history and (optionally) events.
    ``cancel_requested``: who asked a running execution to stop, and when (local only)."""
    reason = f" — {escape(mask(header.status_reason))}" if header.status_reason else ""
    if header.record_only:  # escaped: rich took the bracketed words for a style and dropped them
        reason += escape(" [record-only: nothing was touched]")
    if header.record_only_reason:  # staged enablement chose record-only, and says why
        reason += escape(f" ({header.record_only_reason})")
    out.print(
        f"[bold]{escape(header.plan_name)}[/bold]  {header.id}  {execution_status(header)}{reason}",
        highlight=False,
    )
    if header.rerun_of is not None:
        out.print(f"re-runs the failed targets of {header.rerun_of}", highlight=False)
    if header.job_name is not None:
        out.print(escape(f"job {header.job_name} version {header.job_version}"), highlight=False)
    out.print(
        f"actor {header.actor_id} · {header.sla_class}/{header.mode} · "
        f"plan hash {header.plan_hash[:16]}… · created {header.created_at:%Y-%m-%d %H:%M:%S}",
        highlight=False,
    )
    if header.cancelled_by and header.cancelled_at:
        out.print(
            f"cancelled by {header.cancelled_by} at {header.cancelled_at:%H:%M:%S}",
            highlight=False,
        )
    elif cancel_requested is not None:
        who, at = cancel_requested
        out.print(f"cancel requested by {who} at {at:%H:%M:%S}", highlight=False)
    out.print(steps_table(step_rows, mask))
    print_failures(step_rows, mask)
    if approvals and events is not None:
        out.print(approvals_table(approvals, mask))
    if events is not None:
        out.print(events_table(events, mask))


def steps_table(step_rows: list[models.Step], mask: Callable[[str], str] = _same) -> Table:
    table = Table("#", "step", "target", "try", "status", "exit", "time", "output / error")
    for row in step_rows:
        took = ""
        if row.started_at and row.finished_at:
            took = f"{(row.finished_at - row.started_at).total_seconds():.2f}s"
        text = (row.error or row.output or row.stderr or "").strip()
        if row.error and row.stderr.strip():  # "exit code 3" alone says nothing of why
            text = f"{row.error.strip()}: {row.stderr.strip().splitlines()[-1].strip()}"
        table.add_row(
            str(row.step_index),
            row.step_name,
            row.target_asset_id,
            str(row.attempt),
            styled(row.status),
            "" if row.exit_code is None else str(row.exit_code),
            took,
            escape(mask(text)[-200:]),
        )
    return table


def print_failures(
    step_rows: list[models.Step], mask: Callable[[str], str] = _same, limit: int = 5
) -> None:
    """Failed targets grouped by step and cause, with the last lines of stderr."""
    groups = failures.group(step_rows, mask)
    if not groups:
        return
    count = sum(g.count for g in groups)
    out.print(f"[red]failures[/red] ({count} failed target{'s' if count != 1 else ''}):")
    for found in groups:
        out.print("  " + escape(failures.line(found, limit)), highlight=False)
        if len(found.tail) > 1:  # the last line is in the message already
            for text in found.tail:
                out.print(f"      | {escape(text)}", highlight=False)


def approvals_table(approvals: list[models.Approval], mask: Callable[[str], str] = _same) -> Table:
    table = Table("level", "step", "state", "plan hash", "requested by", "decisions", "expires")
    for a in approvals:
        votes = "; ".join(
            f"{d.actor_id} {d.decision}" + (f" ({d.comment})" if d.comment else "")
            for d in a.decisions
        )
        table.add_row(
            str(a.level),
            "plan" if a.step_index is None else str(a.step_index),
            styled(a.state),
            a.plan_hash[:16] + "…",
            a.requested_by,
            mask(votes),
            f"{a.expires_at:%H:%M:%S}",
        )
    return table


def events_table(events: list[models.Event], mask: Callable[[str], str] = _same) -> Table:
    table = Table("id", "at", "event", "change", "actor", "details")
    for ev in events:
        change = f"{ev.from_status or ''} → {ev.to_status}" if ev.to_status else ""
        table.add_row(
            str(ev.id),
            f"{ev.created_at:%H:%M:%S.%f}"[:-3],
            ev.event_type,
            change,
            ev.actor_id,
            mask(json.dumps(ev.payload, default=str))[:120],
        )
    return table


def event_line(ev: models.Event) -> str:
    at = f"{ev.created_at:%H:%M:%S}"
    payload = ev.payload or {}
    if ev.event_type == "status_changed":
        return f"{at} {ev.from_status} → {styled(ev.to_status or '')} by {ev.actor_id}"
    if ev.event_type in ("step_started", "step_finished"):
        state = payload.get("status", "running")
        extra = f": {payload['error']}" if payload.get("error") else ""
        return (
            f"{at} {styled(state)} {payload.get('step')} @ {payload.get('target')} "
            f"(attempt {payload.get('attempt')}){extra}"
        )
    if ev.event_type == "step_output":
        return output_lines(at, payload)
    return f"{at} {ev.event_type} by {ev.actor_id}"


def output_lines(at: str, payload: dict[str, Any]) -> str:
    """A ``step_output`` event: its lines (masked at the source), each named by its target
    and stream; printed as text, never as markup."""
    where = f"{payload.get('step')} @ {payload.get('target')}"
    mark = " !" if payload.get("stream") == "stderr" else " |"
    shown = [f"{at} {where}{mark} {escape(str(line))}" for line in payload.get("lines", [])]
    if payload.get("skipped"):
        shown.insert(0, f"{at} {where}{mark} …[{payload['skipped']} lines skipped: too fast]")
    if payload.get("truncated"):
        shown.append(f"{at} {where}   …[live output truncated; the result keeps head and tail]")
    return "\n".join(shown)


def progress_bar() -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[eta]}"),
        console=out,
        transient=True,
    )


def show_progress(bar: Progress, task: TaskID, shown: models.Progress) -> None:
    left = shown.running + shown.pending
    # No basis (a step never ran before): say so rather than guess.
    eta = "" if not left else "ETA unknown" if shown.eta_s is None else f"ETA {shown.eta_s:.0f}s"
    bar.update(
        task,
        completed=shown.percent,
        eta=eta,
        description=f"{shown.done} done, {shown.failed} failed, "
        f"{shown.running} running, {shown.pending} pending",
    )


def table(headers: list[str], rows: list[list[str]]) -> None:
    shown = Table(*headers)
    for r in rows:
        shown.add_row(*r)
    out.print(shown)
