"""What every command needs: settings, the way to the data (server or database), the
caller, and turning our errors into one line on stderr and an exit code."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from rich.console import Console

from opsconductor import logs
from opsconductor.cli.remote import Api, load_login
from opsconductor.config import Settings, load_settings
from opsconductor.db import migrations
from opsconductor.db.connection import Database, database_url
from opsconductor.errors import OpsError
from opsconductor.services.caller import Caller, local_admin

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def run(work: Callable[[Settings], Coroutine[Any, Any, T]], *, fast_loop: bool = False) -> T:
    """Run async work; our errors become one line on stderr and their exit code.
    ``fast_loop``: on uvloop where it is installed (long-lived processes, ``opsc worker``)."""
    settings = load_settings()
    logs.configure()
    try:
        with asyncio.Runner(loop_factory=_fast_loop() if fast_loop else None) as runner:
            return runner.run(work(settings))
    except OpsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop, or None (asyncio's own) where it is not installed or turned off
    (``OPSC_EVENT_LOOP=asyncio``). A worker's time per execution is largely the event
    loop's (a task, futures, timers and socket waits per statement): on uvloop that part
    costs less (bench/RESULTS.md: worker CPU per drained execution)."""
    if os.environ.get("OPSC_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@asynccontextmanager
async def database(settings: Settings, *, max_size: int = 4) -> AsyncIterator[Database]:
    db = Database(database_url(settings), min_size=1, max_size=max_size)
    async with db:
        await migrations.migrate(db)  # zero set-up: a new database is ready on first use
        yield db


@dataclass(frozen=True)
class Local:
    """On the installation, without a login: the database directly, as its administrator
    (``local-admin:<unix user>``: whoever can read the database's credentials owns it)."""

    db: Database
    caller: Caller
    settings: Settings


@dataclass(frozen=True)
class Remote:
    """After ``opsc login``: every call through the REST API as the token's actor."""

    api: Api
    settings: Settings


Session = Local | Remote


@asynccontextmanager
async def session(settings: Settings) -> AsyncIterator[Session]:
    login = load_login()
    if login is not None:
        async with Api(login) as api:
            yield Remote(api, settings)
        return
    async with local(settings) as here:
        yield here


@asynccontextmanager
async def local(settings: Settings, *, max_size: int = 4) -> AsyncIterator[Local]:
    """The installation's own administration (migrations, workers, the master key): always
    the database and the local administrator, logged in elsewhere or not."""
    async with database(settings, max_size=max_size) as db:
        yield Local(db, await local_admin(db, settings.tenant), settings)
