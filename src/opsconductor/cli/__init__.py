"""The ``opsc`` command line. Exit codes: 0 success, 1 the operation failed, 2 bad input.

Without a login, commands act on the installation's database as its local administrator
(``local-admin:<unix user>``); after ``opsc login URL`` they go through that server's REST
API as the token's actor. Identity never comes from an environment variable.
"""

from __future__ import annotations

import typer

from opsconductor.cli import (
    access,
    executions,
    hooks,
    host,
    inventory,
    jobs,
    schedules,
    secrets,
    system,
)
from opsconductor.cli import staging as _staging  # noqa: F401  (opsc tenant stage, canary)
from opsconductor.cli.history import history_app

app = typer.Typer(
    help="OpsConductor Execution: run infrastructure operations plans safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for commands in (executions.app, access.app, system.app):
    app.registered_commands.extend(commands.registered_commands)
app.add_typer(inventory.assets_app, name="assets")
app.add_typer(inventory.hosts_app, name="known-hosts")
app.add_typer(inventory.tenant_app, name="tenant")
app.add_typer(secrets.secrets_app, name="secrets")
app.add_typer(secrets.masking_app, name="masking")
app.add_typer(access.tokens_app, name="tokens")
app.add_typer(access.roles_app, name="roles")
app.add_typer(executions.dlq_app, name="dlq")
app.add_typer(host.files_app, name="files")
app.add_typer(history_app, name="history")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(schedules.schedules_app, name="schedules")
app.add_typer(hooks.hooks_app, name="hooks")


def main() -> None:
    app(prog_name="opsc")
