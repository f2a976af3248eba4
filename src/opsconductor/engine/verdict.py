"""How a run ends: the final status and the reason a person reads. Pure."""

from __future__ import annotations

from opsconductor.db.queue import Lease
from opsconductor.engine.state import Run
from opsconductor.status_machine import Status


def after_abort(run: Run, index: int) -> tuple[Status, str]:
    step = run.plan.steps[index].name
    if run.abort_kind == "cancelled":
        return Status.CANCELLED, f"cancelled by {run.cancelled_by} during step {step!r}"
    if run.abort_kind == "timeout":
        return Status.TIMEOUT, f"execution timeout reached during step {step!r}"
    return Status.FAILED, f"{run.step_failure or run.abort_kind} during step {step!r}"


def after_step(run: Run, index: int, bad: dict[str, str]) -> tuple[Status, str]:
    """A step ended with ``bad`` targets (asset id -> status)."""
    step = run.plan.steps[index]
    where = ", ".join(f"{asset} ({status})" for asset, status in sorted(bad.items()))
    if run.deadline_hit:
        return Status.TIMEOUT, f"execution timeout reached during step {step.name!r}"
    if run.step_failure is not None:
        return Status.FAILED, f"step {step.name!r}: {run.step_failure}"
    if len(bad) < len(run.results[index]):
        return Status.PARTIAL, f"step {step.name!r} failed on {where}"
    if all(status == "timeout" for status in bad.values()):
        return Status.TIMEOUT, f"step {step.name!r} timed out on {where}"
    return Status.FAILED, f"step {step.name!r} failed on {where}"


def missing_assets(missing: set[str]) -> str:
    return f"assets no longer in the inventory: {', '.join(sorted(missing))}"


def recovery(lease: Lease) -> str | None:
    """What happened to a resumed execution, e.g. ``interrupted by worker crash, resumed
    after 1.3 s``; None when this claim is not a resume after an interruption."""
    if lease.recovered_after_s is None or lease.interruption is None:
        return None
    if lease.interruptions <= 1:
        return f"interrupted by {lease.interruption}, resumed after {lease.recovered_after_s:.1f} s"
    return (
        f"interrupted {lease.interruptions} times (last by {lease.interruption}), "
        f"resumed after {lease.recovery_s:.1f} s in all"
    )


def with_recovery(reason: str | None, note: str | None) -> str | None:
    """The verdict's reason, followed by what recovery did (the end may be a success)."""
    if note is None:
        return reason
    return note if reason is None else f"{reason} ({note})"
