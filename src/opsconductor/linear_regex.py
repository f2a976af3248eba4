"""Regular expressions a tenant writes (``stdout_regex``, ``body_regex``), run by RE2. Pure.

Python's ``re`` backtracks: ``^(a+)+$`` against forty ``a`` and a ``b`` takes longer than
the universe has left, holding the GIL (and with it the API's event loop) the whole time,
and no step timeout can interrupt it. RE2 matches in time linear in the text, for every
pattern; in exchange it has no backreferences (``\\1``) and no lookaround (``(?=``, ``(?!``,
``(?<=``), which a plan is told about when it is validated.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the author's error, reported to them, not logged


def _message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def compile_error(pattern: str) -> str | None:
    """None when RE2 accepts ``pattern``, else why not (for the plan's error message)."""
    try:
        _compiled(pattern)
    except re2.error as exc:
        return _message(exc)
    return None


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text`` (``re.search`` semantics)."""
    return _compiled(pattern).search(text) is not None


def compiled(pattern: str) -> Any:
    """The RE2 pattern (``search``, ``finditer`` as in ``re``); ``re2.error`` if invalid."""
    return _compiled(pattern)
