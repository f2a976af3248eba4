"""Assets and target selection. Pure: the caller supplies the inventory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from opsconductor.canonical import canonical_json
from opsconductor.errors import TargetResolutionError
from opsconductor.quick_init import quick_init

if TYPE_CHECKING:  # an Asset is read by every command; plans (pydantic) by few
    from opsconductor.plan import ActingStep, Plan, Targets

#: Connection types this version can run commands over.
RUNNABLE_CONNECTIONS = frozenset({"local", "ssh"})


@quick_init  # built per matched asset of every submission
@dataclass(frozen=True)
class Asset:
    asset_id: str
    hostname: str
    address: str
    environment: str
    connection_type: str = "local"
    port: int | None = None
    os: str | None = None
    credential_ref: str | None = None
    #: SSH login name; None means the user running the worker
    username: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: inventory variables (Ansible host and group vars), ``asset.vars.*`` in templates
    vars: Mapping[str, Any] = field(default_factory=dict)
    #: asset id of the SSH bastion this asset is reached through (None: directly)
    proxy_jump: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Asset:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


def matches(selector: Targets, asset: Asset) -> bool:
    if selector.assets is not None and asset.asset_id not in selector.assets:
        return False
    if selector.hostnames is not None and asset.hostname not in selector.hostnames:
        return False
    if selector.environment is not None and asset.environment != selector.environment:
        return False
    tags = selector.tags or {}
    return all(asset.tags.get(key) == value for key, value in tags.items())


def select(selector: Targets, inventory: Iterable[Asset]) -> list[Asset]:
    """Matching assets sorted by asset id, so every run and every machine sees one order."""
    return sorted((a for a in inventory if matches(selector, a)), key=lambda a: a.asset_id)


def selector_key(selector: Targets) -> str:
    """One string per distinct selector: steps that select alike are looked up once. The
    canonical text of what the author set (a step's ``targets`` in the plan document:
    ``selector_keys_of`` reads it from there). Equal keys are equal selectors; the same
    selector written two ways (an explicit null) makes two keys: looked up twice, still
    right."""
    return canonical_json(selector.model_dump(mode="json", exclude_unset=True))


def step_selector_keys(plan: Plan) -> tuple[str | None, ...]:
    """Each step's ``selector_key``, in step order (None: a validate step, which has no
    selector of its own)."""
    return tuple(
        None if step.type == "validate" else selector_key(step.targets) for step in plan.steps
    )


def selector_keys_of(steps: Sequence[Mapping[str, Any]]) -> tuple[str | None, ...]:
    """``step_selector_keys`` from the plan document's steps (``plan_hash.dumped_text``),
    without asking pydantic again: the same strings."""
    return tuple(
        [None if step["type"] == "validate" else canonical_json(step["targets"]) for step in steps]
    )


def selectors(plan: Plan, keys: Sequence[str | None] | None = None) -> dict[str, Targets]:
    """The distinct selectors of a plan's steps (a validate step has none of its own).
    ``keys``: the plan's ``step_selector_keys``, when the caller has them already."""
    keys = step_selector_keys(plan) if keys is None else keys
    return {
        key or selector_key(step.targets): step.targets
        for step, key in zip(plan.steps, keys, strict=True)
        if step.type != "validate"
    }


def resolve_plan(plan: Plan, inventory: Iterable[Asset]) -> list[list[Asset]]:
    """Targets of every step, in step order, chosen from a whole inventory."""
    assets = list(inventory)
    return resolve_selected(plan, {k: select(s, assets) for k, s in selectors(plan).items()})


#: Step types whose ``become`` runs sudo on each target (an ansible step's is checked as
#: that step is: it runs on ssh assets only).
_BECOMING = frozenset({"command", "script"})

_asset_id = attrgetter("asset_id")

#: Targets a selector resolved to, already checked for the kind of step: by (selector key,
#: ansible, become). A bulk submission shares one across its plans (``Resolved``).
Resolved = dict[tuple[str, bool, bool], list[Asset]]


def resolve_selected(
    plan: Plan,
    matched: Mapping[str, list[Asset]],
    keys: Sequence[str | None] | None = None,
    resolved: Resolved | None = None,
) -> list[list[Asset]]:
    """Targets of every step, in step order, from the assets each selector matched (keyed by
    ``selector_key``; the database selects them with its indexes, see db/assets.py); raise
    before anything runs if a step matches nothing. ``keys``: the plan's
    ``step_selector_keys``, when the caller has them already; ``resolved``: what earlier
    plans with the same ``matched`` resolved (each plan gets lists of its own)."""
    keys = step_selector_keys(plan) if keys is None else keys
    done: Resolved = {} if resolved is None else resolved
    result: list[list[Asset]] = []
    by_name: dict[str, list[Asset]] = {}
    for index, (step, key) in enumerate(zip(plan.steps, keys, strict=True)):
        if step.type == "validate":
            targets = by_name[step.step]  # a validate step checks its step's targets
        else:
            key = key or selector_key(step.targets)
            ansible = step.type == "ansible"
            becomes = step.type in _BECOMING and bool(getattr(step, "become", False))
            known = done.get((key, ansible, becomes))
            if known is None:
                known = _checked(index, step, matched[key], ansible, becomes)
                done[key, ansible, becomes] = known
            targets = list(known)
        by_name[step.name] = targets
        result.append(targets)
    return result


def _checked(
    index: int, step: ActingStep, matched: list[Asset], ansible: bool, becomes: bool
) -> list[Asset]:
    """A step's matched assets sorted by id, once each is known to suit the step; else
    ``TargetResolutionError`` naming the step (``steps[index]``) and why."""
    targets = sorted(matched, key=_asset_id)
    if not targets:
        raise TargetResolutionError(
            f"steps[{index}].targets: no asset matches {step.targets.model_dump(exclude_none=True)}"
        )
    for asset in targets:
        if asset.connection_type not in RUNNABLE_CONNECTIONS:
            raise TargetResolutionError(
                f"steps[{index}].targets: asset {asset.asset_id!r} uses connection "
                f"{asset.connection_type!r}, which this version cannot run"
            )
        if ansible and asset.connection_type != "ssh":
            # ansible-playbook reaches its hosts over SSH from a sandbox that has
            # no network but its targets' SSH ports (connectors/ansible_run.py).
            raise TargetResolutionError(
                f"steps[{index}].targets: asset {asset.asset_id!r} is "
                f"{asset.connection_type!r}; an ansible step runs on ssh assets only"
            )
        if becomes and asset.connection_type == "local":
            # The sandbox runs with no_new_privs as an unprivileged user: sudo
            # cannot gain anything there, and a way around it would be a way out.
            raise TargetResolutionError(
                f"steps[{index}].become: asset {asset.asset_id!r} is local; become "
                "(sudo) works on SSH targets only: local steps run sandboxed as an "
                "unprivileged user that cannot gain privileges"
            )
    return targets
