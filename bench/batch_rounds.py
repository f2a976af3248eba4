"""Liveness of ``Database.batch`` under natural timing: calls handed in that never answer.

An engine step calls the same batched statement from each of its targets at about the same
moment and waits for all of them. This does that in rounds: K callers, each after a random
pause of up to 4 ms, run one item of a trivial set-based statement; the round waits for
them all, at most ``--stuck-after`` seconds. A round that did not finish had a call no
flusher would ever take (in an ``opsc run``: a hang). Not a speed figure: the count of
stuck rounds is the result (0 is right), and rounds per second only say how much was tried.

    DATABASE_URL=... python bench/batch_rounds.py [--callers K] [--seconds S] [--source DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

if "--source" in sys.argv[:-1]:
    # the other checkout's code in this process
    _source = str(Path(sys.argv[sys.argv.index("--source") + 1]).resolve())
    if os.environ.get("PYTHONPATH") != _source:
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONPATH": _source}
        )

from opsconductor.db.connection import Database

ECHO = "SELECT t.ord, t.v FROM jsonb_to_recordset(%(items)s::jsonb) AS t(ord int, v int)"


async def rounds(url: str, callers: int, seconds: float, stuck_after: float) -> tuple[int, int]:
    tried = stuck = 0
    async with Database(url, max_size=8) as db:

        async def one(value: int) -> None:
            await asyncio.sleep(random.random() * 0.004)
            await db.batch.run(ECHO, [{"v": value}])

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tried += 1
            tasks = [asyncio.ensure_future(one(i)) for i in range(callers)]
            _, pending = await asyncio.wait(tasks, timeout=stuck_after)
            if pending:
                stuck += 1
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
    return tried, stuck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stuck-after", type=float, default=3.0)
    parser.add_argument("--source", help="another checkout's src to measure")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL: a PostgreSQL server to run the statement on")
    tried, stuck = asyncio.run(rounds(url, args.callers, args.seconds, args.stuck_after))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    source = args.source or "this checkout"
    print(f"{source}: {tried} rounds of {args.callers} callers, {stuck} stuck (load {load})")


if __name__ == "__main__":
    main()
