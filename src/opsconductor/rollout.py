"""Rolling updates: a plan's ``serial:`` cut into batches of hosts, and the
``max_fail_percentage:`` check after each batch. Pure.

``serial`` is a count (``2``), a percentage of all hosts (``"25%"``) or a list of growing
sizes (``[1, 5, "50%"]``) whose last size repeats until every host is done, as in Ansible.
The hosts are the union of every step's targets, in asset-id order; each batch runs all
steps before the next batch starts (``engine/rolling.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: One batch size as written: a count (>= 1) or a percentage string such as ``"25%"``.
Size = int | str
#: The whole ``serial:`` field.
Serial = Size | list[Size]

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
MAX_SIZES = 100


def check_size(size: object) -> str | None:
    """Why ``size`` is not a valid batch size, or None."""
    if isinstance(size, bool) or not isinstance(size, int | str):
        return f"a batch size is a count or a percentage such as '25%' (got {size!r})"
    if isinstance(size, int):
        return None if size >= 1 else f"a batch size must be >= 1 (got {size})"
    found = _PERCENT.match(size)
    if found is None:
        return f"a batch size is a count or a percentage such as '25%' (got {size!r})"
    percent = float(found[1])
    if not 0 < percent <= 100:
        return f"a percentage batch size must be above 0% and at most 100% (got {size!r})"
    return None


def check_serial(serial: object) -> object:
    """Validate a ``serial:`` value (for the plan model); raise ValueError with the cause."""
    if serial is None:
        return None
    sizes = serial if isinstance(serial, list) else [serial]
    if not sizes:
        raise ValueError("give at least one batch size")
    if len(sizes) > MAX_SIZES:
        raise ValueError(f"give at most {MAX_SIZES} batch sizes")
    for size in sizes:
        problem = check_size(size)
        if problem is not None:
            raise ValueError(problem)
    return serial


def size_of(size: Size, total: int) -> int:
    """How many hosts one batch size means out of ``total``: a percentage rounds down,
    but a batch always holds at least one host."""
    if isinstance(size, int):
        return size
    found = _PERCENT.match(size)
    assert found is not None, size  # checked by the plan model
    return max(1, math.floor(total * float(found[1]) / 100))


def batches(serial: Serial, hosts: Sequence[str]) -> list[list[str]]:
    """``hosts`` (in order) cut into batches; the last size given repeats."""
    sizes = serial if isinstance(serial, list) else [serial]
    out: list[list[str]] = []
    start = 0
    while start < len(hosts):
        size = size_of(sizes[min(len(out), len(sizes) - 1)], len(hosts))
        out.append(list(hosts[start : start + size]))
        start += size
    return out


def hosts_of(targets: Sequence[Sequence[str]]) -> list[str]:
    """Every host any step runs on, once, in asset-id order."""
    return sorted({asset for step_targets in targets for asset in step_targets})


def shown(serial: Serial) -> str:
    """``serial`` as an operator wrote it: ``1``, ``'25%'``, ``[1, '50%']``."""
    return repr(serial)


@dataclass(frozen=True)
class BatchOutcome:
    """How one batch ended: its 1-based number, of how many, its hosts and failed hosts."""

    number: int
    of: int
    hosts: tuple[str, ...]
    failed: tuple[str, ...]


def exceeds(failed: int, size: int, max_fail_percentage: float) -> bool:
    """True when ``failed`` of ``size`` hosts is above the allowed percentage (so with the
    default 0 a single failure stops the rollout; 100 never does)."""
    return size > 0 and failed * 100 > max_fail_percentage * size


def stop_reason(batch: BatchOutcome, max_fail_percentage: float) -> str:
    """Why a rollout stopped, naming the batch, its hosts and the threshold."""
    limit = f"{max_fail_percentage:g}"
    return (
        f"rollout stopped after batch {batch.number} of {batch.of} "
        f"(hosts {', '.join(batch.hosts)}): {len(batch.failed)} of {len(batch.hosts)} hosts "
        f"failed ({', '.join(batch.failed)}), above max_fail_percentage {limit}"
    )


def not_run_reason(batch: BatchOutcome) -> str:
    """What a step left unrun by a stopped rollout records as its reason."""
    return f"not run: rollout stopped after batch {batch.number} of {batch.of}"
