"""The tenant's inventory, its trusted SSH host keys and its settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, Session, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.db.connectors import HOST_KEY_POLICIES
from opsconductor.errors import BadInput
from opsconductor.host_keys import HostKey
from opsconductor.inventory import Asset
from opsconductor.services import inventory

if TYPE_CHECKING:  # YAML parsing: the import command only
    from opsconductor.inventory_ansible import Parsed
    from opsconductor.inventory_import import ImportPlan

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
        "proxy_jump": asset.proxy_jump,
        "vars": dict(asset.vars),
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
    proxy_jump: Annotated[
        str | None, typer.Option(help="Asset id of the SSH bastion to reach it through")
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
            proxy_jump=proxy_jump,
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
    update: Annotated[
        bool, typer.Option(help="Replace existing assets the file changes (else: shown only)")
    ] = False,
) -> None:
    """Add assets from an inventory file; existing ones it would change are shown as a diff
    and replaced only with --update. What is not applied is printed as warnings."""
    try:
        text = inventory_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{inventory_file}: cannot read: {exc.strerror}") from None

    from opsconductor.inventory_import import read_inventory  # YAML: this command only

    async def work(settings: Settings) -> ImportPlan:
        parsed = read_inventory(text, str(inventory_file), environment)
        async with session(settings) as s:
            if isinstance(s, Remote):
                return await _import_remote(s, parsed, update)
            return await inventory.import_assets(s.db, s.caller, parsed, update=update)

    plan = run(work)
    for warning in plan.warnings:
        out.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    for asset_id, (_, changes) in sorted(plan.changed.items()):
        out.print(f"{'updated' if update else 'would update'} {asset_id}:", highlight=False)
        for change in changes:
            out.print(f"  {change}", highlight=False, markup=False, soft_wrap=True)
    updated = len(plan.changed) if update else 0
    summary = (
        f"imported {len(plan.new) + updated} assets ({len(plan.new)} new, {updated} updated, "
        f"{len(plan.unchanged)} unchanged)"
    )
    if plan.changed and not update:
        summary += f"; {len(plan.changed)} existing assets differ: re-run with --update"
    out.print(summary, highlight=False, soft_wrap=True)


async def _import_remote(s: Remote, parsed: Parsed, update: bool) -> ImportPlan:
    """The same import over the API: key files stay on this machine, so none is imported."""
    import dataclasses

    from opsconductor.inventory_import import plan_import

    rows = await s.api.get("/assets")
    existing = {r["asset_id"]: Asset(**{k: r.get(k) or _empty(k) for k in _FIELDS}) for r in rows}
    plan = plan_import(existing, parsed.assets)
    for a in plan.new:
        await s.api.call("POST", "/assets", json_body=_asset_body(a))
    if update:
        for a, _ in plan.changed.values():
            body = {k: v for k, v in _asset_body(a).items() if k != "asset_id"}
            await s.api.call("PUT", f"/assets/{a.asset_id}", json_body=body)
    keys = [
        f"{asset_id}: key file {key}: not imported over the API (the files root is the "
        "server's): 'opsc files put' it there and set credential_ref file:NAME"
        for asset_id, key in sorted(parsed.key_files.items())
    ]
    return dataclasses.replace(plan, warnings=parsed.warnings + keys + plan.warnings)


_FIELDS = Asset.__dataclass_fields__


def _empty(name: str) -> Any:
    return {} if name in ("tags", "vars") else None


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
            login += f" jump {a['proxy_jump']}" if a.get("proxy_jump") else ""
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
    """Trust a first SSH host key for host:port. Compare the printed fingerprint out of band.
    A host with a different key stored is refused (HOST KEY CHANGED): see `replace`."""
    if (key is None) == (not scan):
        raise fail("give exactly one of --key or --scan")

    async def work(settings: Settings) -> tuple[HostKey, bool]:
        async with session(settings) as s:
            found = await _host_key(s, host, port, key)
            if isinstance(s, Remote):
                body = {"host": host, "port": port, "public_key": found.text}
                status, _ = await s.api.call("POST", "/known-hosts", json_body=body)
                return found, status == 201
            trusted = await inventory.trust_host_key(
                s.db, s.caller, host, port, found.text, via=_via(key)
            )
            return found, trusted.added

    found, added = run(work)
    state = "trusted" if added else "already trusted:"
    out.print(f"{state} {host}:{port} {found.fingerprint} ({found.key_type})", highlight=False)


@hosts_app.command("replace")
def known_hosts_replace(
    host: Annotated[str, typer.Argument(help="Address as the assets give it")],
    fingerprint: Annotated[
        str,
        typer.Option(
            help="SHA256:... of the new key, as you verified it on the host itself "
            "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)"
        ),
    ],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 22,
    key: Annotated[str | None, typer.Option(help="'ssh-ed25519 AAAA...' (else --scan)")] = None,
    scan: Annotated[bool, typer.Option(help="Fetch the new key from the host")] = False,
    keep_other_types: Annotated[
        bool, typer.Option(help="Replace only the stored key of the new key's type")
    ] = False,
) -> None:
    """Replace host:port's stored key(s) after a rotation or re-install; audited."""
    if (key is None) == (not scan):
        raise fail("give exactly one of --key or --scan")

    async def work(settings: Settings) -> tuple[list[str], HostKey, bool]:
        async with session(settings) as s:
            found = await _host_key(s, host, port, key)
            if isinstance(s, Remote):
                body = {
                    "port": port,
                    "public_key": found.text,
                    "fingerprint": fingerprint,
                    "keep_other_types": keep_other_types,
                }
                _, done = await s.api.call("PUT", f"/known-hosts/{host}", json_body=body)
                old = list(done["old_fingerprints"])
                return old, found, done["audit_event_id"] is not None
            replaced = await inventory.replace_host_key(
                s.db,
                s.caller,
                host,
                port,
                found.text,
                fingerprint,
                keep_other_types=keep_other_types,
                via=_via(key),
            )
            return [k.fingerprint for k in replaced.old], found, replaced.event_id is not None

    old, new, changed = run(work)
    if not changed:
        out.print(f"{host}:{port} already has exactly {new.describe()}", highlight=False)
        return
    gone = ", ".join(old) or "nothing"
    out.print(
        f"replaced {host}:{port} {gone} -> {new.fingerprint} ({new.key_type})", highlight=False
    )


def _via(key: str | None) -> str:
    return "key" if key is not None else "scan"


async def _host_key(s: Session, host: str, port: int, key: str | None) -> HostKey:
    """The key given, or the one the host presents, asked for the stored types first."""
    from opsconductor.connectors import ssh  # asyncssh: only to scan a host

    if key is not None:
        return inventory.parse_host_key(key)
    if isinstance(s, Remote):
        rows: list[Row] = await s.api.get("/known-hosts")
    else:
        rows = await inventory.known_hosts(s.db, s.caller)
    stored = [
        HostKey.parse(str(r["public_key"]))
        for r in rows
        if r["host"] == host and int(r["port"]) == port
    ]
    try:
        return await ssh.scan_host_key(host, port, stored)
    except ssh.SshError as exc:
        raise BadInput(str(exc)) from None


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
        found = HostKey.parse(str(row["public_key"]))
        rows.append(
            [
                str(row["host"]),
                str(row["port"]),
                found.key_type,
                found.fingerprint,
                str(row["added_by"]),
            ]
        )
    render.table(["host", "port", "type", "fingerprint", "added by"], rows)


@hosts_app.command("remove")
def known_hosts_remove(
    host: Annotated[str, typer.Argument(help="Address as the assets give it")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 22,
) -> None:
    """Forget every trusted key of host:port (a decommissioned host; a rotation is `replace`)."""

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
