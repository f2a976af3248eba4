"""Canonical JSON text. Pure, standard library only.

Keys sorted, no insignificant whitespace, non-ASCII escaped, so the bytes depend on nothing
but the data (``plan_hash`` hashes them; ``tests/test_plan_hash.py`` pins a golden vector).
Its own module so that modules kept light for the CLI (``inventory``) can key by it too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as json_encoder
from typing import Any

#: One encoder for every call (``json.dumps`` with options builds a new one each time).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def _one_shot() -> Callable[[Any], str] | None:
    """The C encoder ``_CANONICAL.encode`` builds on every call, built once (a submission
    serialises a few small documents per plan, where building it was half the cost). The
    same options, so the same bytes; None where the C accelerator is missing."""
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return None
    encode = make(
        None,  # no cycle check: our documents are trees built from JSON data
        _CANONICAL.default,
        json_encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    return lambda data: "".join(encode(data, 0))


_FAST = _one_shot()


def canonical_json(data: Any) -> str:
    """The canonical text; ``ValueError`` for a non-finite float (JSON has none)."""
    if _FAST is not None:
        return _FAST(data)
    return _CANONICAL.encode(data)
