"""The README's layout section names every module of the package, so a newcomer finds
where a thing lives (and a new module cannot be added without saying what it is for)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "opsconductor"


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^## Layout\n(.*?)^## ", text, re.S | re.M)
    assert found, "README has no '## Layout' section"
    return found[1]


def test_every_module_is_named_in_the_readme_layout() -> None:
    layout = _layout()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        name = path.name
        # routes_executions.py may be named as a group: routes_*.py (executions, ...)
        group = name.startswith("routes_") and name.removeprefix("routes_").removesuffix(".py")
        named = name in layout or f"{path.stem}:" in layout  # cli: "running: validate/..."
        if not named and not (group and "routes_*.py" in layout and group in layout):
            missing.append(str(path.relative_to(PACKAGE)))
    assert not missing, f"modules the README layout does not name: {missing}"
