"""Role-based access control: the pure policy decision. No I/O.

A *permission* grants one (resource, action) pair, optionally only on targets in some
environments. A *role* is a named set of permissions. An actor holds roles per tenant
(role bindings, stored in PostgreSQL); a request is allowed when at least one permission
of one of the actor's roles grants it, and denied otherwise (deny by default).

Resources and actions used by the product:

* ``executions``: ``view``, ``submit``, ``cancel``, ``approve``
* ``steps``: ``read``, ``modify``, ``deploy`` — run a step of that action class on a target;
  this is the one resource whose permissions carry environment restrictions
* ``assets``: ``view``, ``manage``
* ``access``: ``manage`` — tokens, roles and role bindings
* ``jobs``: ``view``, ``save`` (save a version, add schedules and webhooks), ``run``,
  ``delete`` — a job's creator may delete it with ``save``; running one is a submission,
  so ``executions:submit`` and the steps' permissions on its targets apply to each run

``*`` as resource or action matches anything; ``environments=None`` means every environment.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opsconductor.errors import BadInput, PermissionDenied

if TYPE_CHECKING:  # types only: every command checks roles, few load plans (pydantic)
    from opsconductor.inventory import Asset
    from opsconductor.plan import Plan

RESOURCES: Mapping[str, frozenset[str]] = {
    "executions": frozenset({"view", "submit", "cancel", "approve", "requeue"}),
    "steps": frozenset({"read", "modify", "deploy"}),
    "assets": frozenset({"view", "manage"}),
    "access": frozenset({"manage"}),
    "secrets": frozenset({"manage"}),
    "notifications": frozenset({"manage"}),
    "jobs": frozenset({"view", "save", "run", "delete"}),
}

ANY = "*"
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Permission:
    resource: str
    action: str
    #: None: every environment; otherwise only targets whose environment is listed
    environments: frozenset[str] | None = None

    def grants(self, resource: str, action: str, environment: str | None) -> bool:
        if self.resource not in (ANY, resource) or self.action not in (ANY, action):
            return False
        if self.environments is None:
            return True
        # A grant limited to some environments never covers a request that names none.
        return environment is not None and environment in self.environments

    def __str__(self) -> str:
        where = "" if self.environments is None else "@" + ",".join(sorted(self.environments))
        return f"{self.resource}:{self.action}{where}"


@dataclass(frozen=True)
class Role:
    name: str
    permissions: tuple[Permission, ...]
    description: str = ""
    builtin: bool = False


def _p(resource: str, action: str, *environments: str) -> Permission:
    return Permission(resource, action, frozenset(environments) if environments else None)


#: ``local`` is the environment of the built-in ``localhost`` asset every tenant has.
OPERATOR_ENVIRONMENTS = ("local", "dev", "staging")

_VIEW = (_p("executions", "view"), _p("assets", "view"), _p("jobs", "view"))
BUILTIN_ROLES: Mapping[str, Role] = {
    role.name: role
    for role in (
        Role("viewer", _VIEW, "sees executions, their steps and events, and the inventory", True),
        Role(
            "operator",
            (
                *_VIEW,
                _p("executions", "submit"),
                _p("executions", "cancel"),
                _p("executions", "requeue"),
                _p("jobs", "save"),
                _p("jobs", "run"),
                _p("steps", "read", *OPERATOR_ENVIRONMENTS),
                _p("steps", "modify", *OPERATOR_ENVIRONMENTS),
            ),
            "runs read and modify steps on local, dev and staging targets; never deploys",
            True,
        ),
        Role("approver", (*_VIEW, _p("executions", "approve")), "approves executions", True),
        Role("admin", (_p(ANY, ANY),), "everything, in every environment", True),
    )
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: which role and permission allowed it, or why it was denied, for the audit trail
    reason: str


def decide(
    roles: Iterable[Role], resource: str, action: str, environment: str | None = None
) -> Decision:
    """Allowed if one permission of one role grants (resource, action) in the environment."""
    held = list(roles)
    for role in held:
        for permission in role.permissions:
            if permission.grants(resource, action, environment):
                return Decision(True, f"role {role.name!r} grants {permission}")
    where = f" on {environment!r} targets" if environment is not None else ""
    if not held:
        return Decision(False, f"holds no role, so may not {action} {resource}{where}")
    names = ", ".join(sorted(r.name for r in held))
    return Decision(False, f"{names} may not {action} {resource}{where}")


def resolve_roles(names: Iterable[str], custom: Mapping[str, Role]) -> list[Role]:
    """The roles behind an actor's role bindings; a binding to a deleted role grants nothing."""
    found = []
    for name in sorted(set(names)):
        role = BUILTIN_ROLES.get(name) or custom.get(name)
        if role is not None:
            found.append(role)
    return found


def parse_permission(text: str) -> Permission:
    """``resource:action`` or ``resource:action@env1,env2`` (as the CLI and API accept it)."""
    pair, at, envs = text.partition("@")
    resource, sep, action = pair.partition(":")
    if not sep:
        raise BadInput(f"permission {text!r}: use resource:action[@env,...]")
    check_permission(resource, action)
    environments = frozenset(e for e in envs.split(",") if e) if at else None
    if at and not environments:
        raise BadInput(f"permission {text!r}: name at least one environment after '@'")
    return Permission(resource, action, environments)


def check_permission(resource: str, action: str) -> None:
    if resource != ANY and resource not in RESOURCES:
        raise BadInput(f"resource {resource!r}: must be one of {', '.join(sorted(RESOURCES))}, *")
    allowed = set().union(*RESOURCES.values()) if resource == ANY else RESOURCES[resource]
    if action != ANY and action not in allowed:
        raise BadInput(f"action {action!r} on {resource!r}: must be one of {sorted(allowed)}, *")


def check_role_name(name: str, *, custom: bool) -> None:
    if not _ROLE_NAME.match(name):
        raise BadInput(f"role {name!r}: use 1-63 lower-case letters, digits, '-' or '_'")
    if custom and name in BUILTIN_ROLES:
        raise BadInput(f"role {name!r} is built in and cannot be redefined")


@dataclass(frozen=True)
class StepCheck:
    """What the engine asks before it starts a step on one target."""

    tenant_id: str
    actor_id: str
    execution_id: uuid.UUID
    step_index: int
    step_name: str
    action_class: str
    asset_id: str
    environment: str


#: The engine's hook: returns a denial reason, or None when the step may run.
StepAuthorizer = Callable[[StepCheck], Awaitable[str | None]]


@dataclass(frozen=True)
class PlannedStep:
    step_index: int
    step_name: str
    action_class: str
    asset_id: str
    environment: str


#: ``decide`` for one caller's roles: (resource, action, environment) -> Decision.
Ask = Callable[[str, str, str | None], Decision]


def asker(roles: Sequence[Role]) -> Ask:
    """``decide`` for fixed roles, each question worked out once: a bulk submission asks the
    same few (action class, environment) questions for every plan. Pure: the answer depends
    on nothing but the roles and the question."""
    held = tuple(roles)
    answers: dict[tuple[str, str, str | None], Decision] = {}

    def ask(resource: str, action: str, environment: str | None) -> Decision:
        key = (resource, action, environment)
        found = answers.get(key)
        if found is None:
            found = answers[key] = decide(held, resource, action, environment)
        return found

    return ask


def plan_denials(
    roles: Sequence[Role], planned: Iterable[PlannedStep], ask: Ask | None = None
) -> list[str]:
    """Every (step, target) of a plan the roles may not run, as readable sentences."""
    ask = ask or (lambda resource, action, env: decide(roles, resource, action, env))
    denials = []
    for item in planned:
        decision = ask("steps", item.action_class, item.environment)
        if not decision.allowed:
            denials.append(
                f"steps[{item.step_index}] {item.step_name!r} on {item.asset_id!r}: "
                f"{decision.reason}"
            )
    return denials


def planned_steps(plan: Plan, targets: Sequence[Sequence[Asset]]) -> list[PlannedStep]:
    return [
        PlannedStep(index, step.name, step.action_class, asset.asset_id, asset.environment)
        for index, (step, step_targets) in enumerate(zip(plan.steps, targets, strict=True))
        for asset in step_targets
    ]


def enforce_plan(
    actor_id: str,
    roles: Sequence[Role],
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    ask: Ask | None = None,
) -> None:
    """The check at submission: raise ``PermissionDenied`` naming what may not run.
    ``ask``: an ``asker(roles)`` shared by the plans of one submission."""
    ask = ask or asker(roles)
    may_submit = ask("executions", "submit", None)
    if not may_submit.allowed:
        raise PermissionDenied(f"actor {actor_id!r}: {may_submit.reason}")
    # Every (step, target) asked first, without building the sentences (a bulk submission
    # asks this for every plan): only a plan with a denial lists them.
    if _all_allowed(ask, plan, targets):
        return
    denials = plan_denials(roles, planned_steps(plan, targets), ask)
    if denials:
        more = f" (and {len(denials) - 3} more)" if len(denials) > 3 else ""
        raise PermissionDenied(f"actor {actor_id!r}: " + "; ".join(denials[:3]) + more)


def _all_allowed(ask: Ask, plan: Plan, targets: Sequence[Sequence[Asset]]) -> bool:
    """Whether every step may run on every one of its targets (plain loops: most plans
    have a step or two, where building generators cost more than the questions)."""
    for step, step_targets in zip(plan.steps, targets, strict=True):
        action = step.action_class
        for asset in step_targets:
            if not ask("steps", action, asset.environment).allowed:
                return False
    return True


def held_permissions(roles: Sequence[Role]) -> list[str]:
    """What the roles grant, over every known (resource, action): ``resource:action`` where
    granted in every environment, ``resource:action@env,...`` where only in some."""
    held = []
    for resource, actions in sorted(RESOURCES.items()):
        for action in sorted(actions):
            if decide(roles, resource, action).allowed:
                held.append(f"{resource}:{action}")
                continue
            environments = {
                env
                for role in roles
                for permission in role.permissions
                for env in permission.environments or ()
                if permission.grants(resource, action, env)
            }
            if environments:
                held.append(f"{resource}:{action}@{','.join(sorted(environments))}")
    return held
