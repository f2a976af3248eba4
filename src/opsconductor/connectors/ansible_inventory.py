"""Runs ``ansible-inventory -i PATH --list`` (ansible-core, the ``ansible`` extra) on an
inventory in a tenant's files root and returns its JSON output.

``PATH`` was confined to the tenant's files root by the caller; here every entry under it
must resolve inside that root too (a link in an inventory directory to a key file of the
worker would otherwise be parsed, and a parse error quotes the line it failed on). The
program runs with a clean environment (no variable of the worker: no database URL, no
secret key), an empty ``ansible.cfg`` and its home in a fresh temporary directory, with
only the static inventory plugins (ini, yaml, toml: no executable of the tenant runs, no
plugin config templates), stdin closed, in a session of its own killed whole on timeout;
stdout and stderr are read to a bound.

Plugin configs (``plugin: amazon.aws.aws_ec2``, ``constructed``, ...) are read only by the
plugins the installation enables (``OPSC_INVENTORY_PLUGINS``): such a config is templated
by Ansible, and a template's lookups (``lookup('file', ...)``, ``lookup('pipe', ...)``)
run on the worker, as its user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from opsconductor.errors import SourceError

MAX_OUTPUT_BYTES = 32 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
#: Entries an inventory directory may hold (a sync walks them all before running).
MAX_ENTRIES = 10_000
#: The static inventory plugins: they read files and template nothing.
STATIC_PLUGINS = ("ansible.builtin.yaml", "ansible.builtin.ini", "ansible.builtin.toml")
HINT = "install it with: pip install 'opsconductor[ansible]'"


def program() -> str | None:
    """``ansible-inventory`` next to our interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / "ansible-inventory"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("ansible-inventory")


def check_tree(path: Path, root: Path) -> None:
    """Every entry under ``path`` (a file or a directory) resolves inside ``root``; links
    to directories are followed, as Ansible follows them (a cycle ends at the bound)."""
    base = Path(os.path.realpath(root))
    entries = [str(path)]
    if path.is_dir():
        for folder, dirs, files in os.walk(path, followlinks=True):
            entries += [os.path.join(folder, name) for name in (*dirs, *files)]
            if len(entries) > MAX_ENTRIES:
                raise SourceError(f"{path.name}: more than {MAX_ENTRIES} entries")
            # descend only where the entry stays inside the root (checked below)
            dirs[:] = [d for d in dirs if _inside(os.path.join(folder, d), base)]
    for entry in entries:
        if not _inside(entry, base):
            shown = os.path.relpath(entry, base)
            raise SourceError(
                f"{shown}: a link out of this tenant's files root "
                f"({os.path.realpath(entry)}): refused"
            )


def _inside(entry: str, base: Path) -> bool:
    return Path(os.path.realpath(entry)).is_relative_to(base)


async def list_inventory(
    path: Path, root: Path, *, plugins: tuple[str, ...] = (), timeout_s: float = 120.0
) -> str:
    """The ``--list`` JSON text of the inventory at ``path`` (inside ``root``), read by the
    static plugins and ``plugins`` (the installation's ``OPSC_INVENTORY_PLUGINS``)."""
    found = program()
    if found is None:
        raise SourceError(f"ansible-inventory is not installed on this worker; {HINT}")
    check_tree(path, root)
    with tempfile.TemporaryDirectory(prefix="opsc-inventory-") as work:
        config = Path(work) / "ansible.cfg"
        config.write_text("[defaults]\n")
        env = {
            "PATH": f"{Path(found).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": work,
            "LANG": "C.UTF-8",
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOME": work,
            "ANSIBLE_LOCAL_TEMP": work,
            "ANSIBLE_INVENTORY_ENABLED": ",".join((*STATIC_PLUGINS, *plugins)),
            # a file no enabled plugin can read fails the sync (instead of listing less)
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "false",
        }
        process = await asyncio.create_subprocess_exec(
            found,
            "-i",
            str(path),
            "--list",
            cwd=work,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout_s):
                out, err = await asyncio.gather(
                    _read(process.stdout, MAX_OUTPUT_BYTES, "output"),
                    _read(process.stderr, MAX_ERROR_BYTES, None),
                )
                code = await process.wait()
        except TimeoutError:
            raise SourceError(f"ansible-inventory: still running after {timeout_s:.0f} s") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
    if code != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        shown = " / ".join(line for line in message if line.strip())[-2000:]
        raise SourceError(f"ansible-inventory failed (exit {code}): {shown}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError("ansible-inventory: output is not UTF-8") from None


async def _read(stream: asyncio.StreamReader | None, limit: int, refuse: str | None) -> bytes:
    """Up to ``limit`` bytes; past it: refused (``refuse`` names what) or the rest dropped."""
    assert stream is not None  # PIPE
    data = bytearray()
    while chunk := await stream.read(65536):
        if len(data) + len(chunk) > limit:
            if refuse is not None:
                raise SourceError(f"ansible-inventory: {refuse} larger than {limit} bytes")
            continue  # drain, so the program is not blocked on a full pipe
        data += chunk
    return bytes(data)
