"""A real ``opsc serve`` process for CLI tests, and shells logged in to it as other people
(``opsc login``: identity from a token, as a second person at another terminal has it)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def opsc(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def token_of(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(token id, token) from ``opsc tokens create`` output."""
    assert result.returncode == 0, result.stdout + result.stderr
    token_id = re.search(r"token id ([0-9a-f-]{36})", result.stdout)
    token = re.search(r"^(opsc_\S+)$", result.stdout, re.MULTILINE)
    assert token_id and token, result.stdout
    return token_id[1], token[1]


@contextmanager
def serving(env: dict[str, str], *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``opsc serve --port 0``; yields (API URL ending in /api/v1, process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "serve", "--port", "0", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = None
    for line in proc.stdout:  # the server prints its address once it listens
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+/api/v1)", line)
        if found:
            url = found[1]
            break
    assert url, proc.stderr.read() if proc.stderr else "no output"
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def logged_in(
    env: dict[str, str], url: str, actor: str, *roles: str, config: Path
) -> dict[str, str]:
    """A shell environment whose ``opsc`` acts as ``actor`` (a token made by the local
    administrator, with ``roles``) through the server at ``url``."""
    made = ["tokens", "create", actor, *[f"--role={r}" for r in roles]]
    _, token = token_of(opsc(env, *made))
    shell = {**env, "XDG_CONFIG_HOME": str(config)}
    done = opsc(shell, "login", url.removesuffix("/api/v1"), stdin=token + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    return shell
