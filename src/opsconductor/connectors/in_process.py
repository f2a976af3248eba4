"""Steps that run in the worker's own process: ``http`` requests and ``sql`` queries. Both
are refused when they aim at this host, the control plane's (``loopback``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from opsconductor.connectors import http, loopback, sql
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.actions import Action, authorization, bounded, plain
from opsconductor.connectors.outcome import Outcome, StepInputError
from opsconductor.output import cap_text
from opsconductor.plan import HttpStep, SqlStep
from opsconductor.templating import render, render_data


async def not_this_host(hosts: list[str], access: TenantAccess | None, field: str) -> None:
    """http and sql steps run in this process: this host is the control plane's."""
    refusal = await loopback.refusal(hosts, access, field)
    if refusal is not None:
        raise StepInputError(refusal)


async def http_action(
    step: HttpStep,
    where: str,
    context: dict[str, Any],
    *,
    access: TenantAccess | None,
    client_for: Callable[[bool], httpx.AsyncClient],
) -> Action:
    """An ``http`` step, rendered and checked (not this host); ``client_for(verify_tls)``
    gives the session's client."""

    def build() -> http.Request:  # templates are tenant input: rendered off the loop
        headers = {
            k: render(plain(v, f"{where}.headers.{k}"), context, f"{where}.headers.{k}")
            for k, v in step.headers.items()
        }
        if step.auth is not None:
            headers["authorization"] = authorization(step.auth, f"{where}.auth")
        return http.build(
            step.method,
            render(step.url, context, f"{where}.url"),
            headers,
            None if step.body is None else render(step.body, context, f"{where}.body"),
            render_data(step.json_body, context, f"{where}.json"),
        )

    request = await asyncio.to_thread(build)
    await not_this_host([httpx.URL(request.url).host], access, f"{where}.url")
    client = client_for(step.verify_tls)

    async def send(budget: float) -> Outcome:
        try:
            response = await http.send(client, request, timeout_s=budget)
        except httpx.TimeoutException as exc:
            return Outcome("timeout", error=f"{request.url}: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return Outcome("failed", error=cap_text(f"{request.url}: {exc}"))
        problems = http.failures(step.expect, response)
        status_line = f"HTTP {response.status} {response.reason}".strip()
        if response.truncated:  # the expectations saw only the first part, say so
            status_line += f" (body cut at {http.BODY_LIMIT} bytes)"
        return Outcome(
            "failed" if problems else "completed",
            output=cap_text(response.body),
            stderr=status_line,
            error=cap_text("; ".join(problems)) if problems else None,
        )

    async def run(budget: float, cancel: asyncio.Event | None) -> Outcome:
        return await bounded(send(budget), budget, cancel)

    return Action(f"{request.method} {request.url}", run)


async def sql_action(
    step: SqlStep, where: str, context: dict[str, Any], *, access: TenantAccess | None
) -> Action:
    """A ``sql`` step, rendered and checked (not this host)."""
    dsn = await asyncio.to_thread(render, plain(step.dsn, f"{where}.dsn"), context, f"{where}.dsn")
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise StepInputError(f"{where}.dsn: {exc}") from None
    await not_this_host(loopback.sql_hosts(parts), access, f"{where}.dsn")
    # A writable transaction only when the author asked for one: a step that does not
    # declare its class is *treated* as modify (RBAC, re-runs) but still runs read-only.
    read_only = step.declared_action_class in (None, "read")
    place = f"{parts.get('host', 'localhost')}/{parts.get('dbname', '')}"
    mode = "read-only transaction" if read_only else "transaction"

    async def query(budget: float) -> Outcome:
        try:
            result = await sql.run_query(
                dsn,
                step.query,
                dict(step.params),
                read_only=read_only,
                expected_rows=step.expect.rows if step.expect else None,
                timeout_s=budget,
            )
        except sql.RowGuardFailed as exc:
            return Outcome("failed", error=f"{exc}; rolled back")
        except psycopg.Error as exc:
            return Outcome("failed", error=cap_text(f"{type(exc).__name__}: {exc}"))
        problems = sql.failures(step.expect, result)
        return Outcome(
            "failed" if problems else "completed",
            output=cap_text(result.to_json()),
            error=cap_text("; ".join(problems)) if problems else None,
        )

    async def run(budget: float, cancel: asyncio.Event | None) -> Outcome:
        return await bounded(query(budget), budget, cancel)

    # The summary shows host and database, never the DSN: it may carry a password.
    return Action(f"query {place} in a {mode}", run)
