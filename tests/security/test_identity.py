"""Identity comes from a credential: nobody acts as someone else by setting a variable, and
every use case checks its caller's permission, from the shell as over the API."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import httpx
import pytest

from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, PermissionDenied
from opsconductor.plan import parse_plan
from opsconductor.rbac import BUILTIN_ROLES
from opsconductor.services import access, executions
from opsconductor.services.caller import AuthMethod, Caller, local_admin
from tests.served import logged_in, opsc, serving

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / "examples" / "plans"
LOCAL_ADMIN = f"local-admin:{pwd.getpwuid(os.geteuid()).pw_name}"


def test_the_environment_cannot_choose_who_approves(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """OPSC_ACTOR/USER/LOGNAME set to another person change nothing: the shell is still
    the local administrator, who requested the plan and so may not approve it at level 2."""
    submitted = opsc(cli_env, "submit", str(PLANS / "needs-approval.yaml"))
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()
    pretend = {**cli_env, "OPSC_ACTOR": "sre", "USER": "sre", "LOGNAME": "sre"}
    validated = opsc(cli_env, "validate", str(PLANS / "needs-approval.yaml"))
    plan_hash = validated.stdout.split("plan hash: ")[1].split()[0]
    tried = opsc(pretend, "approve", execution_id, "--hash", plan_hash)
    assert tried.returncode == 2
    assert f"{LOCAL_ADMIN} requested this execution" in tried.stderr
    assert "separation of duties" in tried.stderr
    assert "pending_approval" in opsc(cli_env, "show", execution_id).stdout


def test_cancel_and_role_changes_need_their_permissions_from_the_shell(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A viewer logged in at a shell can neither cancel nor grant itself a role."""
    submitted = opsc(cli_env, "submit", str(PLANS / "needs-approval.yaml"))
    execution_id = submitted.stdout.strip()
    with serving(cli_env, "--workers", "0") as (url, _):
        viewer = logged_in(cli_env, url, "vic", "viewer", config=tmp_path / "vic")
        cancel = opsc(viewer, "cancel", execution_id)
        assert cancel.returncode == 2, cancel.stdout + cancel.stderr
        assert "viewer may not cancel executions" in cancel.stderr
        grant = opsc(viewer, "roles", "grant", "vic", "admin")
        assert grant.returncode == 2 and "may not manage access" in grant.stderr
        token = opsc(viewer, "tokens", "create", "vic", "--role", "admin")
        assert token.returncode == 2 and "may not manage access" in token.stderr
        secret = opsc(viewer, "secrets", "list")
        assert secret.returncode == 2 and "may not manage secrets" in secret.stderr
        assert "pending_approval" in opsc(viewer, "show", execution_id).stdout
    roles = opsc(cli_env, "roles", "list").stdout
    assert "vic" in roles and "admin" not in roles.split("vic")[0].splitlines()[-1]


def test_a_stored_login_is_private(cli_env: dict[str, str], tmp_path: Path) -> None:
    with serving(cli_env, "--workers", "0") as (url, _):
        shell = logged_in(cli_env, url, "ann", "viewer", config=tmp_path / "ann")
    stored = tmp_path / "ann" / "opsconductor" / "login.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    stored.chmod(0o644)
    refused = opsc(shell, "whoami")
    assert refused.returncode == 2 and "readable by others" in refused.stderr


async def test_reserved_actor_names_cannot_be_given_out(db: Database) -> None:
    """Nobody may create a token or a binding that poses as the local administrator, a
    worker or the system (their names are what the audit trail trusts)."""
    admin = await local_admin(db, "default")
    for actor in (LOCAL_ADMIN, "local-admin:alice", "system:approval-sweep", "worker:x"):
        with pytest.raises(BadInput, match="reserved"):
            await access.create_token(db, admin, actor)
        with pytest.raises(BadInput, match="reserved"):
            await access.grant(db, admin, actor, "admin")


async def test_every_use_case_checks_its_caller(db: Database) -> None:
    """A caller with no role is refused by the service layer itself, whatever adapter."""
    nobody = Caller("default", "nobody", (), AuthMethod.TOKEN)
    plan = parse_plan(
        {
            "name": "p",
            "steps": [
                {
                    "name": "s",
                    "type": "noop",
                    "targets": {"hostnames": ["localhost"]},
                }
            ],
        }
    )
    for attempt in (
        executions.submit(db, nobody, plan),
        executions.cancel(db, nobody, "00000000-0000-0000-0000-000000000000"),
        access.grant(db, nobody, "nobody", "admin"),
        access.list_tokens(db, nobody),
        executions.requeue(db, nobody, "00000000-0000-0000-0000-000000000000"),
    ):
        with pytest.raises(PermissionDenied):
            await attempt
    viewer = Caller("default", "v", (BUILTIN_ROLES["viewer"],), AuthMethod.TOKEN)
    with pytest.raises(PermissionDenied, match="rotating the master key"):
        from opsconductor.services import secrets

        await secrets.rotate_key(db, viewer, Path("/nonexistent"))


def test_httpx_is_the_only_way_in_after_login(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A logged-in shell does not need (or use) database access at all."""
    with serving(cli_env, "--workers", "0") as (url, _):
        shell = logged_in(cli_env, url, "olga", "operator", config=tmp_path / "olga")
        cut_off = {**shell, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
        listed = opsc(cut_off, "list")
        assert listed.returncode == 0, listed.stderr
        assert httpx.get(url + "/me", headers={"Authorization": "Bearer x"}).status_code == 401
