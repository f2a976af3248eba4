"""How long an ``opsc`` command takes from the shell, start-up included.

Runs ``opsc --help``, ``opsc list``, ``opsc show ID`` and ``opsc cancel ID`` (each on a
fresh queued execution) as real processes, ``--runs`` times each, and prints min / median
/ max wall time, the import time of ``opsconductor.cli`` (``python -X importtime``), and the
heavy packages each command loaded. The database: ``--database-url`` (or DATABASE_URL), or
else an embedded server in a temporary home that the commands join, as on a laptop.

    .venv/bin/python bench/startup.py [--runs 10] [--source DIR]

``--source DIR`` measures another checkout's ``src`` with this interpreter (before/after).
The measured source is byte-compiled first, as pip does when it installs a package: where
PYTHONDONTWRITEBYTECODE is set (these machines), every run would otherwise compile all our
modules again (about 70 ms).
The machine's load average is printed with the figures: on a shared machine it moves them.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Packages a reading command has no use for (server, SSH, Vault, templates, plan models).
#: Not pydantic itself: typer converts every command's parameters with it.
HEAVY = (
    "fastapi",
    "uvicorn",
    "asyncssh",
    "hvac",
    "requests",
    "httpx",
    "jinja2",
    "cryptography",
    "yaml",
    "prometheus_client",
    "websockets",
    "rich.progress",
    "opsconductor.engine",
    "opsconductor.plan",
    "opsconductor.worker",
)
PLAN = {
    "name": "startup bench",
    "steps": [{"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
}


@contextmanager
def database(url: str | None) -> Iterator[dict[str, str]]:
    """The environment of the measured commands (a temporary home and config either way)."""
    home = Path(tempfile.mkdtemp(prefix="opsc-startup-"))
    os.chmod(home, 0o755)  # as root, the embedded server runs as another user
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSC_")}
    env.pop("DATABASE_URL", None)
    env.update(OPSC_HOME=str(home), XDG_CONFIG_HOME=str(home / "config"))
    if url:
        env["DATABASE_URL"] = url
        yield env
        shutil.rmtree(home, ignore_errors=True)
        return
    from opsconductor.db import embedded

    embedded.start(home / "pgdata")  # held for the run: the commands join, as on a laptop
    try:
        yield env
    finally:
        embedded.stop(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)


def command(source: Path | None) -> tuple[list[str], dict[str, str]]:
    extra = {"PYTHONPATH": str(source)} if source else {}
    return [sys.executable, "-m", "opsconductor.cli"], extra


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run. On a busy machine the CPU time
    moves less than the wall time: it does not count the waits for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def submit(base: list[str], env: dict[str, str], plan: Path) -> str:
    """A new queued execution (its own idempotency key: not a duplicate of the last)."""
    key = f"startup-{uuid.uuid4()}"
    done = subprocess.run(
        [*base, "submit", str(plan), "-k", key], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def loaded(base: list[str], env: dict[str, str], args: list[str]) -> tuple[float, list[str]]:
    """The command's whole import time (ms: every top-level import, the command's own module
    included) and the heavy packages it imported, from ``-X importtime``."""
    argv = [base[0], "-X", "importtime", *base[1:], *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    names, cli_ms = set(), 0.0
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            names.add(match[3])
            if len(match[2]) == 1:  # a top-level import: its time includes its imports'
                cli_ms += int(match[1]) / 1000
    return cli_ms, sorted(name for name in HEAVY if name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--source", type=Path, help="a checkout's src/ to measure instead")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args()

    base, extra = command(args.source)
    import opsconductor

    compileall.compile_dir(args.source or Path(opsconductor.__file__).parent, quiet=1)
    results: dict[str, dict[str, object]] = {}
    with database(args.database_url) as env:
        env = {**env, **extra}
        plan = Path(env["OPSC_HOME"]) / "plan.json"
        plan.write_text(json.dumps(PLAN))
        shown = submit(base, env, plan)
        to_cancel = [submit(base, env, plan) for _ in range(args.runs + 2)]
        cases = {
            "--help": lambda: ["--help"],
            "list": lambda: ["list"],
            "show": lambda: ["show", shown],
            "cancel": lambda: ["cancel", to_cancel.pop()],
        }
        for name, argv in cases.items():
            timed([*base, *argv()], env)  # warm the page cache: every run after is alike
            runs = [timed([*base, *argv()], env) for _ in range(args.runs)]
            times = [wall for wall, _ in runs]
            import_ms, heavy = loaded(base, env, argv())
            results[name] = {
                "min_s": round(min(times), 3),
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "cpu_median_s": round(statistics.median(cpu for _, cpu in runs), 3),
                "import_ms": round(import_ms, 1),
                "heavy_imports": heavy,
            }
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"load_avg": load, "cpus": os.cpu_count(), "commands": results}))
        return
    where = "external PostgreSQL" if args.database_url else "embedded PostgreSQL (joined)"
    print(f"opsc start-up, {args.runs} runs each, {where}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'command':<10}{'min s':>8}{'median s':>10}{'max s':>8}{'cpu s':>8}{'import ms':>11}"
        "  heavy modules loaded"
    )
    for name, r in results.items():
        heavy = ", ".join(r["heavy_imports"]) or "-"  # type: ignore[arg-type]
        print(
            f"{name:<10}{r['min_s']:>8}{r['median_s']:>10}{r['max_s']:>8}{r['cpu_median_s']:>8}"
            f"{r['import_ms']:>11}  {heavy}"
        )


if __name__ == "__main__":
    main()
