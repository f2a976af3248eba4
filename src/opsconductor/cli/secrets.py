"""The built-in secret store (write-only) and the tenant's masking patterns."""

from __future__ import annotations

import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, local, out, run, session
from opsconductor.config import Settings
from opsconductor.services import secrets

secrets_app = typer.Typer(
    help="Secrets in the built-in encrypted store (write-only: values are never shown).",
    no_args_is_help=True,
)
masking_app = typer.Typer(
    help="The tenant's own masking patterns, added to the built-in ones.", no_args_is_help=True
)

Row = dict[str, Any]


def _read_secret_value(path: str) -> str:
    """From stdin when piped (never from argv: that shows in ``ps`` and shell history)."""
    if not sys.stdin.isatty():
        value = sys.stdin.read()
        return value[:-1] if value.endswith("\n") else value
    prompted: str = typer.prompt(f"value for {path}", hide_input=True, confirmation_prompt=True)
    return prompted


@secrets_app.command("set")
def secrets_set(path: Annotated[str, typer.Argument(help="e.g. kv/web/deploy-token")]) -> None:
    """Store a secret (value from stdin, or a hidden prompt); plans use {secret: PATH}."""
    value = _read_secret_value(path)

    async def work(settings: Settings) -> bool:
        async with session(settings) as s:
            if isinstance(s, Remote):
                status, _ = await s.api.call(
                    "PUT", f"/secrets/{quote(path)}", json_body={"value": value}
                )
                return status == 201
            return await secrets.put(s.db, s.caller, settings.home, path, value)

    created = run(work)
    out.print(f"{'stored' if created else 'replaced'} secret {path}", highlight=False)


@secrets_app.command("list")
def secrets_list() -> None:
    """Paths of the stored secrets (never their values)."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/secrets")
                return found
            return await secrets.list_paths(s.db, s.caller)

    render.table(
        ["path", "key id", "updated", "by"],
        [
            [r["path"], r["key_id"], f"{r['updated_at']:%Y-%m-%d %H:%M:%S}", r["updated_by"]]
            for r in run(work)
        ],
    )


@secrets_app.command("delete")
def secrets_delete(path: str) -> None:
    """Delete a stored secret."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/secrets/{quote(path)}")
            else:
                await secrets.delete(s.db, s.caller, path)

    run(work)
    out.print(f"deleted secret {path}", highlight=False)


@secrets_app.command("rotate-key")
def secrets_rotate_key() -> None:
    """Re-seal every stored secret under a new master key ($OPSC_HOME/secret.key). The
    installation's administrator only: it works on the server's key file."""

    async def work(settings: Settings) -> int:
        async with local(settings) as here:
            return await secrets.rotate_key(here.db, here.caller, settings.home)

    out.print(f"new key in place; {run(work)} secret(s) re-sealed")


@masking_app.command("add")
def masking_add(
    name: Annotated[str, typer.Argument(help="e.g. ticket-id")],
    pattern: Annotated[str, typer.Argument(help="Python regular expression")],
) -> None:
    """Mask every match of PATTERN in this tenant's output, events and logs."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call(
                    "PUT", f"/masking-patterns/{quote(name)}", json_body={"pattern": pattern}
                )
            else:
                await secrets.add_pattern(s.db, s.caller, name, pattern)

    run(work)
    out.print(f"masking pattern {name} saved", highlight=False)


@masking_app.command("list")
def masking_list() -> None:
    """The tenant's masking patterns."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/masking-patterns")
                return found
            return await secrets.patterns(s.db, s.caller)

    render.table(
        ["name", "pattern", "by"], [[r["name"], r["pattern"], r["created_by"]] for r in run(work)]
    )


@masking_app.command("remove")
def masking_remove(name: str) -> None:
    """Remove one of the tenant's masking patterns."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/masking-patterns/{quote(name)}")
            else:
                await secrets.remove_pattern(s.db, s.caller, name)

    run(work)
    out.print(f"removed masking pattern {name}", highlight=False)
