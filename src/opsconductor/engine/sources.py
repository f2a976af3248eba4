"""Before a push: the pushed sources (files, playbooks) are read again and must still hold
the bytes that were approved."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from opsconductor import playbook_files, pushed_files
from opsconductor.connectors import tenant_files
from opsconductor.db import executions
from opsconductor.db.connection import Database
from opsconductor.engine import dispatch
from opsconductor.engine.state import Run
from opsconductor.plan import AnsibleStep


async def changed(db: Database, files_root: Path, run: Run, index: int) -> str | None:
    """None if every source of the step holds the approved bytes, else why not (then
    nothing is copied: the step fails on every target), recorded as an event."""
    step = run.plan.steps[index]
    if not (pushed_files.is_push(step) or isinstance(step, AnsibleStep)):
        return None
    to_run = run.unfinished(index)
    if not to_run:
        return None
    approved = run.files.get(index)
    resolve = tenant_files.resolver(run.tenant_id, files_root)
    if isinstance(step, AnsibleStep):
        check = functools.partial(playbook_files.verify, step, index, approved, resolve)
    else:
        check = functools.partial(
            pushed_files.verify, step, index, to_run, approved, resolve, dispatch.shown(run)
        )
    problem = await asyncio.to_thread(check)
    if problem is not None:
        async with db.connection() as conn:
            await executions.append_event(
                conn,
                run.execution,
                "pushed_file_refused",
                run.actor_id,
                {"step_index": index, "step": step.name, "reason": problem},
                masker=run.masker,
            )
    return problem
