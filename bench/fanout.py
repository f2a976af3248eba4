"""Fan-out throughput: commands/s over 50 SSH targets on loopback.

Starts a real SSH server (OpenSSH sshd when installed, else the asyncssh fall-back from
tests/sshlab.py) on 50 ports of 127.0.0.1, opens one connection per target through the
product's connector session, then runs ROUNDS commands on every target, all 50 at once.
Prints the connect phase and the warm command rate. Then the same through the whole engine
(submission, a step row and two events per target, in PostgreSQL: ``DATABASE_URL`` or an
embedded server in a temporary directory), one execution of one step over the 50 targets
at ``concurrency: 50``, ENGINE_RUNS times. Run: .venv/bin/python bench/fanout.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sshlab import free_ports, start_lab  # noqa: E402

from opsconductor.connectors.session import Connectors  # noqa: E402
from opsconductor.db import assets as asset_store  # noqa: E402
from opsconductor.db import connectors, embedded, migrations  # noqa: E402
from opsconductor.db.connection import Database  # noqa: E402
from opsconductor.engine import Engine  # noqa: E402
from opsconductor.inventory import Asset  # noqa: E402
from opsconductor.plan import CommandStep, parse_plan  # noqa: E402
from opsconductor.status_machine import Status  # noqa: E402
from opsconductor.submission import Request, submit  # noqa: E402

TARGETS = 50
ROUNDS = 10
ENGINE_RUNS = 5


class TrustLab:
    """known_hosts holding the lab's one host key for every port (the bench has no DB)."""

    accept_new = False

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key

    async def keys(self, host: str, port: int) -> list[str]:
        return [self.public_key]

    async def remember(self, host: str, port: int, public_key: str) -> None:
        raise AssertionError("strict policy never remembers")


def command_step() -> CommandStep:
    plan = parse_plan(
        {
            "name": "bench",
            "steps": [
                {
                    "name": "echo",
                    "type": "command",
                    "targets": {"assets": ["x"]},
                    "command": "echo ok",
                }
            ],
        }
    )
    step = plan.steps[0]
    assert isinstance(step, CommandStep)
    return step


def lab_assets(lab: object, ports: list[int]) -> list[Asset]:
    keys = lab.keys  # type: ignore[attr-defined]
    return [
        Asset(
            asset_id=f"b-{n:02d}",
            hostname=f"b-{n:02d}",
            address="127.0.0.1",
            port=port,
            environment="bench",
            connection_type="ssh",
            username=lab.username,  # type: ignore[attr-defined]
            credential_ref=f"file:{keys.client_key_path}",
        )
        for n, port in enumerate(ports)
    ]


async def bench(lab: object, ports: list[int]) -> None:
    assets = lab_assets(lab, ports)
    step = command_step()
    session = Connectors(TrustLab(lab.keys.host_public))  # type: ignore[attr-defined]
    try:

        async def run_all() -> list[str]:
            outcomes = await asyncio.gather(
                *(session.execute(step, a, where="steps[0]", timeout_s=30) for a in assets)
            )
            return [o.status for o in outcomes]

        started = time.perf_counter()
        first = await run_all()  # includes the 50 SSH handshakes
        connect_s = time.perf_counter() - started
        assert set(first) == {"completed"}, first
        started = time.perf_counter()
        for _ in range(ROUNDS):
            statuses = await run_all()
            assert set(statuses) == {"completed"}, statuses
        warm_s = time.perf_counter() - started
    finally:
        await session.aclose()
    commands = TARGETS * ROUNDS
    print(f"server: {lab.kind}, targets: {TARGETS}, connections opened: {session.ssh.opened}")  # type: ignore[attr-defined]
    print(f"first round (connect + 1 command each): {connect_s:.2f} s")
    print(f"warm: {commands} commands in {warm_s:.2f} s = {commands / warm_s:.0f} commands/s")


async def bench_engine(lab: object, ports: list[int], url: str) -> None:
    async with Database(url, max_size=20) as db:
        await migrations.migrate(db)
        async with db.connection() as conn:
            await asset_store.ensure_tenant(conn, "bench")
            for asset in lab_assets(lab, ports):
                await asset_store.upsert(conn, "bench", asset)
                await connectors.add_known_host(
                    conn,
                    "bench",
                    asset.address,
                    asset.port or 22,
                    lab.keys.host_public,
                    "bench",  # type: ignore[attr-defined]
                )
        engine = Engine(db, actor_id="bench")
        started = time.perf_counter()
        for run in range(ENGINE_RUNS):
            plan = parse_plan(
                {
                    "name": f"bench {run} {time.time_ns()}",
                    "steps": [
                        {
                            "name": "echo",
                            "type": "command",
                            "command": "echo ok",
                            "targets": {"environment": "bench"},
                            "concurrency": TARGETS,
                        }
                    ],
                }
            )
            submitted = await submit(db, Request(plan, "bench", "bench"))
            status = await engine.run("bench", submitted.execution.id)
            assert status == Status.COMPLETED, status
        took = time.perf_counter() - started
    commands = TARGETS * ENGINE_RUNS
    print(
        f"engine: {ENGINE_RUNS} executions x {TARGETS} targets = {commands} commands "
        f"in {took:.2f} s = {commands / took:.0f} commands/s (connect + record included)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        ports = free_ports(TARGETS)
        lab = start_lab(Path(folder), ports)
        try:
            asyncio.run(bench(lab, ports))
            url = os.environ.get("DATABASE_URL") or embedded.start(Path(folder) / "pgdata")
            asyncio.run(bench_engine(lab, ports, url))
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
