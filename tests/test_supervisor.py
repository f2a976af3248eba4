"""``opsc worker --processes N`` with real processes: a SIGKILLed child is replaced and the
replacement works; SIGTERM stops every child; a killed supervisor takes its children with
it; a crash loop backs off and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from opsconductor.supervisor import Backoff

TERMINAL = {"completed", "failed", "cancelled", "timeout", "partial", "rejected"}


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: only its parent has not collected its status yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc: no helper library needed)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


class Supervised:
    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_text()

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def workers(self) -> set[int]:
        return children(self.proc.pid)


@pytest.fixture
def supervise(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Supervised:
        log = tmp_path / f"supervisor-{len(started)}.log"
        proc = subprocess.Popen(
            list(args) or [sys.executable, "-m", "opsconductor.cli", "worker"],
            env={**cli_env, "OPSC_LOG_LEVEL": "INFO", **(env or {})},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(Supervised(proc, log))
        return started[-1]

    yield start
    for one in started:
        left = one.workers()
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait(timeout=30)
        for pid in left:  # the test failed half-way: leave nothing running
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def opsc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def registered(url: str) -> dict[int, str]:
    """Worker rows by pid: alive / stopped."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid, CASE WHEN stopped_at IS NULL THEN 'alive' ELSE 'stopped' END "
            "FROM execution.workers"
        ).fetchall()
    return dict(rows)


def status_of(url: str, execution_id: str) -> str:
    with psycopg.connect(url) as conn:
        ((status,),) = conn.execute(
            "SELECT status::text FROM execution.executions WHERE id = %s", (execution_id,)
        ).fetchall()
    return str(status)


def test_a_sigkilled_worker_is_replaced_the_new_one_works_and_sigterm_stops_all(
    supervise: Callable[..., Supervised],
    cli_env: dict[str, str],
    database_url: str,
    work_dir: Path,
    tmp_path: Path,
) -> None:
    sup = supervise(
        sys.executable, "-m", "opsconductor.cli", "worker", "--processes", "2",
        "--poll-interval", "0.5",
    )  # fmt: skip
    wait_until(lambda: len(sup.workers()) == 2, "two workers")
    first = sup.workers()
    wait_until(lambda: set(registered(database_url)) == first, "both registered")

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(sup.workers() - first) == 1, "a replacement")
    (replacement,) = sup.workers() - first
    assert sup.workers() == {max(first), replacement}
    wait_until(lambda: registered(database_url).get(replacement) == "alive", "it registers")
    died = [e for e in sup.events() if e["event"] == "worker died; restarting"]
    assert [(e["pid"], e["how"], e["restart_in_s"]) for e in died] == [
        (victim, "killed by SIGKILL", 0.5)
    ]

    # The replacement does work: with the survivor stopped, it is the only worker left.
    os.kill(max(first), signal.SIGTERM)
    wait_until(lambda: sup.workers() == {replacement}, "the survivor to stop")
    # stopped on purpose: not a crash (the supervisor logs it just after the child is gone)
    wait_until(lambda: "not restarting" in sup.text(), "the supervisor to log the stop")
    log = work_dir / "ran"
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "name": "after the crash",
                "steps": [
                    {
                        "name": "mark",
                        "type": "command",
                        "action_class": "read",
                        "targets": {"hostnames": ["localhost"]},
                        "command": f"echo ran >> {log}",
                    }
                ],
            }
        )
    )
    submitted = opsc(cli_env, "submit", str(plan))
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()
    wait_until(lambda: status_of(database_url, execution_id) in TERMINAL, "the execution")
    assert status_of(database_url, execution_id) == "completed"
    assert log.read_text() == "ran\n"

    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=60) == 0, sup.text()
    assert not alive(replacement)
    assert "workers stopped (exit status 0)" in sup.text()
    assert registered(database_url)[replacement] == "stopped"  # it said goodbye


def test_a_killed_supervisor_takes_its_workers_with_it(
    supervise: Callable[..., Supervised], database_url: str
) -> None:
    sup = supervise(sys.executable, "-m", "opsconductor.cli", "worker", "--processes", "2")
    wait_until(lambda: len(sup.workers()) == 2, "two workers")
    pids = sup.workers()
    wait_until(lambda: set(registered(database_url)) == pids, "both registered")
    sup.proc.kill()
    sup.proc.wait(timeout=30)
    # PR_SET_PDEATHSIG: each child gets SIGTERM and stops gracefully (nothing in flight).
    wait_until(lambda: not any(alive(pid) for pid in pids), "the orphans to stop", 60)
    assert set(registered(database_url).values()) == {"stopped"}


SUPERVISE_A_CRASH = """
import sys
from opsconductor import logs
from opsconductor.supervisor import Backoff, Supervisor
logs.configure("INFO")
child = [sys.executable, "-c", "import sys, time; time.sleep(0.05); sys.exit(int(sys.argv[1]))",
         sys.argv[1]]
sys.exit(Supervisor(child, 1, backoff=Backoff(first_s=0.1, cap_s=0.4)).run())
"""


def test_a_crash_loop_backs_off_to_its_cap_and_is_logged(
    supervise: Callable[..., Supervised],
) -> None:
    sup = supervise(sys.executable, "-c", SUPERVISE_A_CRASH, "3")
    loop = lambda: [e for e in sup.events() if e["event"] == "worker crash loop"]  # noqa: E731
    wait_until(lambda: len(loop()) >= 3, "the crash loop to show", 60)
    delays = [e["restart_in_s"] for e in sup.events() if "restart_in_s" in e]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert {e["how"] for e in sup.events() if "how" in e} == {"exited with status 3"}
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=30) == 1  # it stopped with a worker down: not a clean stop


def test_a_worker_that_refuses_its_input_stops_the_supervisor_with_status_2(
    supervise: Callable[..., Supervised],
) -> None:
    sup = supervise(sys.executable, "-c", SUPERVISE_A_CRASH, "2")
    assert sup.proc.wait(timeout=30) == 2
    assert [e["event"] for e in sup.events()].count("worker started") == 1  # no restart


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]
)
def test_backoff_doubles_up_to_its_cap(failures: int, delay: float) -> None:
    assert Backoff().delay(failures) == delay
