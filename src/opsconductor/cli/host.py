"""What a tenant may reach on this host: the local execution capability (an installation
admin's decision, always taken here, never through a login) and the tenant's files root."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsconductor.cli.inventory import tenant_app
from opsconductor.cli.runtime import Local, fail, local, out, run
from opsconductor.config import Settings, load_settings
from opsconductor.connectors import tenant_files
from opsconductor.errors import OpsError
from opsconductor.services import inventory

files_app = typer.Typer(
    help="The tenant's files root: sources of file steps, fetched copies.", no_args_is_help=True
)


@tenant_app.command("local-exec")
def tenant_local_exec(
    state: Annotated[str, typer.Argument(help="on or off")],
    network: Annotated[
        bool,
        typer.Option(
            "--network/--no-network",
            help="Keep the host's network in the sandbox (loopback too: the database is there)",
        ),
    ] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant (default: $OPSC_TENANT)")
    ] = None,
) -> None:
    """Installation admin: let a tenant's local steps run (sandboxed) on this host, or not."""
    if state not in ("on", "off"):
        raise fail("STATE: must be 'on' or 'off'")
    if network and state == "off":
        raise fail("--network: only with 'on'")

    async def work(settings: Settings) -> str:
        name = tenant or settings.tenant
        # Always the database as its local administrator, logged in elsewhere or not: no
        # token, whatever its roles, may grant a tenant the control plane's host.
        async with local(settings) as here:
            await inventory.set_local_execution(
                here.db, here.caller, name, on=state == "on", network=network
            )
        return name

    name = run(work)
    where = "with the host's network" if network else "without network"
    detail = f" (sandboxed as {load_settings().local_user!r}, {where})" if state == "on" else ""
    out.print(f"tenant {name}: local execution {state}{detail}", highlight=False)


async def bootstrap_local_exec(here: Local) -> None:
    """``opsc run`` on the single-user install (embedded database, tenant 'default') may let
    its own tenant run local steps, once, if nobody ever decided otherwise; it says so."""
    if here.settings.database_url is not None or here.caller.tenant_id != "default":
        return
    if await inventory.bootstrap_local_execution(here.db, here.caller):
        out.print(
            "note: local execution is now on for tenant 'default' (single-user embedded "
            f"install): local steps run sandboxed as {here.settings.local_user!r} without "
            "network; 'opsc tenant local-exec off' turns it off",
            highlight=False,
        )


@files_app.command("put")
def files_put(
    file: Annotated[Path, typer.Argument(help="The file to copy in")],
    name: Annotated[
        str | None, typer.Argument(help="Its name in the files root (default: its own)")
    ] = None,
) -> None:
    """Copy a file into this tenant's files root, where file steps read their src."""
    settings = load_settings()
    root = settings.files_root / settings.tenant
    try:
        landed = tenant_files.put(root, file, name)
    except OpsError as exc:
        raise fail(str(exc), exc.exit_code) from None
    out.print(f"{landed} (src: {landed.relative_to(root.resolve())})", highlight=False)


@files_app.command("list")
def files_list() -> None:
    """The files of this tenant's files root (src of file steps, fetched copies)."""
    settings = load_settings()
    root = settings.files_root / settings.tenant
    out.print(f"files root of tenant {settings.tenant}: {root}", highlight=False)
    for relative, size in tenant_files.listing(root):
        out.print(f"  {relative}  {size} bytes", highlight=False)
