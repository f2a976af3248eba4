"""Runs ``ansible-inventory -i PATH --list`` (ansible-core, the ``ansible`` extra) on an
inventory in a tenant's files root and returns its JSON output.

The inventory is the tenant's input, and what reads it runs on the control plane: so it
runs in the sandbox local steps run in (``sandbox.py``: bubblewrap, as the unprivileged
sandbox user, no process, file or variable of ours in sight), never as the worker.

``PATH`` was confined to the tenant's files root by the caller; here every entry under it
must resolve inside that root too (a link in an inventory directory to a key file of the
worker is refused with a clear error instead of being copied). The regular files are
copied into a private folder shown read-only at ``/run/opsc-inventory``, which is all of
our disk the program sees besides the system and Python directories. It starts with an
empty ``ansible.cfg``, a private ``/tmp`` for Ansible's own files, no network unless the
installation enabled a plugin (cloud plugins call their API), stdin closed, its output
written to a file bounded by ``RLIMIT_FSIZE``, and it is killed whole on timeout. Only the
static inventory plugins (ini, yaml, toml) are enabled: no executable of the tenant runs
as a ``script`` inventory.

Plugin configs (``plugin: amazon.aws.aws_ec2``, ``constructed``, ...) are read only by the
plugins the installation enables (``OPSC_INVENTORY_PLUGINS``): such a config is templated
by Ansible, and a template's lookups (``lookup('file', ...)``, ``lookup('pipe', ...)``)
run inside that sandbox, as its user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from opsconductor.connectors import local, sandbox
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.ansible_run import python_binds
from opsconductor.connectors.outcome import StepInputError
from opsconductor.errors import SourceError

MAX_OUTPUT_BYTES = 32 * 1024 * 1024
#: Entries an inventory directory may hold (a sync walks them all before running).
MAX_ENTRIES = 10_000
#: The static inventory plugins: they read files and template nothing.
STATIC_PLUGINS = ("ansible.builtin.yaml", "ansible.builtin.ini", "ansible.builtin.toml")
HINT = "install it with: pip install 'opsconductor[ansible]'"
#: Where the copy of the inventory appears in the sandbox.
INVENTORY = "/run/opsc-inventory"


def program() -> str | None:
    """``ansible-inventory`` next to our interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / "ansible-inventory"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("ansible-inventory")


def _inside(entry: str, base: Path) -> bool:
    return Path(os.path.realpath(entry)).is_relative_to(base)


def _refused(entry: str, base: Path, real: str) -> SourceError:
    shown = os.path.relpath(entry, base)
    return SourceError(f"{shown}: a link out of this tenant's files root ({real}): refused")


async def list_inventory(
    path: Path,
    root: Path,
    access: TenantAccess,
    *,
    plugins: tuple[str, ...] = (),
    timeout_s: float = 120.0,
) -> str:
    """The ``--list`` JSON text of the inventory at ``path`` (inside ``root``), read by the
    static plugins and ``plugins`` (the installation's ``OPSC_INVENTORY_PLUGINS``) in the
    sandbox of ``access``'s tenant."""
    found = program()
    if found is None:
        raise SourceError(f"ansible-inventory is not installed on this worker; {HINT}")
    with tempfile.TemporaryDirectory(prefix="opsc-inventory-") as work:
        # staged first: a link out is refused (with its path) even where no sandbox runs
        target = await asyncio.to_thread(_stage, path, root, Path(work) / "inventory")
        try:
            box = await asyncio.to_thread(
                functools.partial(sandbox.prepare, access, capability=False)
            )
        except StepInputError as exc:  # not root, no bwrap: never run outside the sandbox
            raise SourceError(f"ansible-inventory runs sandboxed: {exc}") from None
        box = dataclasses.replace(box, network=bool(plugins), writable_tmp=True)
        out = await asyncio.to_thread(os.open, Path(work) / "out.json", os.O_RDWR | os.O_CREAT)
        try:
            result = await local.run_sandboxed(
                box,
                [
                    "prlimit",
                    f"--fsize={MAX_OUTPUT_BYTES + 1}",
                    "--",
                    sys.executable,
                    found,
                    "-i",
                    target,
                    "--list",
                ],
                timeout_s=timeout_s,
                env={
                    "ANSIBLE_CONFIG": f"{sandbox.DATA_DIR}/ansible.cfg",
                    "ANSIBLE_HOME": "/tmp/ansible",
                    "ANSIBLE_LOCAL_TEMP": "/tmp/ansible/tmp",
                    "ANSIBLE_INVENTORY_ENABLED": ",".join((*STATIC_PLUGINS, *plugins)),
                    # a file no enabled plugin can read fails the sync (instead of listing less)
                    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
                    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true",
                    "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_DEPRECATION_WARNINGS": "false",
                    "PYTHONDONTWRITEBYTECODE": "1",
                },
                cwd="/tmp",
                files={f"{sandbox.DATA_DIR}/ansible.cfg": b"[defaults]\n"},
                stdout=out,
                binds=[*python_binds(), (str(Path(work) / "inventory"), INVENTORY)],
            )
            data = await asyncio.to_thread(_output, out)
        finally:
            os.close(out)
    if result.timed_out:
        raise SourceError(f"ansible-inventory: still running after {timeout_s:.0f} s")
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines()
        shown = " / ".join(line for line in lines if line.strip())[-2000:]
        raise SourceError(f"ansible-inventory failed (exit {result.exit_code}): {shown}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError("ansible-inventory: output is not UTF-8") from None


def _output(fd: int) -> bytes:
    """What the program wrote; refused past the bound (RLIMIT_FSIZE stopped it there)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size > MAX_OUTPUT_BYTES:
        raise SourceError(f"ansible-inventory: output larger than {MAX_OUTPUT_BYTES} bytes")
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _stage(path: Path, root: Path, into: Path) -> str:
    """Copy the inventory at ``path`` (a file or a directory) into ``into``, readable by the
    sandbox's user, in one walk; the path to give ``-i`` inside the sandbox.

    Every entry must resolve inside ``root``; links to directories are followed, as Ansible
    follows them (a cycle ends at the bound). A file is checked on the descriptor it is
    copied from, so a link swapped in after the walk saw the entry is refused too."""
    base = Path(os.path.realpath(root))
    if not _inside(str(path), base):
        raise _refused(str(path), base, os.path.realpath(path))
    into.mkdir(mode=0o755)
    if not path.is_dir():
        _copy(str(path), into / path.name, base)
        return f"{INVENTORY}/{path.name}"
    count = 1
    for folder, dirs, files in os.walk(path, followlinks=True):
        count += len(dirs) + len(files)
        if count > MAX_ENTRIES:
            raise SourceError(f"{path.name}: more than {MAX_ENTRIES} entries")
        here = into / Path(folder).relative_to(path)
        for name in dirs:
            entry = os.path.join(folder, name)
            if not _inside(entry, base):  # never descended into
                raise _refused(entry, base, os.path.realpath(entry))
            (here / name).mkdir(mode=0o755, exist_ok=True)
        for name in files:
            _copy(os.path.join(folder, name), here / name, base)
    return INVENTORY


def _copy(entry: str, copy: Path, base: Path) -> None:
    """``entry``'s content into ``copy`` if it is a regular file inside ``base``, judged on
    the file actually opened (``/proc/self/fd``), not on a path that may change since."""
    try:
        # non-blocking: a FIFO must not hold the sync
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:  # a dangling link: nothing to copy, but not one leading out
        if not _inside(entry, base):
            raise _refused(entry, base, os.path.realpath(entry)) from None
        return
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not Path(real).is_relative_to(base):
            raise _refused(entry, base, real)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return  # devices, sockets, FIFOs: never read
        with open(copy, "wb") as target, os.fdopen(os.dup(fd), "rb") as source:
            shutil.copyfileobj(source, target)
        os.chmod(copy, 0o644)
    finally:
        os.close(fd)
