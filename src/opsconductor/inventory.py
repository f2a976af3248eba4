"""Assets and target selection. Pure: the caller supplies the inventory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from opsconductor.errors import TargetResolutionError
from opsconductor.quick_init import quick_init

if TYPE_CHECKING:  # an Asset is read by every command; plans (pydantic) by few
    from opsconductor.plan import Plan, Targets

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
    """One string per distinct selector: steps that select alike are looked up once. (Tags
    in another order make another key: looked up twice, still right.)"""
    return selector.model_dump_json(exclude_none=True)


def step_selector_keys(plan: Plan) -> tuple[str | None, ...]:
    """Each step's ``selector_key``, in step order (None: a validate step, which has no
    selector of its own). A bulk submission works them out once per plan, for both
    ``selectors`` and ``resolve_selected``."""
    from opsconductor.plan import ValidateStep

    return tuple(
        None if isinstance(step, ValidateStep) else selector_key(step.targets)
        for step in plan.steps
    )


def selectors(plan: Plan, keys: Sequence[str | None] | None = None) -> dict[str, Targets]:
    """The distinct selectors of a plan's steps (a validate step has none of its own).
    ``keys``: the plan's ``step_selector_keys``, when the caller has them already."""
    from opsconductor.plan import ValidateStep

    keys = step_selector_keys(plan) if keys is None else keys
    return {
        key or selector_key(step.targets): step.targets
        for step, key in zip(plan.steps, keys, strict=True)
        if not isinstance(step, ValidateStep)
    }


def resolve_plan(plan: Plan, inventory: Iterable[Asset]) -> list[list[Asset]]:
    """Targets of every step, in step order, chosen from a whole inventory."""
    assets = list(inventory)
    return resolve_selected(plan, {k: select(s, assets) for k, s in selectors(plan).items()})


def _becomes(step: object) -> bool:
    from opsconductor.plan import CommandStep, ScriptStep

    return isinstance(step, CommandStep | ScriptStep) and step.become


_asset_id = attrgetter("asset_id")


def resolve_selected(
    plan: Plan, matched: Mapping[str, list[Asset]], keys: Sequence[str | None] | None = None
) -> list[list[Asset]]:
    """Targets of every step, in step order, from the assets each selector matched (keyed by
    ``selector_key``; the database selects them with its indexes, see db/assets.py); raise
    before anything runs if a step matches nothing. ``keys``: the plan's
    ``step_selector_keys``, when the caller has them already."""
    from opsconductor.plan import ValidateStep

    keys = step_selector_keys(plan) if keys is None else keys
    resolved: list[list[Asset]] = []
    by_name: dict[str, list[Asset]] = {}
    for index, (step, key) in enumerate(zip(plan.steps, keys, strict=True)):
        if isinstance(step, ValidateStep):
            targets = by_name[step.step]  # a validate step checks its step's targets
        else:
            targets = sorted(matched[key or selector_key(step.targets)], key=_asset_id)
            if not targets:
                raise TargetResolutionError(
                    f"steps[{index}].targets: no asset matches "
                    f"{step.targets.model_dump(exclude_none=True)}"
                )
            ansible = getattr(step, "type", "") == "ansible"
            becomes = _becomes(step)
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
        by_name[step.name] = targets
        resolved.append(targets)
    return resolved
