"""A tenant's files root: where ``file`` steps read their sources and write their fetches.

A ``file`` step's ``src`` (push) and ``dest`` (fetch) are paths on the worker, read and
written by the worker itself: left free, a plan could copy the secret store's key or any
file of the control plane out to a host of its own, or overwrite one. So both are confined
to ``<files root>/<tenant>`` (``$OPSC_HOME/files/<tenant>`` unless ``OPSC_FILES_ROOT``
says otherwise): a relative path is taken inside it, an absolute one must point into it,
``..`` is refused outright, and symbolic links are resolved before the check, so a link in
the root that points elsewhere is refused too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from opsconductor.connectors.outcome import StepInputError
from opsconductor.errors import BadInput

HINT = "put files there with 'opsc files put FILE' and name them relative to it"


def _confine(root: Path, value: str, field: str) -> Path:
    """``value`` as a real path inside ``root``, or StepInputError naming ``field``."""
    if "\x00" in value:
        raise StepInputError(f"{field}: must not contain NUL characters")
    if ".." in PurePosixPath(value).parts:
        raise StepInputError(f"{field}: '..' is not allowed in a path ({value!r})")
    base = Path(os.path.realpath(root))
    candidate = Path(value) if value.startswith("/") else root / value
    real = Path(os.path.realpath(candidate))
    if real == base or not real.is_relative_to(base):
        shown = f" (a link to {real})" if real != Path(os.path.normpath(candidate)) else ""
        raise StepInputError(
            f"{field}: {value!r}{shown} is outside this tenant's files root {root}; {HINT}"
        )
    return real


def source(root: Path, src: str, field: str) -> Path:
    """The file a push reads: ``src`` confined to the tenant's files root."""
    return _confine(root, src, field)


def destination(root: Path, dest: str, field: str) -> Path:
    """Where a fetch writes: ``dest`` confined to the tenant's files root; its folders are
    created by the copy."""
    path = _confine(root, dest, field)
    if path.is_dir():
        raise StepInputError(f"{field}: {dest!r} is a directory; name the file to write")
    return path


def put(root: Path, file: Path, name: str | None = None) -> Path:
    """Copy ``file`` into the tenant's files root as ``name`` (default: its own name), for
    ``file`` steps to push; returns where it landed. The local CLI's ``opsc files put``."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        target = _confine(root, name or file.name, "NAME")
    except StepInputError as exc:
        raise BadInput(str(exc)) from None
    if not file.is_file():
        raise BadInput(f"{file}: not a readable file")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(file, target)
    return target


def listing(root: Path) -> list[tuple[str, int]]:
    """The files of a tenant's root, relative to it, with their sizes."""
    if not root.is_dir():
        return []
    return sorted(
        (str(path.relative_to(root)), path.stat().st_size)
        for path in root.rglob("*")
        if path.is_file()
    )


def resolver(tenant_id: str, files_root: Path) -> Callable[[str, str], Path]:
    """``src`` -> the confined file, for the approval's digests (``pushed_files``): the
    bytes hashed at submission, checked before a run and copied are the same file.
    ``files_root``: the installation's (``Settings.files_root``), read once by the caller."""
    root = files_root / tenant_id

    def resolve(src: str, field: str) -> Path:
        return source(root, src, field)

    return resolve
