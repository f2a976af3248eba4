"""Connectors over the API: SSH asset fields, record-only submissions."""

from __future__ import annotations

from pathlib import Path

from tests.api.support import Api, command_plan

URL = "/api/v1/assets"


async def test_ssh_asset_username_round_trips(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    new = {
        "asset_id": "db-1",
        "hostname": "db-1.internal",
        "address": "10.0.0.7",
        "port": 2222,
        "connection_type": "ssh",
        "username": "deploy",
        "credential_ref": "env:DB1_KEY",
    }
    r = await api.client.post(URL, json=new, headers=admin)
    assert r.status_code == 201, r.text
    got = (await api.client.get(f"{URL}/db-1", headers=admin)).json()
    assert (got["username"], got["credential_ref"], got["port"]) == ("deploy", "env:DB1_KEY", 2222)
    put = await api.client.put(
        f"{URL}/db-1",
        json={**{k: v for k, v in new.items() if k != "asset_id"}, "username": "ops"},
        headers=admin,
    )
    assert put.status_code == 200 and put.json()["username"] == "ops"


async def test_record_only_submission_touches_nothing(api: Api, tmp_path: Path) -> None:
    admin = await api.login("acme", "ada", "admin")
    marker = tmp_path / "touched"
    plan = command_plan((f"touch {marker}", "modify", {"hostnames": ["localhost"]}))
    r = await api.client.post(
        "/api/v1/executions", params={"record_only": "true"}, json=plan, headers=admin
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["record_only"] is True and body["status"] == "completed"
    assert body["steps"][0]["status"] == "skipped"
    assert body["steps"][0]["output"].startswith("skipped: record-only: would run")
    assert not marker.exists()

    real = await api.client.post("/api/v1/executions", json=plan, headers=admin)
    assert real.status_code == 201 and real.json()["record_only"] is False  # not a duplicate
    assert marker.exists()
