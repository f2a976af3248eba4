"""Many SSH targets: the per-step concurrency limit holds, reports keep target order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opsconductor.db.connection import Database
from opsconductor.status_machine import Status
from tests.helpers import add_ssh_assets, run_plan


def max_overlap(log: str) -> int:
    """Most commands running at once, from the start/end stamps they wrote themselves."""
    events = []
    for line in log.splitlines():
        kind, stamp = line.split()
        events.append((int(stamp), 0 if kind == "end" else 1))  # ends first on a tie
    running = peak = 0
    for _, delta in sorted(events):
        running += 1 if delta else -1
        peak = max(peak, running)
    return peak


async def test_twenty_targets_with_a_concurrency_limit(
    db: Database, ssh_lab: Any, tmp_path: Path
) -> None:
    ports = ssh_lab.ports[4:24]
    await add_ssh_assets(db, ssh_lab, ports, prefix="fan")
    log = tmp_path / "stamps.log"
    command = (
        f'echo "start $(date +%s%N)" >> {log}; sleep 0.3; '
        f'echo "end $(date +%s%N)" >> {log}; echo "$SSH_CONNECTION"'
    )
    plan = {
        "name": "fan-out",
        "steps": [
            {
                "name": "stamp",
                "type": "command",
                "targets": {"tags": {"role": "fan"}},
                "command": command,
                "concurrency": 4,
            },
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert status == Status.COMPLETED
    assert [r.target_asset_id for r in rows] == [f"fan-{n:02d}" for n in range(20)]
    # Each target is its own server port, as the remote side saw it.
    assert [int(r.output.split()[3]) for r in rows] == ports
    stamps = log.read_text()
    assert stamps.count("start") == 20 and stamps.count("end") == 20
    peak = max_overlap(stamps)
    assert 2 <= peak <= 4, stamps  # ran in parallel, never more than the limit


async def test_some_targets_failing_makes_the_execution_partial(db: Database, ssh_lab: Any) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[4:7], prefix="mix")
    plan = {
        "name": "mixed",
        "steps": [
            {
                "name": "port check",
                "type": "command",
                "targets": {"tags": {"role": "mix"}},
                # fails on the middle target only, judged by the server port it reached
                "command": f'test "${{SSH_CONNECTION##* }}" != {ssh_lab.ports[5]}',
            },
            {
                "name": "never",
                "type": "command",
                "targets": {"tags": {"role": "mix"}},
                "command": "true",
            },
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert status == Status.PARTIAL
    first = [(r.target_asset_id, r.status) for r in rows if r.step_index == 0]
    assert first == [("mix-00", "completed"), ("mix-01", "failed"), ("mix-02", "completed")]
    assert {r.status for r in rows if r.step_index == 1} == {"skipped"}
