"""Assets and target selection. Pure: the caller supplies the inventory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opsconductor.errors import TargetResolutionError

if TYPE_CHECKING:  # an Asset is read by every command; plans (pydantic) by few
    from opsconductor.plan import Plan, Targets

#: Connection types this version can run commands over.
RUNNABLE_CONNECTIONS = frozenset({"local", "ssh"})


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


def resolve_plan(plan: Plan, inventory: Iterable[Asset]) -> list[list[Asset]]:
    """Targets of every step, in step order; raise before anything runs if one matches nothing."""
    from opsconductor.plan import ValidateStep

    assets = list(inventory)
    resolved: list[list[Asset]] = []
    by_name: dict[str, list[Asset]] = {}
    for index, step in enumerate(plan.steps):
        if isinstance(step, ValidateStep):
            targets = by_name[step.step]  # a validate step checks its step's targets
        else:
            targets = select(step.targets, assets)
            if not targets:
                raise TargetResolutionError(
                    f"steps[{index}].targets: no asset matches "
                    f"{step.targets.model_dump(exclude_none=True)}"
                )
            for asset in targets:
                if asset.connection_type not in RUNNABLE_CONNECTIONS:
                    raise TargetResolutionError(
                        f"steps[{index}].targets: asset {asset.asset_id!r} uses connection "
                        f"{asset.connection_type!r}, which this version cannot run"
                    )
        by_name[step.name] = targets
        resolved.append(targets)
    return resolved
