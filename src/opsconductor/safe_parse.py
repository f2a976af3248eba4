"""Bounded decoding of YAML and JSON from outside, before any model sees the data. Pure.

A small document must not become a large amount of work: YAML aliases can multiply a
547-byte input into millions of nodes (the "billion laughs"), deep nesting exhausts
Python's recursion limit, a 5,000-digit integer costs quadratic time to convert, and a
duplicated key silently replaces the first (``approval_level: 2`` then ``0``). Every limit
here is checked while parsing, on the document as the plan model would see it (aliases
counted as if expanded), and each refusal is a ``PlanError`` naming where it happened.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opsconductor.errors import BadInput, PlanError

#: Deepest nesting of mappings and lists; a plan needs fewer than ten levels.
MAX_DEPTH = 64
#: Nodes of the document with every alias expanded (a 500-step plan is ~25,000).
MAX_NODES = 100_000
#: Bytes of scalar text with every alias expanded: the API's body limit, so an expanded
#: document is never larger than one a client could have sent literally.
MAX_EXPANDED_BYTES = 1024 * 1024
#: Digits of an integer (the largest a plan field takes has 19).
MAX_INT_DIGITS = 40

#: C0 controls and DEL, except tab, newline and carriage return. PostgreSQL cannot store NUL,
#: and none of the others has a use in a plan that an escape in the text would not serve.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _limit(source: str, what: str) -> PlanError:
    return PlanError(f"{source}: {what}")


def first_control_char(value: Any, path: str = "") -> tuple[str, str] | None:
    """(path, character) of the first string (key or value) holding a control character."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:  # iterative: depth is checked elsewhere, but this must never recurse deeply
        item, here = stack.pop()
        if isinstance(item, str):
            found = _CONTROL.search(item)
            if found:
                return here or "plan", found.group()
        elif isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                sub_path = f"{here}.{key}" if here else str(key)
                if isinstance(key, str) and _CONTROL.search(key):
                    return f"{here or 'plan'} (a key)", _CONTROL.search(key).group()  # type: ignore[union-attr]
                stack.append((sub, sub_path))
        elif isinstance(item, list):
            for index in reversed(range(len(item))):
                stack.append((item[index], f"{here}[{index}]"))
    return None


def check_control_chars(value: Any) -> None:
    found = first_control_char(value)
    if found is not None:
        path, char = found
        raise PlanError(
            f"{path}: control character U+{ord(char):04X} is not allowed (only tab, newline "
            "and carriage return)"
        )


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts while composing and refuses duplicate keys when constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # The composer recurses once per level: stop long before Python's recursion limit.
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event())  # type: ignore[no-untyped-call]
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} nodes", self.peek_event())  # type: ignore[no-untyped-call]
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            # Literal keys only, before merge keys (<<) are flattened in: a merged key that
            # the mapping sets again is an override by design, not a duplicate.
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node, deep=deep)
                    if key in seen:
                        raise ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(node.value)
        if sum(ch.isdigit() for ch in text) > MAX_INT_DIGITS:
            raise ConstructorError(
                None, None, f"integer longer than {MAX_INT_DIGITS} digits", node.start_mark
            )
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, event: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = getattr(event, "start_mark", None)


def _expanded(root: Node, source: str) -> None:
    """Refuse a document whose aliases, expanded, exceed the node or byte budget.

    Each node's expanded size is computed once (aliases share node objects), so this costs
    the size of the document as written, not as expanded; a node reached while its own size
    is still being computed is a recursive alias, which no plan can use either.
    """
    sizes: dict[int, tuple[int, int, int]] = {}  # id -> (nodes, bytes, depth)
    busy: set[int] = set()
    # Iterative post-order walk: (node, children done?)
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        if not done:
            if key in busy:
                raise PlanError(f"{source}: a recursive alias (an anchor used inside itself)")
            busy.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in busy and id(child) not in sizes:
                    raise PlanError(f"{source}: a recursive alias (an anchor used inside itself)")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        busy.discard(key)
        nodes, size, depth = 1, len(str(node.value)) if isinstance(node, ScalarNode) else 0, 0
        for child in children:
            c_nodes, c_size, c_depth = sizes[id(child)]
            nodes, size, depth = nodes + c_nodes, size + c_size, max(depth, c_depth + 1)
        if nodes > MAX_NODES:
            raise PlanError(f"{source}: more than {MAX_NODES} nodes once aliases are expanded")
        if size > MAX_EXPANDED_BYTES:
            raise PlanError(
                f"{source}: more than {MAX_EXPANDED_BYTES} bytes of text once aliases are expanded"
            )
        if depth > MAX_DEPTH:
            raise PlanError(f"{source}: nested deeper than {MAX_DEPTH} levels")
        sizes[key] = (nodes, size, depth)


def load_yaml(text: str, source: str = "plan") -> Any:
    """Decode one YAML (or JSON) document within the limits above."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _expanded(root, source)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "refused" if isinstance(exc, _Refused | ConstructorError) else "not valid YAML"
        if isinstance(exc, ComposerError) and "found undefined alias" not in str(problem):
            kind = "not valid YAML"
        raise PlanError(f"{source}: {kind}{where}: {problem}") from None
    finally:
        loader.dispose()
    check_control_chars(data)
    return data


def json_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, strings skipped; cheap, and never recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise PlanError(f"plan: duplicate key {key!r}")
        found[key] = value
    return found


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise PlanError(f"plan: integer longer than {MAX_INT_DIGITS} digits")
    return int(text)


def load_json(text: str, source: str = "body") -> Any:
    """Decode JSON within the same limits as YAML (it has no aliases to expand); the caller
    checks the text (``check_control_chars``) after its own storability check."""
    if json_depth(text) > MAX_DEPTH:
        raise PlanError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_int=_integer)
    except json.JSONDecodeError as exc:
        # Syntax is a 400 like any malformed body; the limits above are plan errors (422).
        raise BadInput(f"{source}: not valid JSON ({exc}); send YAML as application/yaml") from None
    return data
