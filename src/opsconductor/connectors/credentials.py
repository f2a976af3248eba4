"""Default resolution of asset credential references, until the secrets backend takes
over: ``env:NAME`` reads an environment variable of the worker (under the same prefix rule
as ``env:`` secrets), ``file:/path`` reads a file on the worker (a private key, typically).
The value lives only in memory while a connection is opened."""

from __future__ import annotations

import os
from pathlib import Path

from opsconductor.config import load_settings
from opsconductor.secret_store import env_refusal


def resolve_credential(ref: str) -> str:
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
        try:
            return Path(rest).read_text()
        except OSError as exc:
            raise LookupError(f"cannot read {rest}: {exc.strerror}") from None
    raise ValueError("unsupported reference; use env:NAME or file:/path")
