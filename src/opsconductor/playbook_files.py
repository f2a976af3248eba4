"""The files an ``ansible`` step runs: its playbook and the folder it sits in.

A playbook pulls in files beside it (``include_tasks``, ``templates/``, ``files/``,
``roles/``, ``group_vars/``), so what is approved is the playbook's *project*: every regular
file under the playbook's folder when that folder is not the tenant's files root itself,
else the playbook alone (the root also holds fetched copies and keys; they are no part of
a playbook). Their SHA-256 go into the plan hash at submission, keyed by their path
relative to the files root (``pushed_files`` carries them, as it does pushed sources), and
at run time exactly those files are copied into a private folder (``stage``), each copy
checked against its approved digest, and the controller runs from that copy: a file added,
changed or removed after approval refuses the step before anything runs, and a file
changed during the run cannot reach it. Files outside the folder (an absolute
``include_tasks``) are not covered, and the sandbox does not show them either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from opsconductor.connectors.outcome import StepInputError
from opsconductor.plan import AnsibleStep

#: turns a path relative to the tenant's files root (and the field, for errors) into the
#: real file, confined to that root (``connectors.tenant_files.resolver``)
Resolver = Callable[[str, str], Path]

#: A project is a playbook's folder, not a file store: bounded so a submission stays cheap.
MAX_FILES = 500
MAX_BYTES = 50 * 1024 * 1024
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def project(step: AnsibleStep, index: int, resolve: Resolver) -> dict[str, Path]:
    """Relative path -> real file of every file the step's playbook run may read, each
    confined to the tenant's files root (a link out of it is refused). Raises
    ``StepInputError`` naming ``steps[i].playbook``."""
    where = f"steps[{index}].playbook"
    playbook = resolve(step.playbook, where)
    if not playbook.is_file():
        raise StepInputError(f"{where}: {step.playbook} is not a file")
    found = {step.playbook: playbook}
    folder = PurePosixPath(step.playbook).parent
    if str(folder) == ".":
        return found
    base = resolve(str(folder), where)
    total = 0
    for current, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".git"))
        for name in sorted(files):
            relative = str(folder / Path(current, name).relative_to(base))
            path = resolve(relative, where)  # a link pointing out of the root is refused
            if not path.is_file():
                continue
            total += path.stat().st_size
            found[relative] = path
            if len(found) > MAX_FILES or total > MAX_BYTES:
                raise StepInputError(
                    f"{where}: the playbook's folder {folder} holds more than {MAX_FILES} files "
                    f"or {MAX_BYTES // (1024 * 1024)} MiB; keep a playbook in a folder of its own"
                )
    return found


def digest(step: AnsibleStep, index: int, resolve: Resolver) -> dict[str, str]:
    """At submission: relative path -> SHA-256 of every file of the project."""
    files = project(step, index, resolve)
    return {relative: _sha256(path) for relative, path in sorted(files.items())}


def verify(
    step: AnsibleStep, index: int, approved: Mapping[str, str] | None, resolve: Resolver
) -> str | None:
    """Before the step runs: None if the project holds exactly the approved files, else
    why not."""
    where = f"steps[{index}].playbook"
    if approved is None:
        return f"{where}: no approved digest of the playbook is recorded; submit the plan again"
    try:
        now = digest(step, index, resolve)
    except StepInputError as exc:
        return str(exc)
    except OSError as exc:
        return f"{where}: cannot read the playbook's files: {exc.strerror or exc}"
    return difference(where, approved, now)


def difference(where: str, approved: Mapping[str, str], now: Mapping[str, str]) -> str | None:
    for relative in sorted(set(approved) | set(now)):
        before, after = approved.get(relative), now.get(relative)
        if before is None:
            return f"{where}: {relative} was not part of the approved plan"
        if after is None:
            return f"{where}: {relative} is no longer there (it was approved)"
        if before != after:
            return (
                f"{where}: {relative} changed after approval "
                f"(approved sha256 {before[:12]}…, now {after[:12]}…)"
            )
    return None


def stage(
    step: AnsibleStep, index: int, approved: Mapping[str, str], resolve: Resolver, into: Path
) -> Path:
    """Copy the approved files into ``into`` (same relative paths) and check every copy
    against its digest; return the playbook's copy. What runs is what was approved."""
    where = f"steps[{index}].playbook"
    files = project(step, index, resolve)
    for relative in sorted(set(files) - set(approved)):
        raise StepInputError(f"{where}: {relative} was not part of the approved plan")
    for relative in sorted(set(approved) - set(files)):
        raise StepInputError(f"{where}: {relative} is no longer there (it was approved)")
    for relative, path in files.items():
        copy = into / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        got = _sha256(copy)
        if got != approved[relative]:
            raise StepInputError(
                f"{where}: {relative} changed after approval "
                f"(approved sha256 {approved[relative][:12]}…, now {got[:12]}…)"
            )
    return into / step.playbook
