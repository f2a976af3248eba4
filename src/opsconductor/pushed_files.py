"""The bytes a plan pushes from this machine (``file`` steps with ``direction: push``).

A plan holds commands, scripts, queries and request bodies inline, so the plan hash covers
them; a pushed file is the one thing a step takes from outside the plan at run time. So
its SHA-256 is taken when the plan is submitted and goes into the hash (and the snapshot,
``files``), and before a push runs the source is read again and must still hold those
bytes. Whoever approved the hash approved the bytes; a file edited afterwards is never
deployed under that approval.

Sources are keyed by their *rendered* path (``src`` may use asset fields), so one step
may push a different file to each target; a path that depends on an earlier step's result
cannot be known at submission and is refused then.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from opsconductor import playbook_files
from opsconductor.connectors.outcome import StepInputError
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.plan import (
    AnsibleStep,
    CommandStep,
    FileStep,
    HttpStep,
    NoopStep,
    Plan,
    ScriptStep,
    SqlStep,
    ValidateStep,
)
from opsconductor.templating import asset_context, render

#: step index -> rendered source path -> SHA-256 (hex) of its bytes
Digests = dict[int, dict[str, str]]
#: turns a rendered ``src`` (and the field it came from, for errors) into the file to read:
#: ``connectors.tenant_files.resolver`` confines it to the tenant's files root
Resolver = Callable[[str, str], Path]


def _unconfined(src: str, field: str) -> Path:
    return Path(src)


_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes. ``path`` is already resolved (and, where sources are
    confined to a root, already checked): this only reads."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def short(sha256: str) -> str:
    return f"{sha256[:12]}…"


def changed_message(where: str, src: str, approved: str, now: str) -> str:
    return (
        f"{where}: {src} changed after approval "
        f"(approved sha256 {short(approved)}, now {short(now)})"
    )


def is_push(step: object) -> TypeGuard[FileStep]:
    return isinstance(step, FileStep) and step.direction == "push"


def rendered_sources(
    step: FileStep,
    index: int,
    assets: Iterable[Asset],
    params: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Rendered ``src`` for each target, by asset id; raises ``StepInputError``. Only asset
    fields and the plan's parameters are offered: no earlier result exists when a plan is
    submitted."""
    return {
        asset.asset_id: render(step.src, asset_context(asset, None, params), f"steps[{index}].src")
        for asset in assets
    }


#: Step classes that never take bytes from here, by exact class: no ``isinstance`` through
#: pydantic's ABC metaclass for most steps (a bulk asks this twice per plan).
_NEVER_PUSH = frozenset({CommandStep, ScriptStep, HttpStep, SqlStep, NoopStep, ValidateStep})


def pushes(plan: Plan) -> bool:
    """The plan takes bytes from this machine: a push, or a playbook (``playbook_files``)."""
    for step in plan.steps:
        if type(step) not in _NEVER_PUSH and (is_push(step) or isinstance(step, AnsibleStep)):
            return True
    return False


async def take_async(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    resolve: Resolver = _unconfined,
    params: Mapping[str, Any] | None = None,
) -> Digests:
    """``take`` off the event loop (files may be large); no thread for plans without one."""
    if not pushes(plan):
        return {}
    return await asyncio.to_thread(take, plan, targets, resolve, params)


def take(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    resolve: Resolver = _unconfined,
    params: Mapping[str, Any] | None = None,
) -> Digests:
    """Digest every source the plan pushes (at submission); ``BadInput`` if one cannot be
    named or read now, since then nobody could review what it would push."""
    digests: Digests = {}
    for index, (step, step_targets) in enumerate(zip(plan.steps, targets, strict=True)):
        if isinstance(step, AnsibleStep):
            digests[index] = _playbook(step, index, resolve)
            continue
        if not is_push(step):
            continue
        where = f"steps[{index}].src"
        try:
            sources = sorted(set(rendered_sources(step, index, step_targets, params).values()))
        except StepInputError as exc:
            raise BadInput(
                f"{exc} (a pushed file's path must be known when the plan is submitted: it "
                "may use asset fields, not earlier steps' results)"
            ) from None
        files: dict[str, str] = {}
        for src in sources:
            try:
                files[src] = sha256_file(resolve(src, where))
            except StepInputError as exc:
                raise BadInput(str(exc)) from None
            except OSError as exc:
                raise BadInput(
                    f"{where}: cannot read {src}: {exc.strerror or exc} (a pushed file must "
                    "exist when the plan is submitted: its bytes are part of what is approved)"
                ) from None
        digests[index] = files
    return digests


def _playbook(step: AnsibleStep, index: int, resolve: Resolver) -> dict[str, str]:
    try:
        return playbook_files.digest(step, index, resolve)
    except StepInputError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(
            f"steps[{index}].playbook: cannot read {step.playbook}: {exc.strerror or exc} (a "
            "playbook must exist when the plan is submitted: its bytes are part of what is "
            "approved)"
        ) from None


def to_document(digests: Digests) -> dict[str, dict[str, str]]:
    """JSON form for the snapshot and the hash (object keys are strings)."""
    return {str(index): dict(sorted(files.items())) for index, files in sorted(digests.items())}


def from_snapshot(snapshot: Mapping[str, Any]) -> Digests:
    return {int(index): dict(files) for index, files in (snapshot.get("files") or {}).items()}


def differences(approved: Digests, now: Digests, plan: Plan | None = None) -> list[str]:
    """What changed between two sets of digests, as readable sentences (``plan`` names
    the field: a push's ``src``, a playbook's ``playbook``)."""
    found = []
    for index in sorted(set(approved) | set(now)):
        before, after = approved.get(index, {}), now.get(index, {})
        ansible = plan is not None and isinstance(plan.steps[index], AnsibleStep)
        where = f"steps[{index}].{'playbook' if ansible else 'src'}"
        for src in sorted(set(before) | set(after)):
            if src not in before:
                found.append(f"{where}: {src} was not part of the approved plan")
            elif src not in after:
                found.append(f"{where}: {src} is no longer pushed")
            elif before[src] != after[src]:
                found.append(changed_message(where, src, before[src], after[src]))
    return found


def verify(
    step: FileStep,
    index: int,
    assets: Iterable[Asset],
    approved: Mapping[str, str] | None,
    resolve: Resolver = _unconfined,
    params: Mapping[str, Any] | None = None,
) -> str | None:
    """Before a push runs: None if every source still holds the approved bytes, else why
    not (the step must then fail without copying anything)."""
    where = f"steps[{index}].src"
    if approved is None:
        return (
            f"{where}: no approved digest of the pushed file is recorded (submitted before "
            "file digests were); submit the plan again"
        )
    try:
        sources = sorted(set(rendered_sources(step, index, assets, params).values()))
    except StepInputError as exc:
        return str(exc)
    for src in sources:
        expected = approved.get(src)
        if expected is None:
            return f"{where}: {src} was not part of the approved plan"
        try:
            now = sha256_file(resolve(src, where))
        except StepInputError as exc:
            return str(exc)
        except OSError as exc:
            why = exc.strerror or exc
            return f"{where}: cannot read {src}: {why} (approved sha256 {short(expected)})"
        if now != expected:
            return changed_message(where, src, expected, now)
    return None
