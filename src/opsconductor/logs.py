"""Structured logging (structlog), JSON lines on stderr.

Masking plugs in here as a processor, so every log line passes through it on the way out:
the masker of the execution being run (its resolved secrets and the tenant's patterns)
when there is one, the built-in patterns otherwise.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
import structlog.tracebacks

from opsconductor import masking
from opsconductor.config import load_settings


@dataclass
class MaskerCell:
    """A mutable slot: the engine swaps in a richer masker as it resolves secrets, and every
    task that inherited the cell sees the change."""

    masker: masking.Masker = masking.DEFAULT


_cell: contextvars.ContextVar[MaskerCell | None] = contextvars.ContextVar(
    "opsc_masker", default=None
)


@contextmanager
def masking_with(cell: MaskerCell) -> Iterator[MaskerCell]:
    token = _cell.set(cell)
    try:
        yield cell
    finally:
        _cell.reset(token)


def active_masker() -> masking.Masker:
    cell = _cell.get()
    return cell.masker if cell is not None else masking.DEFAULT


def mask_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every string of the record, keys' values by name too."""
    masked: MutableMapping[str, Any] = active_masker().mask_data(dict(event_dict))
    return masked


def configure(level: str | None = None) -> None:
    name = (level or load_settings().log_level).upper()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Frames without their locals: locals held request bodies and secrets' values,
            # and made one error hundreds of kilobytes of log.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False, max_frames=20)
            ),
            mask_event,  # last before rendering: nothing is added after it
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(name)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def ensure_configured() -> None:
    """Configure with the defaults unless someone already did: a library user who forgot
    must not get structlog's default (unmasked) console output."""
    if not structlog.is_configured():
        configure()
