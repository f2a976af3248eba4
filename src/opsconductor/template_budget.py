"""A work budget for plan templates: the sandbox stops what a template may *reach*, this
stops how much it may *do*. Pure.

Jinja's sandbox caps one ``range`` at 100,000 items but not two nested loops over them
(8000 x 8000 took seconds of CPU, unlike any step timeout, since rendering happens before
the step runs and cannot be interrupted). Every template here is compiled with each loop's
iterable, each call and each string concatenation metered against one budget per render:
``MAX_STEPS`` loop iterations and calls, and ``MAX_TEXT`` characters for any value built
(``*``, ``+``, ``~``, filters' width arguments) and for the output. Past either, rendering
stops with ``BudgetExceeded``, a ``TemplateError`` naming the limit.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from jinja2 import nodes
from jinja2.environment import Template, TemplateExpression
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

#: Loop iterations plus calls (macros, methods, filters) in one render.
MAX_STEPS = 50_000
#: Characters of any string or items of any list a template builds, and of its output.
MAX_TEXT = 1024 * 1024

#: Bits of any integer a template computes.
MAX_INT_BITS = 4096

_ITER = "_opsc_metered_iter"
_SIZED = "_opsc_metered_size"


class BudgetExceeded(SecurityError):
    """A template did more work than a plan field may cost."""


class _Meter:
    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0

    def spend(self, amount: int = 1) -> None:
        self.steps += amount
        if self.steps > MAX_STEPS:
            raise BudgetExceeded(
                f"template budget exceeded: more than {MAX_STEPS} loop iterations and calls"
            )


_meter: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("opsc_meter", default=None)


def _spend(amount: int = 1) -> None:
    meter = _meter.get()
    if meter is not None:
        meter.spend(amount)


def _sized(value: Any) -> Any:
    if isinstance(value, Sized) and not isinstance(value, dict) and len(value) > MAX_TEXT:
        raise BudgetExceeded(f"template budget exceeded: a value longer than {MAX_TEXT}")
    return value


def _metered_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _spend()
        yield item


def _checked_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose integer arguments (widths, counts) cannot ask for more than MAX_TEXT
    and whose result is sized: ``"x"|center(10**9)`` would allocate a gigabyte."""

    @functools.wraps(func)  # keeps jinja's pass_context / pass_environment markers
    def checked(*args: Any, **kwargs: Any) -> Any:
        _spend()
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_TEXT:
                raise BudgetExceeded(f"template budget exceeded: argument {arg} too large")
        return _sized(func(*args, **kwargs))

    return checked


class _Meters(NodeTransformer):
    """Wrap every loop's iterable and every ``~`` concatenation in a metering filter."""

    def __init__(self, environment: BudgetedEnvironment) -> None:
        self.environment = environment

    def _filter(self, node: nodes.Node, name: str) -> nodes.Filter:
        wrapped = nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)
        wrapped.set_environment(self.environment)
        return wrapped

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = self._filter(node.iter, _ITER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return self._filter(node, _SIZED)


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, metered (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _checked_filter(f) for name, f in self.filters.items()}
        self.filters[_ITER] = _metered_iter
        self.filters[_SIZED] = _sized

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _Meters(self).visit(tree)  # type: ignore[no-any-return]

    def compile_condition(self, source: str) -> TemplateExpression:
        """``compile_expression`` with the same meters as a template (jinja's own skips
        ``_parse``, so ``~`` and loops in it would go unmetered); undefined stays an error."""
        parser = Parser(self, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError(
                "chunk after expression", parser.stream.current.lineno, None, None
            )
        body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
        tree = _Meters(self).visit(nodes.Template(body, lineno=1))
        tree.set_environment(self)
        return TemplateExpression(self.from_string(tree), undefined_to_none=False)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if isinstance(left, int) and isinstance(right, int):
            # Integers grow without bound under * and ** (squaring in a loop doubles the
            # digits each time): refuse a result past MAX_INT_BITS before computing it.
            bits = max(left.bit_length(), 1)
            if operator == "**":
                bits = bits * abs(right) if right > 1 else bits
            elif operator == "*":
                bits += right.bit_length()
            if bits > MAX_INT_BITS:
                raise BudgetExceeded(f"template budget exceeded: integer over {MAX_INT_BITS} bits")
        if operator == "*":
            for count, other in ((left, right), (right, left)):
                sized = isinstance(count, int) and isinstance(other, Sized)
                if sized and count * len(other) > MAX_TEXT:
                    raise BudgetExceeded(
                        f"template budget exceeded: a value longer than {MAX_TEXT}"
                    )
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_TEXT:
                raise BudgetExceeded(f"template budget exceeded: argument {arg} too large")
        return _sized(super().call(__context, __obj, *args, **kwargs))


#: Texts up to this long are compiled once and kept (1,024 of them at most); longer ones,
#: rare, are compiled per render so the cache cannot hold megabytes of tenant input.
CACHED_TEXT = 4096


@functools.lru_cache(maxsize=1024)
def _compiled_cached(environment: BudgetedEnvironment, text: str) -> Template:
    return environment.from_string(text)


def _compiled(environment: BudgetedEnvironment, text: str) -> Template:
    # One field is rendered for every target: compile it once (a compiled template holds
    # no state of a render; the meter is looked up while it runs).
    if len(text) <= CACHED_TEXT:
        return _compiled_cached(environment, text)
    return environment.from_string(text)


@functools.lru_cache(maxsize=1024)
def _condition(environment: BudgetedEnvironment, text: str) -> TemplateExpression:
    return environment.compile_condition(text)


def evaluate(environment: BudgetedEnvironment, expression: str, context: dict[str, Any]) -> bool:
    """Whether ``expression`` holds, within one fresh budget (an undefined name raises)."""
    token = _meter.set(_Meter())
    try:
        return bool(_condition(environment, expression)(**context))
    except (RecursionError, MemoryError) as exc:
        raise BudgetExceeded(f"template budget exceeded: {type(exc).__name__}") from None
    finally:
        _meter.reset(token)


def render(environment: BudgetedEnvironment, text: str, context: dict[str, Any]) -> str:
    """Render ``text`` within one fresh budget; output is bounded as it is produced."""
    token = _meter.set(_Meter())
    try:
        pieces: list[str] = []
        size = 0
        for piece in _compiled(environment, text).generate(context):
            size += len(piece)
            if size > MAX_TEXT:
                raise BudgetExceeded(f"template budget exceeded: output longer than {MAX_TEXT}")
            pieces.append(piece)
        return "".join(pieces)
    except (RecursionError, MemoryError) as exc:
        # A macro calling itself: refused like any other excess, not a crash.
        raise BudgetExceeded(f"template budget exceeded: {type(exc).__name__}") from None
    finally:
        _meter.reset(token)
