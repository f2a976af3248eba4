"""``/api/v1/notifications``: admins add, test and remove channels and read the delivery
log; other roles are refused; bad settings are 400s naming the field; no answer carries a
secret value. The app's own worker delivers what an execution's events call for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from opsconductor import keyring, notifications
from tests.api.support import LOCAL, Api, command_plan
from tests.conftest import allow_local
from tests.notify_support import http_receiver

URL = "/api/v1/notifications"
KEY = "api-signing-Key-0917-zz"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(keyring.KEY_ENV, raising=False)


async def test_admins_manage_channels_and_read_deliveries(api: Api) -> None:
    admin = await api.login("acme", "root", "admin")
    operator = await api.login("acme", "op", "operator")
    async with api.db.connection() as conn:
        await allow_local(conn, "acme", network=True)  # the receiver listens on loopback
    put = await api.client.put("/api/v1/secrets/kv/sign", json={"value": KEY}, headers=admin)
    assert put.status_code == 201
    with http_receiver(200) as hook:
        body = {"name": "ops", "kind": "webhook", "url": hook.url, "secret": "kv/sign"}
        denied = await api.client.post(
            f"{URL}/channels", json={**body, "events": ["all"]}, headers=operator
        )
        assert denied.status_code == 403
        missing = await api.client.post(
            f"{URL}/channels", json={**body, "url": None, "events": ["all"]}, headers=admin
        )
        assert missing.status_code == 400 and "url: required" in missing.text
        made = await api.client.post(
            f"{URL}/channels",
            json={**body, "events": ["execution_failed", "approval_requested"]},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        assert made.json()["events"] == ["approval_requested", "execution_failed"]
        tested = await api.client.post(f"{URL}/channels/ops/test", headers=admin)
        assert tested.status_code == 200, tested.text
        assert tested.json()["state"] == "delivered"
        # The app's worker tells the channel of a failed run by itself.
        plan = command_plan(("exit 4", "read", LOCAL), name="api-fails")
        submitted = await api.client.post("/api/v1/executions", json=plan, headers=admin)
        assert submitted.status_code in (200, 201, 202), submitted.text
        for _ in range(600):  # bounded: the worker's loop runs each second
            if len(hook.requests) == 2:
                break
            await asyncio.sleep(0.1)
    got = hook.requests[-1]
    message = json.loads(got.body)
    assert (message["event"], message["plan_name"]) == ("execution_failed", "api-fails")
    assert notifications.verify(
        KEY.encode(), got.headers["X-Opsc-Timestamp"], got.body, got.headers["X-Opsc-Signature"]
    )
    # The receiver has the request before the dispatcher has its answer and records it.
    for _ in range(300):  # bounded, generously
        log = await api.client.get(f"{URL}/deliveries", params={"channel": "ops"}, headers=admin)
        if all(d["state"] != "pending" for d in log.json()):
            break
        await asyncio.sleep(0.1)
    assert [(d["event_kind"], d["state"]) for d in log.json()] == [
        ("execution_failed", "delivered"),
        ("test", "delivered"),
    ]
    listed = await api.client.get(f"{URL}/channels", headers=admin)
    assert [c["name"] for c in listed.json()] == ["ops"]
    for answer in (made, tested, log, listed):
        assert KEY not in answer.text
    gone = await api.client.delete(f"{URL}/channels/ops", headers=admin)
    assert gone.status_code == 204
    again = await api.client.delete(f"{URL}/channels/ops", headers=admin)
    assert again.status_code == 404
