"""opsc notifications: a tenant's channels (signed webhooks, email) and their delivery log.
Locally through the service, after ``opsc login`` through the API; both give the same rows."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, out, run, session
from opsconductor.config import Settings
from opsconductor.notifications import Channel
from opsconductor.services import notifications
from opsconductor.services.notifications import DeliveryLog, EmailSettings

notifications_app = typer.Typer(
    help="Tell people and systems about approvals, failures, timeouts, SLA violations and "
    "dead letters: signed webhooks and email.",
    no_args_is_help=True,
)
channels_app = typer.Typer(help="The tenant's notification channels.", no_args_is_help=True)
notifications_app.add_typer(channels_app, name="channels")

Row = dict[str, Any]
PATH = "/notifications"


def _channel_row(channel: Channel) -> Row:
    return {
        "name": channel.name,
        "kind": channel.kind.value,
        "target": channel.target,
        "events": [e.value for e in channel.events],
        "secret_ref": channel.secret_ref,
    }


def _delivery_row(log: DeliveryLog) -> Row:
    d = log.delivery
    return {
        "id": d.id,
        "channel": d.channel_name,
        "event_kind": d.event_kind.value,
        "execution_id": d.execution_id,
        "state": d.state.value,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "tries": [{"attempt": a.attempt, "ok": a.ok, "detail": a.detail} for a in log.attempts],
    }


@channels_app.command("add")
def channels_add(
    name: Annotated[str, typer.Argument(help="e.g. oncall")],
    event: Annotated[
        list[str],
        typer.Option(
            "--event",
            help="approval_requested, execution_finished, execution_failed, "
            "execution_timed_out, sla_violated, dlq_entry, or all (repeat for several)",
        ),
    ],
    webhook: Annotated[str | None, typer.Option(help="POST signed JSON to this URL")] = None,
    secret: Annotated[
        str | None, typer.Option(help="secret reference of the webhook's HMAC key")
    ] = None,
    email_to: Annotated[
        list[str] | None, typer.Option("--email-to", help="recipient (repeat for several)")
    ] = None,
    smtp_host: Annotated[str | None, typer.Option()] = None,
    smtp_port: Annotated[int, typer.Option()] = 25,
    sender: Annotated[str | None, typer.Option("--from", help="the sender address")] = None,
    starttls: Annotated[bool, typer.Option(help="upgrade the SMTP connection to TLS")] = False,
    smtp_user: Annotated[str | None, typer.Option(help="SMTP login (needs --starttls)")] = None,
    smtp_password_secret: Annotated[
        str | None, typer.Option(help="secret reference of the SMTP password")
    ] = None,
) -> None:
    """Add a channel: --webhook URL --secret REF, or --email-to ADDR --smtp-host H --from A."""
    if (webhook is None) == (not email_to):
        raise typer.BadParameter("give either --webhook or --email-to")
    body: Row = {"name": name, "events": event}
    if webhook is not None:
        body.update(kind="webhook", url=webhook, secret=secret)
    else:
        body.update(
            kind="email",
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            sender=sender,
            recipients=email_to,
            starttls=starttls,
            smtp_username=smtp_user,
            smtp_password_secret=smtp_password_secret,
        )

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                made: Row = (await s.api.call("POST", f"{PATH}/channels", json_body=body))[1]
                return made
            if webhook is not None:
                channel = await notifications.add_webhook(
                    s.db, s.caller, settings, name, url=webhook, secret=secret or "", events=event
                )
            else:
                email = EmailSettings(
                    host=smtp_host or "",
                    port=smtp_port,
                    sender=sender or "",
                    recipients=tuple(email_to or ()),
                    starttls=starttls,
                    username=smtp_user,
                    password_secret=smtp_password_secret,
                )
                channel = await notifications.add_email(
                    s.db, s.caller, settings, name, email=email, events=event
                )
            return _channel_row(channel)

    made = run(work)
    out.print(
        f"added {made['kind']} channel {made['name']} -> {made['target']} "
        f"({', '.join(made['events'])})",
        highlight=False,
    )


@channels_app.command("list")
def channels_list() -> None:
    """The channels, where they send and what they are told of (secrets by reference)."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get(f"{PATH}/channels")
                return found
            return [_channel_row(c) for c in await notifications.channels(s.db, s.caller)]

    render.table(
        ["name", "kind", "target", "events", "secret"],
        [
            [r["name"], r["kind"], r["target"], ", ".join(r["events"]), r["secret_ref"] or ""]
            for r in run(work)
        ],
    )


@channels_app.command("remove")
def channels_remove(name: str) -> None:
    """Remove a channel (its delivery log goes with it)."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"{PATH}/channels/{quote(name)}")
            else:
                await notifications.remove(s.db, s.caller, name)

    run(work)
    out.print(f"removed notification channel {name}", highlight=False)


@channels_app.command("test")
def channels_test(name: str) -> None:
    """Send a test message now; exit 1 if it was not delivered (the workers retry it)."""

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                sent: Row = (await s.api.call("POST", f"{PATH}/channels/{quote(name)}/test"))[1]
                return sent
            return _delivery_row(await notifications.test(s.db, s.caller, settings, name))

    sent = run(work)
    detail = sent["tries"][-1]["detail"] if sent["tries"] else ""
    out.print(f"test message {sent['state']}: {detail}", highlight=False)
    if sent["state"] != "delivered":
        raise typer.Exit(1)


@notifications_app.command("deliveries")
def deliveries(
    channel: Annotated[str | None, typer.Option(help="only this channel's")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """The delivery log, newest first: state, tries, and what the receiver answered."""

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get(
                    f"{PATH}/deliveries", channel=channel, limit=limit
                )
                return found
            logs = await notifications.deliveries(s.db, s.caller, channel, limit)
            return [_delivery_row(d) for d in logs]

    render.table(
        ["id", "channel", "event", "execution", "state", "tries", "last answer"],
        [
            [
                str(r["id"]),
                r["channel"],
                r["event_kind"],
                str(r["execution_id"] or "")[:8],
                r["state"],
                str(r["attempts"]),
                r["tries"][-1]["detail"] if r["tries"] else "",
            ]
            for r in run(work)
        ],
    )
