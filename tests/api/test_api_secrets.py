"""``/api/v1/secrets``: write-only. Values go in sealed and never come back out; only
callers allowed to manage secrets may touch them; a run uses them and masks them."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from opsconductor import keyring
from tests.api.support import LOCAL, Api, command_plan

URL = "/api/v1/secrets"
VALUE = "api-Secret-0451-value"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(keyring.KEY_ENV, raising=False)


async def test_secrets_are_write_only_and_used_masked(api: Api, database_url: str) -> None:
    admin = await api.login("acme", "root", "admin")
    created = await api.client.put(f"{URL}/kv/app/token", json={"value": VALUE}, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json() == {"path": "kv/app/token", "created": True}
    replaced = await api.client.put(f"{URL}/kv/app/token", json={"value": VALUE}, headers=admin)
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    listed = await api.client.get(URL, headers=admin)
    assert [s["path"] for s in listed.json()] == ["kv/app/token"]
    for response in (created, replaced, listed):
        assert VALUE not in response.text
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT s::text FROM execution.secrets s").fetchall()
    assert len(rows) == 1 and VALUE not in rows[0][0]

    plan = command_plan(('echo "token=$TOKEN"', "read", LOCAL))
    plan["steps"][0]["env"] = {"TOKEN": {"secret": "kv/app/token"}}
    ran = await api.client.post("/api/v1/executions?wait=true", json=plan, headers=admin)
    assert ran.status_code in (200, 201), ran.text
    execution_id = ran.json()["id"]
    steps = await api.client.get(f"/api/v1/executions/{execution_id}/steps", headers=admin)
    events = await api.client.get(f"/api/v1/executions/{execution_id}/events", headers=admin)
    assert "token=****" in steps.text
    assert "secret_resolved" in events.text
    for response in (ran, steps, events):
        assert VALUE not in response.text

    gone = await api.client.delete(f"{URL}/kv/app/token", headers=admin)
    assert gone.status_code == 204
    assert (await api.client.delete(f"{URL}/kv/app/token", headers=admin)).status_code == 404


async def test_only_secret_managers_may_touch_secrets(api: Api) -> None:
    operator = await api.login("acme", "olga", "operator")
    denied = await api.client.put(f"{URL}/kv/x", json={"value": VALUE}, headers=operator)
    assert denied.status_code == 403
    assert (await api.client.get(URL, headers=operator)).status_code == 403
    admin = await api.login("acme", "root", "admin")
    bad = await api.client.put(f"{URL}/kv/x", json={"value": VALUE, "extra": 1}, headers=admin)
    assert bad.status_code == 422 and VALUE not in bad.text
