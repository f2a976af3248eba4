"""Parameters, template checks, ``when`` and honest estimates: the pure parts."""

from __future__ import annotations

from typing import Any

import pytest

from opsconductor import params, policies, routing, template_check
from opsconductor.connectors.outcome import StepInputError
from opsconductor.errors import BadInput, PlanError
from opsconductor.inventory import Asset
from opsconductor.plan import Plan, parse_plan
from opsconductor.plan_hash import plan_hash
from opsconductor.templating import asset_context, condition, render
from tests.plans import command_step

WEB = [Asset(f"web-{i}", f"web-{i}", f"10.0.0.{i}", "prod", tags={"role": "web"}) for i in (1, 2)]

DECLARED: dict[str, Any] = {
    "version": {"type": "string", "description": "release to deploy"},
    "replicas": {"type": "int", "default": 2},
    "restart": {"type": "bool", "default": False},
    "channel": {"type": "choice", "choices": ["stable", "beta"], "default": "stable"},
    "db_password": {"type": "secret-ref", "default": "kv/db/password"},
}


def _plan(*steps: dict[str, Any], declared: dict[str, Any] | None = None) -> Plan:
    return parse_plan(
        {"name": "p", "params": DECLARED if declared is None else declared, "steps": list(steps)}
    )


def _noop(name: str = "n", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "noop", "targets": {"tags": {"role": "web"}}, **extra}


def test_values_are_bound_with_defaults() -> None:
    plan = _plan(_noop())
    assert params.bind(plan.params, {"version": "1.2"}) == {
        "version": "1.2",
        "replicas": 2,
        "restart": False,
        "channel": "stable",
        "db_password": "kv/db/password",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "params.version: required string parameter not given (release to deploy)"),
        ({"version": 12}, "params.version: must be a string (got int)"),
        ({"version": "1", "replicas": "3"}, "params.replicas: must be an integer (got str)"),
        ({"version": "1", "restart": "yes"}, "params.restart: must be true or false (got str)"),
        ({"version": "1", "channel": "edge"}, "params.channel: must be one of ['stable', 'beta']"),
        ({"version": "1", "colour": "red"}, "params.colour: this plan declares no such parameter"),
        ({"version": "1", "db_password": "has space"}, "params.db_password: must be a secret"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_parameter(given: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput) as caught:
        params.bind(_plan(_noop()).params, given)
    assert str(caught.value).startswith(message)
    assert caught.value.exit_code == 2


def test_set_values_are_converted_by_the_declared_type() -> None:
    specs = _plan(_noop()).params
    assert params.parse_sets(specs, ["replicas=5", "restart=yes", "version=a=b"]) == {
        "replicas": 5,
        "restart": True,
        "version": "a=b",
    }
    with pytest.raises(BadInput, match=r"params\.replicas: must be an integer \(got 'five'\)"):
        params.parse_sets(specs, ["replicas=five"])
    with pytest.raises(BadInput, match="write name=value"):
        params.parse_sets(specs, ["replicas"])


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"n": {"type": "int", "default": "3"}}, "params.n: default: must be an integer"),
        ({"n": {"type": "choice"}}, "params.n: choices: give them for type choice"),
        ({"n": {"type": "string", "choices": ["a"]}}, "params.n: choices: give them"),
        ({"n-1": {}}, "params: 'n-1' is not a valid parameter name"),
        ({"n": {"type": "float"}}, "params.n.type: must be one of"),
        ({"n": {"type": "int", "secret": True}}, "params.n.secret: unknown field"),
    ],
)
def test_declarations_are_checked_when_the_plan_is_parsed(
    declared: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError) as caught:
        _plan(_noop(), declared=declared)
    assert str(caught.value).startswith(message)


def test_changing_a_parameter_changes_the_hash_and_a_plan_without_params_keeps_its_own() -> None:
    plan = _plan(_noop())
    one = plan_hash(plan, [WEB], None, {"version": "1.2"})
    assert one == plan_hash(plan, [WEB], None, {"version": "1.2", "replicas": 2})  # the default
    assert one != plan_hash(plan, [WEB], None, {"version": "1.3"})
    assert one != plan_hash(plan, [WEB], None, {"version": "1.2", "db_password": "kv/other"})
    bare = parse_plan({"name": "p", "steps": [_noop()]})
    assert plan_hash(bare, [WEB]) == plan_hash(bare, [WEB], None, None)
    with pytest.raises(BadInput, match=r"params\.version"):
        plan_hash(plan, [WEB])  # a hash is never taken over unbound values


def test_templates_see_params_asset_fields_and_name_what_is_undefined() -> None:
    context = asset_context(WEB[0], {"check": {"output": "ok"}}, {"version": "1.2"})
    assert render("{{ asset.address }}:{{ params.version }}", context, "f") == "10.0.0.1:1.2"
    for text, name in [
        ("{{ asset.adress }}", "asset.adress is undefined"),
        ("{{ asset.tags.rol }}", "asset.tags.rol is undefined"),
        ("{{ params.verison }}", "params.verison is undefined"),
        ("{{ steps.check.outptu }}", "steps.check.outptu is undefined"),
        ("{{ steps['no such'].output }}", "steps['no such'] is undefined"),
        ("{{ parmas.version }}", "parmas is undefined"),
    ]:
        with pytest.raises(StepInputError) as caught:
            render(text, context, "steps[1].url")
        assert str(caught.value).startswith(f"steps[1].url: template error: {name}")
    with pytest.raises(StepInputError, match="ZeroDivisionError"):
        render("{{ 1 // 0 }}", context, "f")  # an input error, never a crash


def test_inventory_variables_are_read_when_an_asset_has_them() -> None:
    asset = Asset("a", "a", "10.0.0.9", "prod", vars={"port": 8080})
    assert render("{{ asset.vars.port }}", asset_context(asset), "f") == "8080"
    with pytest.raises(StepInputError, match=r"asset\.vars\.port is undefined"):
        render("{{ asset.vars.port }}", asset_context(WEB[0]), "f")


def test_when_is_an_expression_over_the_same_variables() -> None:
    context = asset_context(WEB[0], None, {"restart": True, "replicas": 2})
    assert condition("params.restart and asset.tags.role == 'web'", context, "w")
    assert not condition("params.replicas > 3", context, "w")
    with pytest.raises(StepInputError, match=r"params\.restrat is undefined"):
        condition("params.restrat", context, "steps[0].when")
    with pytest.raises(StepInputError, match=r"without \{\{ \}\}"):
        condition("{{ params.restart }}", context, "steps[0].when")
    with pytest.raises(StepInputError, match="template budget exceeded"):
        condition("('x' * 1000000) ~ ('x' * 1000000) ~ 'x'", context, "steps[0].when")
    with pytest.raises(StepInputError, match="chunk after expression"):
        condition("true false", context, "steps[0].when")
    with pytest.raises(StepInputError, match="condition error: unexpected"):
        condition("true %} {% for x in range(10) %}", context, "steps[0].when")


def test_every_template_is_checked_on_every_target_naming_step_target_and_name() -> None:
    plan = _plan(
        command_step("read", "cat /etc/app.conf", targets={"tags": {"role": "web"}}),
        {
            "name": "push config",
            "type": "file",
            "targets": {"assets": ["web-2"]},
            "src": "app-{{ params.version }}.conf",
            "dest": "/srv/{{ asset.adress }}/app.conf",
        },
        {
            "name": "health",
            "type": "http",
            "targets": {"tags": {"role": "web"}},
            "url": "http://{{ asset.address }}/{{ steps.read.outptu }}",
            "when": "params.restart or params.chanel == 'beta'",
        },
        _noop("fine", when="steps.read.exit_code == 0 and params.replicas >= 1"),
    )
    targets = [WEB, [WEB[1]], WEB, WEB]
    found = template_check.problems(plan, targets, params.bind(plan.params, {"version": "1"}))
    assert found == [
        "steps[1].dest (step 'push config', target web-2): template error: asset.adress is "
        "undefined",
        "steps[2].when (step 'health', targets web-1, web-2): condition error: params.chanel is "
        "undefined",
        "steps[2].url (step 'health', targets web-1, web-2): template error: steps.read.outptu is "
        "undefined",
    ]


def test_a_step_result_is_offered_only_where_that_step_ran() -> None:
    plan = _plan(
        command_step("only one", "true", targets={"assets": ["web-1"]}),
        _noop("after", when="steps['only one'].exit_code == 0"),
    )
    found = template_check.problems(
        plan, [[WEB[0]], WEB], params.bind(plan.params, {"version": "1"})
    )
    assert found == [
        "steps[1].when (step 'after', target web-2): condition error: steps['only one'] is "
        "undefined"
    ]


def test_secret_ref_parameters_are_stand_ins_where_nothing_is_fetched() -> None:
    plan = _plan(_noop())
    values = params.bind(plan.params, {"version": "1"})
    shown = template_check.shown_params(plan, values, secrets=None)
    assert shown["db_password"] == "<secret kv/db/password>"
    fetched = template_check.shown_params(plan, values, secrets={"kv/db/password": "s3cr3t"})
    assert fetched["db_password"] == "s3cr3t"


def test_the_same_step_has_the_same_history_key_in_any_plan() -> None:
    one = parse_plan({"name": "a", "steps": [command_step("x", "sleep 2", timeout_s=5)]})
    two = parse_plan({"name": "b", "steps": [command_step("y", "sleep 2", retries=2)]})
    other = parse_plan({"name": "a", "steps": [command_step("x", "sleep 3")]})
    assert routing.step_key(one.steps[0]) == routing.step_key(two.steps[0])
    assert routing.step_key(one.steps[0]) != routing.step_key(other.steps[0])
    assert routing.step_key(one.steps[0]).startswith("command:")


def test_estimates_prefer_the_same_steps_history_and_never_the_optimistic_type_figure() -> None:
    plan = parse_plan({"name": "a", "steps": [command_step(f"s{i}", "sleep 2") for i in range(12)]})
    local = [[Asset("localhost", "localhost", "127.0.0.1", "local")]] * 12
    # the tenant's commands are mostly quick: the type's p95 is below the default
    quick = routing.History({}, {"command": 0.05})
    first = routing.estimate(plan, local, quick)
    assert first.total_s == 12.0 and "default for a command step" in first.steps[0].source
    assert routing.classify(first.total_s).sla_class == "medium"
    key = routing.step_key(plan.steps[0])
    learned = routing.estimate(plan, local, routing.History({key: 2.1}, {"command": 0.05}))
    assert learned.total_s == pytest.approx(25.2)
    assert learned.steps[0].source == "p95 of this step's earlier runs"
    slow = routing.estimate(plan, local, routing.History({}, {"command": 3.0}))
    assert slow.total_s == 36.0 and "p95 of this tenant's command steps" in slow.steps[0].source
    keys = [routing.step_key(step) for step in plan.steps]
    learning = routing.History({key: 2.1}, {"command": 0.05})
    for history in (quick, learning, routing.History({}, {"command": 3.0})):
        # the submission's total-only path: the very same float
        total = routing.total_seconds(plan, local, history, keys)
        assert total == routing.estimate(plan, local, history).total_s


def _matrix() -> policies.PolicyMatrix:
    return {
        (sla, action): policies.TimeoutPolicy(sla, action, 5, 10, 35, 3)
        for sla in ("fast", "medium", "long")
        for action in ("read", "modify", "deploy")
    }


def test_budget_is_never_below_the_declared_step_timeouts_and_says_why() -> None:
    plan = parse_plan(
        {"name": "a", "steps": [command_step("s", "sleep 2", timeout_s=6, retries=1)] * 1}
    )
    budget, why = policies.budget_reason(plan, "fast", _matrix())
    assert budget == 12 and "declared timeout_s" in why
    assert budget == policies.execution_timeout(plan, "fast", _matrix())
    plain = parse_plan({"name": "a", "steps": [command_step("s", "true")]})
    assert policies.budget_reason(plain, "fast", _matrix()) == (
        10,
        "the fast/read policy (longest among the plan's action classes)",
    )
    tight = parse_plan(
        {"name": "a", "timeout_s": 3, "steps": [command_step("s", "sleep 2", timeout_s=6)]}
    )
    budget, why = policies.budget_reason(tight, "fast", _matrix())
    assert budget == 3 and "below the 6 s its steps declare" in why
