"""Templates in step fields (``http://{{ asset.address }}/healthz``). Pure.

Jinja2's immutable sandbox: a plan is input from outside, so a template may read the
values we hand it and nothing else (no attribute walks to Python internals, no mutation),
and an unknown name is an error rather than an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.utils import missing

from opsconductor import template_budget
from opsconductor.connectors.outcome import StepInputError
from opsconductor.inventory import Asset
from opsconductor.plan import SecretText


class Scope(dict[str, Any]):
    """A mapping a template reads (``asset``, ``params``, ``steps.x``) that knows its own
    name, so an unknown key is reported as ``asset.adress is undefined`` rather than
    jinja's ``'dict object' has no attribute 'adress'``."""

    def __init__(self, path: str, items: Mapping[str, Any]) -> None:
        super().__init__(items)
        self.path = path


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{name!r}]"


class NamedUndefined(StrictUndefined):
    """StrictUndefined whose message names the whole path at fault."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name, obj = self._undefined_name, self._undefined_obj
        if self._undefined_hint is None and isinstance(obj, Scope):
            return f"{_child(obj.path, str(name))} is undefined"
        if self._undefined_hint is None and obj is missing:
            return f"{name} is undefined (known: asset, params, steps)"
        return str(super()._undefined_message)


class DataError(StepInputError):
    """A template that is well formed and names known things, but failed on the values it
    was given (a division by zero, ``int`` of a word)."""


#: Immutable sandbox with a work budget (template_budget): loops, calls and sizes metered.
_ENV = template_budget.BudgetedEnvironment(undefined=NamedUndefined, autoescape=False)

#: What evaluating tenant text may raise besides jinja's own errors (``{{ 1 // 0 }}``,
#: ``{{ "a" | int(base=99) }}``): an input error on that field, never a crash.
_DATA_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError)


#: What ``{{ steps.<name>.* }}`` offers of an earlier step's result on the same target.
STEP_FIELDS = ("status", "exit_code", "output", "stderr")


def uses_step_results(text: str) -> bool:
    """Whether a step's fields refer to ``steps.``: only then are earlier results loaded."""
    return "steps." in text or "steps[" in text


def asset_context(
    asset: Asset,
    results: Mapping[str, Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``asset``, ``params`` (the plan's bound parameters) and, on the same target,
    ``steps`` (earlier results by step name; names that are not identifiers are reachable
    as ``steps['check config'].output``). ``asset.vars`` holds the asset's inventory
    variables when the inventory has them (host and group vars)."""
    steps = Scope(
        "steps",
        {
            name: Scope(_child("steps", name), {k: row.get(k) for k in STEP_FIELDS})
            for name, row in (results or {}).items()
        },
    )
    fields: dict[str, Any] = {
        "id": asset.asset_id,
        "hostname": asset.hostname,
        "address": asset.address,
        "port": asset.port,
        "os": asset.os,
        "environment": asset.environment,
        "tags": Scope("asset.tags", asset.tags),
    }
    # Inventory variables are another issue's; read them if the asset has them.
    inventory_vars = getattr(asset, "vars", None)
    if isinstance(inventory_vars, Mapping):
        fields["vars"] = Scope("asset.vars", inventory_vars)
    return {
        "steps": steps,
        "params": Scope("params", params or {}),
        "asset": Scope("asset", fields),
    }


def is_template(text: str) -> bool:
    return ("{{" in text or "{%" in text) and not isinstance(text, SecretText)


def render(text: str, context: dict[str, Any], where: str) -> str:
    """Render ``text``; ``where`` names the field (``steps[2].url``) in any error."""
    if "{{" not in text and "{%" not in text:
        return text  # the common case, and it keeps literal text literal
    if isinstance(text, SecretText):
        return text  # a secret's value is inserted as it is, never run as a template
    try:
        return template_budget.render(_ENV, text, context)
    except TemplateError as exc:
        raise StepInputError(f"{where}: template error: {exc}") from None
    except _DATA_ERRORS as exc:
        raise DataError(f"{where}: template error: {type(exc).__name__}: {exc}") from None


def condition(expression: str, context: dict[str, Any], where: str) -> bool:
    """Whether a step's ``when`` holds for this context (one target). An expression, as in
    Ansible: ``params.restart and asset.tags.role == 'web'``, not ``{{ … }}``."""
    try:
        return template_budget.evaluate(_ENV, expression, context)
    except TemplateError as exc:
        hint = " (write the expression without {{ }})" if "{{" in expression else ""
        raise StepInputError(f"{where}: condition error: {exc.message}{hint}") from None
    except _DATA_ERRORS as exc:
        raise DataError(f"{where}: condition error: {type(exc).__name__}: {exc}") from None


def render_data(value: Any, context: dict[str, Any], where: str) -> Any:
    """Render every string inside JSON-like data (an HTTP ``json`` body)."""
    if isinstance(value, str):
        return render(value, context, where)
    if isinstance(value, list):
        return [render_data(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: render_data(v, context, f"{where}.{k}") for k, v in value.items()}
    return value
