"""Named SQL blocks loaded from ``sql/*.sql`` files (``-- name: insert_execution``)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def load(concern: str) -> dict[str, str]:
    """All blocks of ``sql/<concern>.sql``; each concern keeps its SQL in its own file."""
    text = resources.files("opsconductor.db").joinpath("sql", f"{concern}.sql").read_text()
    return parse(text)
