"""``opsc inventory sync|sources``: dynamic inventory sources (inventory_sources.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, out, run, session
from opsconductor.config import Settings
from opsconductor.inventory_sources import plan_body, source_body
from opsconductor.services import inventory_sources as service

inventory_app = typer.Typer(
    help="Dynamic inventory sources: ansible-inventory, NetBox.", no_args_is_help=True
)
sources_app = typer.Typer(help="The tenant's inventory sources (tenant admins).")
inventory_app.add_typer(sources_app, name="sources", no_args_is_help=True)

Row = dict[str, Any]


@sources_app.command("add")
def sources_add(
    name: Annotated[str, typer.Argument(help="Its name, e.g. netbox or dc1")],
    kind: Annotated[str, typer.Option(help="ansible or netbox")],
    path: Annotated[
        str | None,
        typer.Option(help="ansible: inventory directory or plugin config in the files root"),
    ] = None,
    url: Annotated[str | None, typer.Option(help="netbox: https://netbox.example.com")] = None,
    token_ref: Annotated[
        str | None, typer.Option(help="netbox: the secret holding the API token (a path)")
    ] = None,
    environment: Annotated[str, typer.Option(help="Of its assets")] = "dev",
    every: Annotated[str | None, typer.Option(help="Sync on a schedule: 15m, 1h, 1d")] = None,
) -> None:
    """Add an inventory source (audited). Its assets appear at its first sync."""
    body: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "path": path,
        "url": url,
        "token_ref": token_ref,
        "environment": environment,
        "every": every,
    }

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: Row = (await s.api.call("POST", "/inventory/sources", json_body=body))[1]
                return found
            return source_body(await service.add_source(s.db, s.caller, **body))

    added = run(work)
    scheduled = f", every {added['every']}" if added["every"] else ""
    out.print(f"added inventory source {added['name']} ({added['kind']}{scheduled})")


@sources_app.command("list")
def sources_list() -> None:
    """The tenant's inventory sources, their schedule and their last sync."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/inventory/sources")
                return found
            return [source_body(x) for x in await service.list_sources(s.db, s.caller)]

    rows = []
    for x in run(work):
        counts = x.get("last_counts") or {}
        last = ""
        if x["last_sync_at"] is not None:
            last = f"{x['last_sync_at']:%Y-%m-%d %H:%M:%S} {x['last_result']}"
            if counts:
                last += " " + " ".join(f"{k} {v}" for k, v in counts.items())
        rows.append(
            [
                x["name"],
                x["kind"],
                x["path"] or x["url"] or "",
                x["environment"],
                x["every"] or "on demand",
                last,
                x["last_error"] or "",
            ]
        )
    render.table(["name", "kind", "from", "environment", "every", "last sync", "error"], rows)


@sources_app.command("remove")
def sources_remove(name: str) -> None:
    """Remove a source (audited); its assets stay, no longer synced."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/inventory/sources/{name}")
            else:
                await service.remove_source(s.db, s.caller, name)

    run(work)
    out.print(f"removed inventory source {name} (its assets stay)")


@inventory_app.command("sync")
def inventory_sync(
    name: Annotated[str, typer.Argument(help="The source")],
    dry_run: Annotated[bool, typer.Option(help="Show the diff, change nothing")] = False,
) -> None:
    """Sync the inventory with a source: assets added, changed and removed, with the fields."""

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                params = {"dry_run": "true" if dry_run else "false"}
                path = f"/inventory/sources/{name}/sync"
                found: Row = (await s.api.call("POST", path, params=params))[1]
                return found
            plan = await service.sync(s.db, s.caller, name, dry_run=dry_run)
            return plan_body(plan, applied=not dry_run)

    print_diff(run(work))


def print_diff(body: Row) -> None:
    def say(text: str) -> None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    applied = bool(body["applied"])
    for warning in body["warnings"]:
        say(f"warning: {warning}")
    for item in body["added"]:
        say(f"{'added' if applied else 'would add'} {item['asset_id']}:")
        for field, value in item["fields"].items():
            say(f"  {field}: {value!r}")
    for item in body["changed"]:
        say(f"{'changed' if applied else 'would change'} {item['asset_id']}:")
        for change in item["changes"]:
            say(f"  {change['field']}: {change['old']!r} -> {change['new']!r}")
    for item in body["removed"]:
        say(
            f"{'removed' if applied else 'would remove'} {item['asset_id']} "
            f"({item['hostname']}, {item['address']})"
        )
    counts = (
        f"{len(body['added'])} added, {len(body['changed'])} changed, "
        f"{len(body['removed'])} removed, {body['unchanged']} unchanged"
    )
    say(counts if applied else f"dry run: {counts}; nothing applied")
