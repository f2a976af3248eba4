"""Event latency from a producer's commit to SSE clients of another process.

An API server runs as its own process (``opsc serve``); this process commits events one at a
time and, on the same clock, timestamps their arrival at 1, then 200, SSE clients of that
server. Figures are printed, never asserted. Uses ``DATABASE_URL`` when set, else a
throw-away embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from opsconductor.db import embedded, executions, migrations
from opsconductor.db.connection import Database

EVENTS = 200
GAP_S = 0.01


def _database() -> str:
    server = os.environ.get("DATABASE_URL") or embedded.start(
        Path(tempfile.mkdtemp(prefix="opsc-bench-")) / "pgdata"
    )
    name = f"opsc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server, dbname=name)


def _server(env: dict[str, str]) -> tuple[str, subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on (http://\S+/api/v1)", line)
        if found:
            return found[1], proc
    raise SystemExit("the server did not start")


async def _client(
    http: httpx.AsyncClient, url: str, ready: asyncio.Event, arrived: dict[int, float]
) -> list[float]:
    """Arrival times by event number (the payload's ``n``), until the last one."""
    async with http.stream("GET", url) as response:
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"n":' in line:
                n = int(line.split('"n":')[1].split("}")[0])
                arrived[n] = time.perf_counter()
                if n == EVENTS - 1:
                    break
    return list(arrived.values())


async def _round(db: Database, url: str, token: str, clients: int) -> None:
    async with db.connection() as conn:
        execution = await _execution(conn)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as http:
        stream = f"{url}/executions/{execution['id']}/stream"
        readies = [asyncio.Event() for _ in range(clients)]
        arrivals: list[dict[int, float]] = [{} for _ in range(clients)]
        tasks = [
            asyncio.create_task(_client(http, stream, ready, got))
            for ready, got in zip(readies, arrivals, strict=True)
        ]
        for ready in readies:
            await ready.wait()
        await asyncio.sleep(0.5)  # every stream has finished its replay
        committed: dict[int, float] = {}
        for n in range(EVENTS):
            async with db.connection() as conn:
                await executions.append_event(conn, execution, "bench", "bench", {"n": n})
            committed[n] = time.perf_counter()
            await asyncio.sleep(GAP_S)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    latencies = sorted(
        (got[n] - committed[n]) * 1000 for got in arrivals for n in range(EVENTS) if n in got
    )
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"commit -> SSE client, {clients:>3} client(s)   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
        f"   ({len(latencies)} deliveries)"
    )


async def _execution(conn: psycopg.AsyncConnection[dict[str, object]]) -> dict[str, object]:
    """A bare execution row to hang the events on (pending approval: never runs)."""
    cur = await conn.execute(
        "INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key, plan_name,"
        " plan_snapshot, plan_hash, status, mode, sla_class, approval_level, priority,"
        " estimated_duration_s, trace_id) VALUES (%s, 'bench', 'bench', %s, 'bench', '{}',"
        " repeat('0', 64), 'pending_approval', 'immediate', 'fast', 1, 5, 0, 'bench')"
        " RETURNING id, tenant_id",
        (uuid.uuid4(), uuid.uuid4().hex),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


def _token(env: dict[str, str]) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "tokens", "create", "bench", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = re.search(r"^(opsc_\S+)$", made.stdout, re.MULTILINE)
    assert token
    return token[1]


async def _measure(url_db: str, url: str, token: str) -> None:
    async with Database(url_db, max_size=4) as db:
        await migrations.migrate(db)
        for clients in (1, 200):
            await _round(db, url, token, clients)


def main() -> None:
    url_db = _database()
    home = Path(tempfile.mkdtemp(prefix="opsc-bench-home-"))
    env = {**os.environ, "DATABASE_URL": url_db, "OPSC_HOME": str(home), "OPSC_TENANT": "bench"}
    token = _token(env)
    url, proc = _server(env)
    try:
        asyncio.run(_measure(url_db, url, token))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
