"""Target selection against the inventory: AND of selectors, sorted by asset id."""

from __future__ import annotations

import pytest

from opsconductor.errors import TargetResolutionError
from opsconductor.inventory import Asset, resolve_plan, select
from opsconductor.plan import Targets
from tests.plans import command_step, plan_of

INVENTORY = [
    Asset("web-2", "web2.example", "10.0.0.2", "staging", tags={"role": "web", "tier": "a"}),
    Asset("web-1", "web1.example", "10.0.0.1", "staging", tags={"role": "web", "tier": "b"}),
    Asset("web-9", "web9.example", "10.0.0.9", "prod", tags={"role": "web"}),
    Asset("db-1", "db1.example", "10.0.1.1", "staging", tags={"role": "db"}),
    Asset("bastion", "bastion", "10.0.9.9", "prod", connection_type="ssh"),
]


def _ids(**selector: object) -> list[str]:
    return [a.asset_id for a in select(Targets.model_validate(selector), INVENTORY)]


def test_selectors() -> None:
    assert _ids(tags={"role": "web"}) == ["web-1", "web-2", "web-9"]
    assert _ids(tags={"role": "web"}, environment="staging") == ["web-1", "web-2"]
    assert _ids(tags={"role": "web", "tier": "a"}) == ["web-2"]
    assert _ids(hostnames=["db1.example", "web9.example"]) == ["db-1", "web-9"]
    assert _ids(assets=["web-2", "db-1", "nope"]) == ["db-1", "web-2"]
    assert _ids(environment="prod", assets=["web-1"]) == []


def test_order_does_not_depend_on_inventory_order() -> None:
    selector = Targets.model_validate({"tags": {"role": "web"}})
    assert select(selector, INVENTORY) == select(selector, list(reversed(INVENTORY)))


def test_no_match_is_an_error_naming_the_step() -> None:
    plan = plan_of(
        command_step("a", "true", targets={"assets": ["web-1"]}),
        command_step("b", "true", targets={"environment": "qa"}),
    )
    with pytest.raises(TargetResolutionError, match=r"steps\[1\].targets: no asset matches"):
        resolve_plan(plan, INVENTORY)


def test_connection_we_cannot_run_is_refused_before_running() -> None:
    plan = plan_of(command_step("a", "true", targets={"assets": ["bastion"]}))
    assert resolve_plan(plan, INVENTORY)[0][0].asset_id == "bastion"  # ssh runs since issue 7
    winrm = [Asset("bastion", "bastion", "10.0.0.9", "prod", connection_type="winrm")]
    with pytest.raises(TargetResolutionError, match="uses connection 'winrm'"):
        resolve_plan(plan, winrm)


def test_validate_steps_inherit_the_targets_they_check() -> None:
    plan = plan_of(
        command_step("a", "true", targets={"tags": {"role": "web"}, "environment": "staging"}),
        {"name": "v", "type": "validate", "step": "a", "expect": {"exit_code": 0}},
    )
    resolved = resolve_plan(plan, INVENTORY)
    assert [a.asset_id for a in resolved[1]] == ["web-1", "web-2"]
