"""Who is who: ``opsc login``/``logout``/``whoami``, API tokens, roles and bindings."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

from opsconductor.cli import remote, render
from opsconductor.cli.runtime import Remote, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.errors import OpsError
from opsconductor.services import access

app = typer.Typer()
tokens_app = typer.Typer(help="API tokens (bearer), bound to an actor.", no_args_is_help=True)
roles_app = typer.Typer(help="Roles and role bindings (RBAC).", no_args_is_help=True)

Row = dict[str, Any]


def _read_token() -> str:
    """From stdin when piped, else a hidden prompt: never from argv (``ps``, shell history)."""
    if not sys.stdin.isatty():
        return sys.stdin.read().strip()
    token: str = typer.prompt("API token", hide_input=True)
    return token.strip()


@app.command()
def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8080")],
) -> None:
    """Act as an API token's actor from now on: every command goes through that server.
    The token is read from stdin or a hidden prompt and kept in a file only you can read."""
    token = _read_token()
    if not token:
        raise fail("no token given (pipe it in, or type it at the prompt)")
    login_ = remote.Login(url.rstrip("/"), token)

    import httpx

    async def check() -> Row:
        async with remote.Api(login_, timeout=15) as api:
            found: Row = await api.get("/me")
            return found

    try:
        me = asyncio.run(check())
    except (OpsError, httpx.HTTPError) as exc:
        raise fail(f"login refused: {exc}") from None
    path = remote.save_login(login_)
    out.print(
        f"logged in to {url} as {me['actor_id']} in tenant {me['tenant_id']} "
        f"(roles: {', '.join(me['roles']) or 'none'}); token kept in {path} (mode 0600)",
        highlight=False,
    )


@app.command()
def logout() -> None:
    """Forget the stored login: commands act on the local database again (if any)."""
    out.print("logged out" if remote.forget_login() else "was not logged in")


@app.command()
def whoami() -> None:
    """Who this shell acts as: a login's actor, or the local administrator."""

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: Row = await s.api.get("/me")
                return {**found, "via": f"token, {s.api.login.url}"}
            return {
                "actor_id": s.caller.actor_id,
                "tenant_id": s.caller.tenant_id,
                "roles": [r.name for r in s.caller.roles],
                "via": "local administrator (database)",
            }

    me = run(work)
    out.print(
        f"{me['actor_id']} in tenant {me['tenant_id']} (roles: "
        f"{', '.join(me['roles']) or 'none'}; via {me['via']})",
        highlight=False,
    )


@tokens_app.command("create")
def tokens_create(
    actor: Annotated[str, typer.Argument(help="The actor the token acts as")],
    role: Annotated[
        list[str] | None, typer.Option(help="Also grant this role (repeatable)")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the token")] = "",
) -> None:
    """Create an API token for ACTOR in the tenant; it is shown once, stored hashed."""

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                body = {"actor_id": actor, "name": name, "roles": role or []}
                found: Row = (await s.api.call("POST", "/tokens", json_body=body))[1]
                return {**found, "tenant_id": (await s.api.get("/me"))["tenant_id"]}
            made = await access.create_token(s.db, s.caller, actor, name=name, roles=role)
            return {
                "token_id": made.token_id,
                "actor_id": made.actor_id,
                "tenant_id": made.tenant_id,
                "token": made.token,
            }

    made = run(work)
    out.print(f"token id {made['token_id']} for {made['actor_id']} in tenant {made['tenant_id']}:")
    out.print(made["token"], highlight=False, soft_wrap=True)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token id")]) -> None:
    """Revoke a token at once; requests with it answer 401 from now on."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/tokens/{token_id}")
            else:
                await access.revoke_token(s.db, s.caller, token_id)

    run(work)
    out.print(f"revoked {token_id}")


@tokens_app.command("list")
def tokens_list() -> None:
    """Tokens of the tenant (never their values)."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/tokens")
                return found
            return await access.list_tokens(s.db, s.caller)

    rows = []
    for row in run(work):
        revoked = f"{row['revoked_at']:%Y-%m-%d %H:%M:%S}" if row["revoked_at"] else ""
        rows.append(
            [
                str(row["token_id"]),
                row["actor_id"],
                row["name"],
                f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
                revoked,
            ]
        )

    render.table(["token id", "actor", "name", "created", "revoked"], rows)


@roles_app.command("list")
def roles_list() -> None:
    """Roles of the tenant with their permissions, and who holds them."""

    async def work(settings: Settings) -> tuple[list[Row], dict[str, list[str]]]:
        holders: dict[str, list[str]] = {}
        async with session(settings) as s:
            if isinstance(s, Remote):
                roles: list[Row] = await s.api.get("/roles")
                for b in await s.api.get("/role-bindings"):
                    for name in b["roles"]:
                        holders.setdefault(name, []).append(b["actor_id"])
                return roles, holders
            seen = await access.roles(s.db, s.caller)
            for row in seen.bindings:
                holders.setdefault(row["role_name"], []).append(row["actor_id"])
            return [
                {
                    "name": r.name,
                    "builtin": r.builtin,
                    "permissions": [str(p) for p in r.permissions],
                }
                for r in seen.roles
            ], holders

    roles, holders = run(work)

    render.table(
        ["role", "permissions", "held by"],
        [
            [
                r["name"] + ("" if r["builtin"] else " (custom)"),
                ", ".join(r["permissions"]),
                ", ".join(holders.get(r["name"], [])),
            ]
            for r in roles
        ],
    )


@roles_app.command("grant")
def roles_grant(actor: str, role: str) -> None:
    """Bind ROLE to ACTOR in the tenant."""

    async def work(settings: Settings) -> bool:
        async with session(settings) as s:
            if isinstance(s, Remote):
                before = (await s.api.get(f"/actors/{actor}/roles"))["roles"]
                await s.api.call("PUT", f"/actors/{actor}/roles/{role}")
                return role not in before
            return await access.grant(s.db, s.caller, actor, role)

    new = run(work)
    out.print(f"{actor} {'now holds' if new else 'already held'} {role}")


@roles_app.command("revoke")
def roles_revoke(actor: str, role: str) -> None:
    """Unbind ROLE from ACTOR; steps not yet started are checked against the new roles."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/actors/{actor}/roles/{role}")
            else:
                await access.revoke(s.db, s.caller, actor, role)

    run(work)
    out.print(f"{actor} no longer holds {role}")


@roles_app.command("define")
def roles_define(
    name: str,
    allow: Annotated[
        list[str], typer.Option(help="resource:action[@env,...], repeatable, e.g. steps:read@dev")
    ],
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Define a custom role of the tenant."""

    async def work(settings: Settings) -> list[str]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                body = {"name": name, "permissions": allow, "description": description}
                found: list[str] = (await s.api.call("POST", "/roles", json_body=body))[1][
                    "permissions"
                ]
                return found
            role = await access.define_role(s.db, s.caller, name, allow, description)
            return [str(p) for p in role.permissions]

    out.print(f"defined {name}: {', '.join(run(work))}")


@roles_app.command("delete")
def roles_delete(name: str) -> None:
    """Delete a custom role and every binding to it."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/roles/{name}")
            else:
                await access.delete_role(s.db, s.caller, name)

    run(work)
    out.print(f"deleted {name}")
