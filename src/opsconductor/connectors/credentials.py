"""Default resolution of asset credential references, until the secrets backend takes
over: ``env:NAME`` reads an environment variable of the worker (under the same prefix rule
as ``env:`` secrets), ``file:/path`` reads a file on the worker (a private key, typically).
The value lives only in memory while a connection is opened."""

from __future__ import annotations

import os
from pathlib import Path

from opsconductor.config import load_settings
from opsconductor.connectors import tenant_files
from opsconductor.connectors.outcome import StepInputError
from opsconductor.secret_store import env_refusal


def resolve_credential(ref: str, files_root: Path | None = None) -> str:
    """The value behind ``ref``; ``file:`` paths only inside ``files_root`` (the tenant's
    files root: a key file anywhere on the worker could be the secret store's key, sent to
    the tenant's own SSH server as a password)."""
    scheme, _, rest = ref.partition(":")
    if scheme == "env" and rest:
        refusal = env_refusal(rest, load_settings().secret_env_prefix)
        if refusal is not None:
            raise LookupError(refusal)
        value = os.environ.get(rest)
        if value is None:
            raise LookupError(f"environment variable {rest} is not set on this worker")
        return value
    if scheme == "file" and rest:
        if files_root is None:
            raise LookupError("file: credentials are read from a tenant's files root only")
        try:
            path = tenant_files.source(files_root, rest, "file")
        except StepInputError as exc:
            raise LookupError(str(exc)) from None
        try:
            return path.read_text()
        except OSError as exc:
            raise LookupError(f"cannot read {rest}: {exc.strerror}") from None
    raise ValueError("unsupported reference; use env:NAME or file:/path")
