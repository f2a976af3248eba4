"""The pure RBAC decision: built-in roles, environment restrictions, deny by default."""

from __future__ import annotations

import pytest

from opsconductor import rbac
from opsconductor.errors import BadInput, PermissionDenied
from opsconductor.inventory import Asset
from opsconductor.plan import parse_plan

B = rbac.BUILTIN_ROLES


def allowed(roles: list[str], resource: str, action: str, env: str | None = None) -> bool:
    return rbac.decide([B[r] for r in roles], resource, action, env).allowed


def test_no_role_is_denied_everything() -> None:
    decision = rbac.decide([], "executions", "view")
    assert not decision.allowed
    assert "holds no role, so may not view executions" in decision.reason


@pytest.mark.parametrize(
    ("action", "env", "expected"),
    [
        ("read", "staging", True),
        ("modify", "dev", True),
        ("read", "local", True),
        ("deploy", "staging", False),
        ("deploy", "prod", False),
        ("read", "prod", False),
        ("read", None, False),  # an environment-limited grant never covers "no environment"
    ],
)
def test_operator_runs_read_and_modify_outside_prod_only(
    action: str, env: str | None, expected: bool
) -> None:
    assert allowed(["operator"], "steps", action, env) is expected


def test_only_admin_deploys_to_prod() -> None:
    assert allowed(["admin"], "steps", "deploy", "prod")
    for role in ("viewer", "operator", "approver"):
        assert not allowed([role], "steps", "deploy", "prod")


def test_viewer_sees_but_cannot_submit_or_cancel() -> None:
    assert allowed(["viewer"], "executions", "view")
    assert not allowed(["viewer"], "executions", "submit")
    assert not allowed(["viewer"], "executions", "cancel")
    assert not allowed(["viewer"], "assets", "manage")


def test_approver_approves_and_operator_does_not() -> None:
    assert allowed(["approver"], "executions", "approve")
    assert not allowed(["operator"], "executions", "approve")


def test_roles_combine_and_the_reason_names_the_granting_role() -> None:
    decision = rbac.decide([B["viewer"], B["approver"]], "executions", "approve")
    assert decision.allowed
    assert "approver" in decision.reason


def test_custom_role_with_environment_restriction() -> None:
    role = rbac.Role(
        "prod-reader",
        (rbac.parse_permission("steps:read@prod"), rbac.parse_permission("executions:*")),
    )
    assert rbac.decide([role], "steps", "read", "prod").allowed
    assert not rbac.decide([role], "steps", "read", "dev").allowed
    assert not rbac.decide([role], "steps", "modify", "prod").allowed
    assert rbac.decide([role], "executions", "submit").allowed


def test_bindings_to_unknown_roles_grant_nothing() -> None:
    custom = {"ops": rbac.Role("ops", (rbac.Permission("assets", "view"),))}
    roles = rbac.resolve_roles(["ops", "ghost", "viewer"], custom)
    assert [r.name for r in roles] == ["ops", "viewer"]


@pytest.mark.parametrize(
    "text", ["steps", "nope:read", "steps:fly", "steps:read@", "executions:view@,"]
)
def test_bad_permissions_are_refused(text: str) -> None:
    with pytest.raises(BadInput):
        rbac.parse_permission(text)


def test_custom_roles_cannot_take_builtin_names() -> None:
    with pytest.raises(BadInput, match="built in"):
        rbac.check_role_name("admin", custom=True)
    with pytest.raises(BadInput):
        rbac.check_role_name("Bad Name", custom=True)


def _asset(asset_id: str, env: str) -> Asset:
    return Asset(asset_id=asset_id, hostname=asset_id, address="127.0.0.1", environment=env)


def test_plan_check_names_each_forbidden_step_and_target() -> None:
    plan = parse_plan(
        {
            "name": "rollout",
            "steps": [
                {
                    "name": "look",
                    "type": "command",
                    "command": "true",
                    "targets": {"environment": "staging"},
                },
                {
                    "name": "ship",
                    "type": "command",
                    "command": "true",
                    "action_class": "deploy",
                    "targets": {"environment": "prod"},
                },
            ],
        }
    )
    targets = [[_asset("stg-1", "staging")], [_asset("prod-1", "prod")]]
    rbac.enforce_plan("alice", [B["admin"]], plan, targets)
    with pytest.raises(PermissionDenied) as denied:
        rbac.enforce_plan("bob", [B["operator"]], plan, targets)
    assert "steps[1] 'ship' on 'prod-1'" in str(denied.value)
    assert "deploy" in str(denied.value)
    assert "steps[0]" not in str(denied.value)
    with pytest.raises(PermissionDenied, match="may not submit"):
        rbac.enforce_plan("carol", [B["viewer"]], plan, targets)


def test_an_asker_answers_as_decide_for_every_question() -> None:
    """A bulk submission asks each (action, environment) once: the shared answers must be
    decide's, environment by environment (a prod denial is not an answer for dev)."""
    roles = [B["operator"], B["viewer"]]
    ask = rbac.asker(roles)
    for _ in range(2):  # the second round is answered from what the first worked out
        for action in ("read", "modify", "deploy"):
            for env in ("dev", "prod", None):
                assert ask("steps", action, env) == rbac.decide(roles, "steps", action, env)


def test_plan_check_with_a_shared_asker_denies_per_target_environment() -> None:
    plan = parse_plan(
        {"name": "p", "steps": [{"name": "s", "type": "command", "command": "true",
                                 "action_class": "modify", "targets": {"tags": {"r": "x"}}}]}
    )  # fmt: skip
    dev = [[Asset("a", "a", "10.0.0.1", "dev")]]
    prod = [[Asset("b", "b", "10.0.0.2", "prod")]]
    roles = [B["operator"]]
    ask = rbac.asker(roles)
    rbac.enforce_plan("op", roles, plan, dev, ask)
    with pytest.raises(PermissionDenied, match="'b'"):
        rbac.enforce_plan("op", roles, plan, prod, ask)
    rbac.enforce_plan("op", roles, plan, dev, ask)
