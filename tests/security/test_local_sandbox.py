"""Where a tenant may run local steps, they run sandboxed as an unprivileged user and reach
nothing of the control plane: not ``$OPSC_HOME`` and its key, not PostgreSQL (socket, data
directory, loopback port), not another tenant's working directory, not the server's
environment. Each test runs the attack for real on this machine and looks at the result."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from opsconductor import keyring
from opsconductor.connectors import sandbox
from opsconductor.db.connection import Database
from opsconductor.status_machine import Status
from tests.safety_support import sandbox_of, wait_for_file
from tests.security.local_support import command, needs_sandbox, run, script, tenant

pytestmark = needs_sandbox


async def test_steps_run_as_the_unprivileged_user_without_capabilities(db: Database) -> None:
    await tenant(db, "ta", local=True)
    ran = await run(
        db,
        "ta",
        command("id -u; id -un; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"),
    )
    assert ran.status is Status.COMPLETED, ran.text
    uid, name, groups, eff, bounding, no_new = ran.rows[0].output.split("\n")[:6]
    user = pwd.getpwnam("opsc-run")
    assert uid == str(user.pw_uid) != "0" and name == "opsc-run"
    assert groups == str(user.pw_gid)  # its own group only
    assert eff.split() == ["CapEff:", "0000000000000000"]
    assert bounding.split() == ["CapBnd:", "0000000000000000"]  # cannot regain any
    assert no_new.split() == ["NoNewPrivs:", "1"]  # a setuid binary gives nothing back


async def test_the_step_cannot_read_opsc_home_or_the_key(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("OPSC_HOME", str(home))
    monkeypatch.delenv("OPSC_WORK_ROOT")  # the default layout: $OPSC_HOME/work/<tenant>
    monkeypatch.delenv("OPSC_SECRET_KEY", raising=False)
    key = keyring.load(home)  # creates $OPSC_HOME/secret.key, as the server does
    key_file = home / keyring.KEY_FILE
    secret = key_file.read_text().strip()
    await tenant(db, "ta", local=True)

    ran = await run(
        db,
        "ta",
        command(
            f"ls -a {home}; cat {key_file}; cat $HOME/../../secret.key; "
            f"find / -name secret.key 2>/dev/null; echo done"
        ),
    )
    assert secret not in ran.text and key.current.key_id not in ran.text
    listing = ran.rows[0].output.split("\n")
    assert listing[:3] == [".", "..", "work"]  # $OPSC_HOME is empty but for the way in
    assert ran.rows[0].stderr.count("such file or directory") == 2  # both cat failed
    assert "secret.key" not in ran.rows[0].output  # find saw none anywhere


def _visible_here(*paths: str) -> bool:
    return all(os.path.exists(path) for path in paths)


def _postgres(database_url: str) -> tuple[str, str, int]:
    with psycopg.connect(database_url) as conn:
        (sockets,) = conn.execute("SHOW unix_socket_directories").fetchone() or ("",)
        (datadir,) = conn.execute("SHOW data_directory").fetchone() or ("",)
        (port,) = conn.execute("SHOW port").fetchone() or ("",)
    return str(sockets).split(",")[0].strip(), str(datadir), int(port)


async def test_the_step_cannot_reach_postgresql(db: Database, database_url: str) -> None:
    socket_dir, datadir, port = _postgres(database_url)
    socket = f"{socket_dir}/.s.PGSQL.{port}"
    assert _visible_here(socket, datadir)  # there to be attacked, from outside the sandbox
    dbname = conninfo_to_dict(database_url).get("dbname")
    await tenant(db, "ta", local=True)
    probe = f"""
test -e {socket} && echo SOCKET-VISIBLE
ls {datadir} && echo DATADIR-READABLE
cat {datadir}/PG_VERSION && echo DATADIR-READABLE
psql -h {socket_dir} -p {port} -U postgres -d {dbname} -Atc 'select 42' && echo SOCKET-QUERY
psql -h 127.0.0.1 -p {port} -U postgres -d {dbname} -Atc 'select 42' && echo TCP-QUERY
python3 -c "import socket; s = socket.socket(socket.AF_UNIX); s.connect('{socket}')" \\
    && echo SOCKET-CONNECT
python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), 3)" \\
    && echo TCP-CONNECT
echo probed
"""
    ran = await run(db, "ta", script(probe))
    assert "probed" in ran.rows[0].output, ran.text
    for opened in ("VISIBLE", "READABLE", "QUERY", "CONNECT"):
        assert opened not in ran.rows[0].output, ran.text
    assert "42" not in ran.rows[0].output


async def test_the_network_opt_in_reaches_the_host_loopback(
    db: Database, database_url: str
) -> None:
    """The honest counterpart (README): with --network the sandbox shares the host's
    network, loopback included, so the same probe reaches the database's port. This also
    shows the probe above is not vacuous."""
    _, _, port = _postgres(database_url)
    await tenant(db, "tn", local=True, network=True)
    probe = (
        f"import socket; socket.create_connection(('127.0.0.1', {port}), 3); print('TCP-CONNECT')"
    )
    ran = await run(db, "tn", command(f'python3 -c "{probe}"'))
    assert "TCP-CONNECT" in ran.rows[0].output, ran.text


async def test_another_tenants_working_directory_is_out_of_sight(
    db: Database, tmp_path: Path
) -> None:
    await tenant(db, "ta", local=True)
    await tenant(db, "tc", local=True)
    secret = f"secret-of-tc-{uuid.uuid4().hex}"
    wrote = await run(db, "tc", command(f"echo {secret} > $HOME/notes; pwd"))
    assert wrote.status is Status.COMPLETED, wrote.text
    theirs = Path(wrote.rows[0].output.strip())
    assert theirs == tmp_path / "work" / "tc" and (theirs / "notes").read_text().strip() == secret

    ran = await run(
        db,
        "ta",
        command(f"cat {theirs}/notes; ls {theirs.parent}; cat $HOME/../tc/notes; echo done"),
    )
    assert secret not in ran.text
    assert ran.rows[0].output.split() == ["ta", "done"]  # its own directory, nothing else


async def test_the_servers_environment_never_reaches_the_step(
    db: Database, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"server-env-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPSC_ENV_MARKER", marker)  # this process plays the worker
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres:{marker}@127.0.0.1/x")
    started = work_dir / f"started-{uuid.uuid4().hex}"
    probe = (
        f"env; cat /proc/1/environ; cat /proc/{os.getpid()}/environ; "
        "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; "
        f"echo up > {started}; sleep 2; echo done"
    )
    running = asyncio.create_task(run(db, "default", command(probe, env={"MINE": "step-value"})))
    await wait_for_file(started)
    # Seen from the host while it runs: bwrap (the sandbox's PID 1 and its parent) was
    # started with an empty environment; the step's processes hold only the step's.
    namespace = sandbox_of(str(started))
    for pid in _pids_of(str(started)):
        environ = _environ(pid)
        assert marker.encode() not in environ
        if os.readlink(f"/proc/{pid}/exe").endswith("bwrap"):
            assert environ == b"", (pid, environ)
    assert namespace
    ran = await running
    assert ran.rows[0].output.rstrip().endswith("done"), ran.text
    assert marker not in ran.text and "DATABASE_URL" not in ran.text
    names = {line.split("=", 1)[0] for line in ran.rows[0].output.splitlines() if "=" in line}
    assert "MINE" in names and "PATH" in names and "HOME" in names
    assert not {"DATABASE_URL", "OPSC_SECRET_KEY", "OPSC_ENV_MARKER", "TEST_DATABASE_URL"} & names


def _environ(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return handle.read()


def _pids_of(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


async def test_the_step_writes_only_its_working_directory_and_a_private_tmp(
    db: Database, work_dir: Path
) -> None:
    host_tmp = Path("/tmp") / f"opsc-host-{uuid.uuid4().hex}"
    host_tmp.write_text("host")
    try:
        ran = await run(
            db,
            "default",
            command(
                f"ls /tmp; touch /usr/x /etc/x /x 2>&1; echo mine > $HOME/mine; "
                f"echo t > /tmp/t; cat {host_tmp}; echo done"
            ),
        )
    finally:
        host_tmp.unlink()
    out = ran.rows[0].output
    assert host_tmp.name not in out and "host" not in out.split()
    assert out.count("Read-only file system") == 2 and "cannot touch '/x'" in out
    assert out.rstrip().endswith("done")
    mine = work_dir / "mine"
    assert mine.read_text() == "mine\n" and mine.stat().st_uid == pwd.getpwnam("opsc-run").pw_uid
    assert not _visible_here("/tmp/t")  # the step's /tmp was its own


async def test_without_bubblewrap_local_steps_are_refused_not_run_bare(
    db: Database, work_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setattr(sandbox, "SYSTEM_PATH", str(empty))  # as on a host without bwrap
    marker = work_dir / "ran"
    ran = await run(db, "default", command(f"touch {marker}"))
    assert ran.status is Status.FAILED
    assert "bwrap is not installed" in ran.text and "apt-get install bubblewrap" in ran.text
    assert not marker.exists()


def test_a_worker_that_is_not_root_refuses_rather_than_run_as_itself(tmp_path: Path) -> None:
    """A real process with a non-root uid (it keeps the right to read files, so that it can
    load this Python): the check refuses and names the reason."""
    program = (
        "from pathlib import Path\n"
        "from opsconductor.connectors import sandbox\n"
        "from opsconductor.connectors.access import TenantAccess\n"
        f"access = TenantAccess('ta', Path('{tmp_path}/f'), Path('{tmp_path}/w'), True)\n"
        "try:\n"
        "    sandbox.check(access)\n"
        "except sandbox.SandboxUnavailable as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            sys.executable,
            "-c",
            program,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "needs this worker to run as root (it runs as uid 65534)" in result.stdout
    assert "refusing to run the step as the worker's own user" in result.stdout
    assert not (tmp_path / "w").exists()


def test_the_sandbox_user_must_not_be_root() -> None:
    with pytest.raises(sandbox.SandboxUnavailable, match="must be an unprivileged user"):
        sandbox.ensure_user("root")
