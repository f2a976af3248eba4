"""Rolling updates, the pure part: ``serial:`` in the plan model, batches, the failure
threshold and the reasons a person reads (the engine over sshd: tests/test_rolling.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsconductor import rollout
from opsconductor.errors import PlanError
from opsconductor.inventory import Asset, resolve_plan
from opsconductor.plan import load_plan_file, parse_plan
from opsconductor.plan_hash import plan_hash
from tests.test_plan_hash import GOLDEN_HASH, INVENTORY, PLAN

HOSTS = [f"web-{n}" for n in range(1, 11)]


def _plan(**extra: Any) -> dict[str, Any]:
    return {**PLAN, **extra}


@pytest.mark.parametrize(
    ("serial", "sizes"),
    [
        (1, [1] * 10),
        (3, [3, 3, 3, 1]),
        (20, [10]),
        ("25%", [2, 2, 2, 2, 2]),  # 2.5 rounds down
        ("100%", [10]),
        ("1%", [1] * 10),  # never an empty batch
        ([1, 5, "50%"], [1, 5, 4]),  # the last size repeats; the last batch takes the rest
        ([1, "50%"], [1, 5, 4]),
        ([2, 1], [2, 1, 1, 1, 1, 1, 1, 1, 1]),
    ],
)
def test_batches_cut_the_hosts_in_order(serial: rollout.Serial, sizes: list[int]) -> None:
    cut = rollout.batches(serial, HOSTS)
    assert [len(b) for b in cut] == sizes
    assert [h for b in cut for h in b] == HOSTS  # each host once, in order


def test_batches_of_a_few_hosts() -> None:
    four = ["web-1", "web-2", "web-3", "web-4"]
    assert rollout.batches([1, "50%"], four) == [["web-1"], ["web-2", "web-3"], ["web-4"]]
    assert rollout.batches(1, []) == []


def test_hosts_are_the_union_of_every_step_in_asset_id_order() -> None:
    assert rollout.hosts_of([["web-2", "web-1"], ["db-1", "web-1"], []]) == [
        "db-1",
        "web-1",
        "web-2",
    ]


@pytest.mark.parametrize(
    ("failed", "size", "limit", "stops"),
    [
        (0, 4, 0, False),
        (1, 4, 0, True),  # the default: any failure stops
        (1, 4, 25, False),  # exactly at the limit is allowed
        (2, 4, 25, True),
        (1, 1, 99.9, True),
        (3, 3, 100, False),  # 100 never stops
        (0, 0, 0, False),
    ],
)
def test_threshold(failed: int, size: int, limit: float, stops: bool) -> None:
    assert rollout.exceeds(failed, size, limit) is stops


def test_stop_reason_names_the_batch_its_hosts_and_the_limit() -> None:
    batch = rollout.BatchOutcome(2, 4, ("web-2",), ("web-2",))
    assert rollout.stop_reason(batch, 0) == (
        "rollout stopped after batch 2 of 4 (hosts web-2): 1 of 1 hosts failed (web-2), "
        "above max_fail_percentage 0"
    )
    assert rollout.not_run_reason(batch) == "not run: rollout stopped after batch 2 of 4"


@pytest.mark.parametrize("serial", [1, "25%", " 50 % ", [1, 5, "50%"], "12.5%"])
def test_plan_takes_serial(serial: Any) -> None:
    plan = parse_plan(_plan(serial=serial, max_fail_percentage=10))
    assert plan.serial == serial and plan.fail_limit == 10.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"serial": 0}, "serial: a batch size must be >= 1 (got 0)"),
        ({"serial": "0%"}, "serial: a percentage batch size must be above 0%"),
        ({"serial": "150%"}, "at most 100%"),
        ({"serial": "half"}, "serial: a batch size is a count or a percentage"),
        ({"serial": []}, "serial: give at least one batch size"),
        ({"serial": [1, True]}, "got True"),
        ({"serial": 1.5}, "got 1.5"),
        ({"serial": 1, "max_fail_percentage": 101}, "max_fail_percentage: must be <= 100"),
        ({"serial": 1, "max_fail_percentage": -1}, "max_fail_percentage: must be >= 0"),
        ({"max_fail_percentage": 10}, "max_fail_percentage: needs serial"),
    ],
)
def test_plan_refuses_bad_rollouts(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(_plan(**extra))
    assert message in str(caught.value)


def test_default_limit_is_zero() -> None:
    assert parse_plan(_plan(serial=1)).fail_limit == 0.0


def _hash(data: dict[str, Any], inventory: list[Asset] = INVENTORY) -> str:
    plan = parse_plan(data)
    return plan_hash(plan, resolve_plan(plan, inventory))


def test_hash_covers_the_rollout_and_is_unchanged_without_it() -> None:
    assert _hash(PLAN) == GOLDEN_HASH  # plans that do not set serial keep their hash
    one, two = _hash(_plan(serial=1)), _hash(_plan(serial=2))
    assert len({GOLDEN_HASH, one, two}) == 3
    assert _hash(_plan(serial=1, max_fail_percentage=0)) not in (GOLDEN_HASH, one)
    # int and float thresholds are the same plan
    assert _hash(_plan(serial=1, max_fail_percentage=10)) == _hash(
        _plan(serial=1, max_fail_percentage=10.0)
    )


def test_the_readme_example_rolls_out_canary_first() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "plans" / "rolling-web.yaml"
    plan = load_plan_file(path)
    assert plan.serial == [1, 2, "50%"] and plan.fail_limit == 0
    hosts = [f"web{n}" for n in range(1, 11)]
    assert [len(b) for b in rollout.batches(plan.serial, hosts)] == [1, 2, 5, 2]
