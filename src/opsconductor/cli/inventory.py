"""The tenant's inventory, its trusted SSH host keys and its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import asyncssh
import typer

from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.db.connectors import HOST_KEY_POLICIES
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.inventory_import import parse_inventory
from opsconductor.services import inventory

assets_app = typer.Typer(help="The inventory of assets plans can target.", no_args_is_help=True)
hosts_app = typer.Typer(help="Trusted SSH host keys of the tenant.", no_args_is_help=True)
tenant_app = typer.Typer(help="Settings of the current tenant.", no_args_is_help=True)

Row = dict[str, Any]


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--tag {item!r}: use KEY=VALUE")
        tags[key] = value
    return tags


def _asset_body(asset: Asset) -> Row:
    return {
        "asset_id": asset.asset_id,
        "hostname": asset.hostname,
        "address": asset.address,
        "environment": asset.environment,
        "connection_type": asset.connection_type,
        "port": asset.port,
        "os": asset.os,
        "tags": asset.tags,
        "username": asset.username,
        "credential_ref": asset.credential_ref,
    }


@assets_app.command("add")
def assets_add(
    asset_id: Annotated[str, typer.Argument(help="Unique id, e.g. web-1")],
    hostname: Annotated[str | None, typer.Option(help="Defaults to the id")] = None,
    address: Annotated[str | None, typer.Option(help="Defaults to the hostname")] = None,
    environment: Annotated[str, typer.Option(help="dev, staging, prod, ...")] = "dev",
    connection: Annotated[str, typer.Option(help="local or ssh")] = "local",
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    os_name: Annotated[str | None, typer.Option("--os")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    username: Annotated[str | None, typer.Option(help="SSH login name")] = None,
    credential_ref: Annotated[
        str | None, typer.Option(help="env:NAME or file:/path holding a password or key")
    ] = None,
) -> None:
    """Add an asset to the inventory."""
    if connection not in ("local", "ssh"):
        raise fail("--connection: must be 'local' or 'ssh'")

    async def work(settings: Settings) -> Asset:
        asset = Asset(
            asset_id=asset_id,
            hostname=hostname or asset_id,
            address=address or hostname or asset_id,
            environment=environment,
            connection_type=connection,
            port=port,
            os=os_name,
            tags=_tags(tag or []),
            username=username,
            credential_ref=credential_ref,
        )
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("POST", "/assets", json_body=_asset_body(asset))
                return asset
            return await inventory.add_asset(s.db, s.caller, asset)

    added = run(work)
    out.print(f"added {added.asset_id} ({added.hostname}, {added.environment})")


@assets_app.command("import")
def assets_import(
    inventory_file: Annotated[Path, typer.Argument(help="Our YAML, or an Ansible INI/YAML")],
    environment: Annotated[str, typer.Option(help="Where the file names none")] = "dev",
) -> None:
    """Add or update assets from an inventory file (re-running it updates, never doubles)."""
    try:
        text = inventory_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{inventory_file}: cannot read: {exc.strerror}") from None

    async def work(settings: Settings) -> tuple[int, int]:
        found = parse_inventory(text, str(inventory_file), environment)
        async with session(settings) as s:
            if isinstance(s, Remote):
                added = updated = 0
                known = {a["asset_id"] for a in await s.api.get("/assets")}
                for a in found:
                    if a.asset_id in known:
                        body = {k: v for k, v in _asset_body(a).items() if k != "asset_id"}
                        await s.api.call("PUT", f"/assets/{a.asset_id}", json_body=body)
                        updated += 1
                    else:
                        await s.api.call("POST", "/assets", json_body=_asset_body(a))
                        added += 1
                return added, updated
            return await inventory.import_assets(s.db, s.caller, found)

    added, updated = run(work)
    out.print(f"imported {added + updated} assets ({added} new, {updated} updated)")


@assets_app.command("list")
def assets_list() -> None:
    """The inventory of the current tenant."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/assets")
                return found
            return [_asset_body(a) for a in await inventory.list_assets(s.db, s.caller)]

    rows = []
    for a in run(work):
        tags = ", ".join(f"{k}={v}" for k, v in sorted((a.get("tags") or {}).items()))
        login = ""
        if a["connection_type"] == "ssh":
            login = f"{a['username'] or '(worker user)'}@:{a['port'] or 22}"
            login += f" via {a['credential_ref']}" if a["credential_ref"] else ""
        rows.append(
            [
                a["asset_id"],
                a["hostname"],
                a["address"],
                a["environment"],
                a["connection_type"],
                login,
                tags,
            ]
        )
    render.table(["id", "hostname", "address", "environment", "connection", "login", "tags"], rows)


@assets_app.command("remove")
def assets_remove(asset_id: str) -> None:
    """Remove an asset from the inventory."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/assets/{asset_id}")
            else:
                await inventory.remove_asset(s.db, s.caller, asset_id)

    run(work)
    out.print(f"removed {asset_id}")


@hosts_app.command("add")
def known_hosts_add(
    host: Annotated[str, typer.Argument(help="Address as the assets give it")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 22,
    key: Annotated[
        str | None, typer.Option(help="'ssh-ed25519 AAAA...' (else --scan asks the host)")
    ] = None,
    scan: Annotated[bool, typer.Option(help="Fetch the key from the host and trust it")] = False,
) -> None:
    """Trust an SSH host key for host:port. Compare the printed fingerprint out of band."""
    if (key is None) == (not scan):
        raise fail("give exactly one of --key or --scan")

    async def work(settings: Settings) -> str:
        public = key or await _scan(host, port)
        try:
            fingerprint = asyncssh.import_public_key(public).get_fingerprint()
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise BadInput(f"--key: not an OpenSSH public key: {exc}") from None
        async with session(settings) as s:
            if isinstance(s, Remote):
                body = {"host": host, "port": port, "public_key": public}
                await s.api.call("POST", "/known-hosts", json_body=body)
            else:
                await inventory.trust_host_key(s.db, s.caller, host, port, public)
        return str(fingerprint)

    out.print(f"trusted {host}:{port} {run(work)}")


async def _scan(host: str, port: int) -> str:
    try:
        found = await asyncssh.get_server_host_key(host, port)
    except (OSError, asyncssh.Error) as exc:
        raise BadInput(f"{host}:{port}: cannot fetch the host key: {exc}") from None
    if found is None:
        raise BadInput(f"{host}:{port}: the server offered no host key")
    return str(found.export_public_key().decode().strip())


@hosts_app.command("list")
def known_hosts_list() -> None:
    """Trusted host keys of the current tenant."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/known-hosts")
                return found
            return await inventory.known_hosts(s.db, s.caller)

    rows = []
    for row in run(work):
        fingerprint = asyncssh.import_public_key(str(row["public_key"])).get_fingerprint()
        rows.append([str(row["host"]), str(row["port"]), fingerprint, str(row["added_by"])])
    render.table(["host", "port", "fingerprint", "added by"], rows)


@hosts_app.command("remove")
def known_hosts_remove(
    host: Annotated[str, typer.Argument(help="Address as the assets give it")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 22,
) -> None:
    """Forget every trusted key of host:port (after a host key rotation, say)."""

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/known-hosts/{host}", params={"port": port})
                return f"removed the keys of {host}:{port}"
            removed = await inventory.forget_host(s.db, s.caller, host, port)
            return f"removed {removed} key(s) of {host}:{port}"

    out.print(run(work))


async def _patch_tenant(settings: Settings, **change: Any) -> str:
    async with session(settings) as s:
        if isinstance(s, Remote):
            found = (await s.api.call("PATCH", "/tenant", json_body=change))[1]
            return str(found["tenant_id"])
        if "record_only" in change:
            await inventory.set_record_only(s.db, s.caller, change["record_only"])
        if "host_key_policy" in change:
            await inventory.set_host_key_policy(s.db, s.caller, change["host_key_policy"])
        return s.caller.tenant_id


@tenant_app.command("record-only")
def tenant_record_only(state: Annotated[str, typer.Argument(help="on or off")]) -> None:
    """Dark launch for the whole tenant: every run is resolved and recorded, nothing touched."""
    if state not in ("on", "off"):
        raise fail("STATE: must be 'on' or 'off'")

    async def work(settings: Settings) -> str:
        return await _patch_tenant(settings, record_only=state == "on")

    out.print(f"tenant {run(work)}: record-only {state}")


@tenant_app.command("host-keys")
def tenant_host_keys(
    policy: Annotated[str, typer.Argument(help="strict (default) or accept-new")],
) -> None:
    """Host key policy: accept-new trusts and records the first key of an unknown host."""
    if policy not in HOST_KEY_POLICIES:
        raise fail("POLICY: must be 'strict' or 'accept-new'")

    async def work(settings: Settings) -> str:
        return await _patch_tenant(settings, host_key_policy=policy)

    out.print(f"tenant {run(work)}: host keys {policy}")
