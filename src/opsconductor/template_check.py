"""Every template and ``when`` of a plan rendered against every resolved target before
anything runs, so ``{{ asset.adress }}`` is refused by ``opsc validate`` (and at
submission) with the step, the target and the name at fault, not at step 2 of a rollout.
Pure.

Earlier steps' results do not exist yet: each earlier step *that targets the same asset*
stands in with an assumed result (``status: completed``, ``exit_code: 0``, empty
output), so a misspelt step or field name is caught while a template that only fails on
some output (``steps.v.output | int // 0``) is left for the run to judge.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opsconductor import params as plan_params
from opsconductor.connectors.outcome import StepInputError
from opsconductor.inventory import Asset
from opsconductor.plan import (
    AnsibleStep,
    CommandStep,
    FileStep,
    HttpStep,
    NoopStep,
    Plan,
    ScriptStep,
    SqlStep,
    ValidateStep,
    _StepBase,
)
from opsconductor.templating import (
    DataError,
    asset_context,
    condition,
    is_template,
    render,
    uses_step_results,
)

#: Problems reported at most (a typo over 10,000 targets is one message, not 10,000).
MAX_PROBLEMS = 20

_PLACEHOLDER_RESULT = {"status": "completed", "exit_code": 0, "output": "", "stderr": ""}


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")


#: The step types whose fields ``template_fields`` reads (any other has none).
_TEMPLATED = (CommandStep, ScriptStep, FileStep, AnsibleStep, HttpStep, SqlStep)


#: Exact classes, looked up before ``isinstance`` (through pydantic's ABC metaclass, about
#: 0.15 us a class, six classes for every step of a bulk); a subclass still gets isinstance.
_TEMPLATED_EXACT = frozenset(_TEMPLATED)
_PLAIN_EXACT = frozenset({NoopStep, ValidateStep})


def may_have_templates(step: _StepBase) -> bool:
    """False when ``template_fields`` of the step is empty whatever it holds (a noop or a
    validate step): a bulk submission skips those without building anything."""
    cls = type(step)
    if cls in _TEMPLATED_EXACT:
        return True
    return cls not in _PLAIN_EXACT and isinstance(step, _TEMPLATED)


def template_fields(step: _StepBase, index: int) -> list[tuple[str, str]]:
    """(field path, text) of every field of ``step`` that is rendered per target."""
    where = f"steps[{index}]"
    found: list[tuple[str, str]] = []
    if isinstance(step, CommandStep | ScriptStep):
        found += [(f"{where}.env.{k}", v) for k, v in step.env.items() if isinstance(v, str)]
    elif isinstance(step, FileStep):
        found += [(f"{where}.src", step.src), (f"{where}.dest", step.dest)]
    elif isinstance(step, AnsibleStep):
        found += [
            (f"{where}.extra_vars.{k}", v) for k, v in step.extra_vars.items() if isinstance(v, str)
        ]
    elif isinstance(step, HttpStep):
        found.append((f"{where}.url", step.url))
        found += [
            (f"{where}.headers.{k}", v) for k, v in step.headers.items() if isinstance(v, str)
        ]
        if step.body is not None:
            found.append((f"{where}.body", step.body))
        found += list(_strings(step.json_body, f"{where}.json"))
    elif isinstance(step, SqlStep) and isinstance(step.dsn, str):
        found.append((f"{where}.dsn", step.dsn))
    return [(field, text) for field, text in found if is_template(text)]


def shown_params(
    plan: Plan, values: Mapping[str, plan_params.Value], *, secrets: Mapping[str, str] | None
) -> dict[str, Any]:
    """Parameters as templates read them: a ``secret-ref`` parameter is its fetched value
    when ``secrets`` (path -> value) has it, else a stand-in naming the path."""
    shown: dict[str, Any] = dict(values)
    for name in plan_params.secret_params(plan.params):
        path = values.get(name)
        if isinstance(path, str):
            fetched = (secrets or {}).get(path)
            shown[name] = fetched if fetched is not None else plan_params.secret_stand_in(path)
    return shown


def problems(
    plan: Plan,
    targets: Sequence[Sequence[Asset]],
    values: Mapping[str, plan_params.Value],
) -> list[str]:
    """Every template error, as ``steps[1].dest (step 'push', target web-2): asset.adress
    is undefined``; empty when all render. Identical errors on many targets are one line
    with a count."""
    params = shown_params(plan, values, secrets=None)
    found: dict[tuple[str, str, str], list[str]] = {}
    earlier: list[tuple[str, set[str]]] = []  # (step name, its asset ids)
    for index, (step, step_targets) in enumerate(zip(plan.steps, targets, strict=True)):
        fields = template_fields(step, index)
        if step.when is not None:
            fields.insert(0, (f"steps[{index}].when", step.when))
        for asset in step_targets if fields else ():
            results = {name: _PLACEHOLDER_RESULT for name, ids in earlier if asset.asset_id in ids}
            context = asset_context(asset, results, params)
            for where, text in fields:
                error = _check(where, text, context, is_when=where.endswith(".when"))
                if error is not None:
                    found.setdefault((where, step.name, error), []).append(asset.asset_id)
            if len(found) >= MAX_PROBLEMS:
                break
        earlier.append((step.name, {a.asset_id for a in step_targets}))
    return [_line(key, assets) for key, assets in list(found.items())[:MAX_PROBLEMS]]


def _line(key: tuple[str, str, str], assets: list[str]) -> str:
    where, step, error = key
    shown = ", ".join(assets[:3]) + (f", … ({len(assets)} targets)" if len(assets) > 3 else "")
    target = "target" if len(assets) == 1 else "targets"
    return f"{where} (step {step!r}, {target} {shown}): {error}"


def _check(where: str, text: str, context: dict[str, Any], *, is_when: bool) -> str | None:
    try:
        if is_when:
            condition(text, context, where)
        else:
            render(text, context, where)
    except DataError as exc:
        # On assumed results (a division by the stand-in 0) it may not happen on the
        # real output: only a template over the plan's own values is surely wrong.
        return None if uses_step_results(text) else str(exc).removeprefix(f"{where}: ")
    except StepInputError as exc:
        return str(exc).removeprefix(f"{where}: ")
    return None
