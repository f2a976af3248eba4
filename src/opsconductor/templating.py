"""Templates in step fields (``http://{{ asset.address }}/healthz``). Pure.

Jinja2's immutable sandbox: a plan is input from outside, so a template may read the
values we hand it and nothing else (no attribute walks to Python internals, no mutation),
and an unknown name is an error rather than an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError

from opsconductor import template_budget
from opsconductor.connectors.outcome import StepInputError
from opsconductor.inventory import Asset
from opsconductor.plan import SecretText

#: Immutable sandbox with a work budget (template_budget): loops, calls and sizes metered.
_ENV = template_budget.BudgetedEnvironment(undefined=StrictUndefined, autoescape=False)


#: What ``{{ steps.<name>.* }}`` offers of an earlier step's result on the same target.
STEP_FIELDS = ("status", "exit_code", "output", "stderr")


def uses_step_results(text: str) -> bool:
    """Whether a step's fields refer to ``steps.``: only then are earlier results loaded."""
    return "steps." in text or "steps[" in text


def asset_context(
    asset: Asset, results: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """``asset`` and, on the same target, ``steps`` (earlier results by step name; names
    that are not identifiers are reachable as ``steps['check config'].output``)."""
    steps = {name: {k: row.get(k) for k in STEP_FIELDS} for name, row in (results or {}).items()}
    return {
        "steps": steps,
        "asset": {
            "id": asset.asset_id,
            "hostname": asset.hostname,
            "address": asset.address,
            "port": asset.port,
            "os": asset.os,
            "environment": asset.environment,
            "tags": dict(asset.tags),
        },
    }


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


def render_data(value: Any, context: dict[str, Any], where: str) -> Any:
    """Render every string inside JSON-like data (an HTTP ``json`` body)."""
    if isinstance(value, str):
        return render(value, context, where)
    if isinstance(value, list):
        return [render_data(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: render_data(v, context, f"{where}.{k}") for k, v in value.items()}
    return value
