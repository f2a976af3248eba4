"""The ``opsc`` command line. Exit codes: 0 success, 1 the operation failed, 2 bad input.

Without a login, commands act on the installation's database as its local administrator
(``local-admin:<unix user>``); after ``opsc login URL`` they go through that server's REST
API as the token's actor. Identity never comes from an environment variable.

This module stays light: the commands an operator types in a hurry (``opsc list``,
``show``, ``cancel``...) load only the module that defines them, not every command group
(``commands.py`` gathers all of them, for everything else and for ``--help``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

#: The root command's settings, shared by the quick path and the full app.
ROOT: dict[str, Any] = {
    "help": "OpsConductor Execution: run infrastructure operations plans safely.",
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
}

#: Command typed in a hurry -> the module that defines it (its typer ``app``). A test checks
#: each against the full app, so the quick path cannot drift from it.
QUICK: dict[str, str] = {
    "list": "opsconductor.cli.watching",
    "show": "opsconductor.cli.watching",
    "watch": "opsconductor.cli.watching",
    "approve": "opsconductor.cli.deciding",
    "reject": "opsconductor.cli.deciding",
    "cancel": "opsconductor.cli.deciding",
    "validate": "opsconductor.cli.running",
    "run": "opsconductor.cli.running",
    "submit": "opsconductor.cli.running",
}


def app_for(first: str | None) -> Any:
    """The typer app that can run a command line starting with ``first``: only the defining
    module's commands for a quick command, else all of them."""
    import typer

    module = QUICK.get(first or "")
    if module is None:
        from opsconductor.cli.commands import app as everything

        return everything
    quick = typer.Typer(**ROOT)
    # The module's commands, all of them: two or more keep typer from turning a lone
    # command into the root command.
    quick.registered_commands.extend(importlib.import_module(module).app.registered_commands)
    return quick


def main() -> None:
    app_for(sys.argv[1] if len(sys.argv) > 1 else None)(prog_name="opsc")
