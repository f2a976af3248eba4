"""Notifications are sent from the worker: a channel aimed at this host would reach the
control plane (the API, PostgreSQL, anything listening on loopback). Attack: a tenant admin
adds a webhook to 127.0.0.1 or an SMTP host ``localhost``; or adds it while the opt-in
holds and keeps it after the installation withdrew the opt-in. Refused at both points,
the same rule as http/sql steps (connectors/loopback.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsconductor import secret_store
from opsconductor.config import load_settings
from opsconductor.db import assets, connectors
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput
from opsconductor.notification_dispatch import Dispatcher, DispatchOptions
from opsconductor.notifications import DeliveryState
from opsconductor.services import notifications as service
from opsconductor.services.caller import local_admin
from tests.notify_support import http_receiver


async def test_channels_to_this_host_are_refused_without_the_opt_in(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSC_HOME", str(tmp_path / "home"))
    settings = load_settings()
    who = await local_admin(db, "default")
    await secret_store.put(db, settings.home, "default", "kv/sign", "k" * 24, "t")
    for url in (
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://0.0.0.0/",
    ):
        with pytest.raises(BadInput, match="control plane's own machine"):
            await service.add_webhook(
                db, who, settings, "h", url=url, secret="kv/sign", events=["all"]
            )
    with pytest.raises(BadInput, match="smtp_host: 'localhost', this host"):
        await service.add_email(
            db,
            who,
            settings,
            "m",
            email=service.EmailSettings("localhost", 25, "a@example.org", ("b@example.org",)),
            events=["all"],
        )
    with pytest.raises(BadInput, match="credentials in the URL"):
        await service.add_webhook(
            db,
            who,
            settings,
            "h",
            url="https://u:p@hooks.example.org/",
            secret="kv/sign",
            events=["all"],
        )
    assert await service.channels(db, who) == []


async def test_a_withdrawn_opt_in_stops_deliveries_to_this_host(
    db: Database, host_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSC_HOME", str(tmp_path / "home"))
    settings = load_settings()
    who = await local_admin(db, "default")
    await secret_store.put(db, settings.home, "default", "kv/sign", "k" * 24, "t")
    with http_receiver(200) as hook:
        await service.add_webhook(
            db, who, settings, "h", url=hook.url, secret="kv/sign", events=["all"]
        )
        async with db.transaction() as conn:
            await assets.ensure_tenant(conn, "default")
            await connectors.set_local_execution(conn, "default", "admin", on=True)
        tested = await service.test(db, who, settings, "h")
        await Dispatcher(db, settings, DispatchOptions(backoff_base_s=0.0)).round()
    assert hook.requests == []
    assert tested.delivery.state is DeliveryState.FAILED  # final: retrying cannot help
    assert "control plane's own machine" in (tested.delivery.last_error or "")
