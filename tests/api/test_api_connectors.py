"""Connectors over the API: SSH asset fields, record-only submissions, host keys."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from opsconductor.db import audit
from opsconductor.host_keys import HostKey
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
    marker = tmp_path / "work" / "acme" / "touched"  # the tenant's working directory
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


async def test_host_keys_over_the_api_never_add_a_second_key_silently(api: Api) -> None:
    old, new = (
        HostKey.of(asyncssh.generate_private_key("ssh-ed25519").convert_to_public())
        for _ in range(2)
    )
    admin = await api.login("acme", "ada", "admin")
    operator = await api.login("acme", "olga", "operator")
    hosts = "/api/v1/known-hosts"
    first = {"host": "10.0.0.9", "port": 22, "public_key": old.text}
    assert (await api.client.post(hosts, json=first, headers=admin)).status_code == 201
    assert (await api.client.post(hosts, json=first, headers=admin)).status_code == 200

    second = await api.client.post(hosts, json={**first, "public_key": new.text}, headers=admin)
    assert second.status_code == 409
    detail = second.json()["detail"]
    assert "HOST KEY CHANGED" in detail and old.fingerprint in detail
    assert new.fingerprint in detail

    body = {"port": 22, "public_key": new.text, "fingerprint": new.fingerprint}
    denied = await api.client.put(f"{hosts}/10.0.0.9", json=body, headers=operator)
    assert denied.status_code == 403
    wrong = {**body, "fingerprint": old.fingerprint}
    assert (await api.client.put(f"{hosts}/10.0.0.9", json=wrong, headers=admin)).status_code == 400
    done = await api.client.put(f"{hosts}/10.0.0.9", json=body, headers=admin)
    assert done.status_code == 200, done.text
    assert done.json()["old_fingerprints"] == [old.fingerprint]
    assert done.json()["new_fingerprint"] == new.fingerprint
    listed = (await api.client.get(hosts, headers=admin)).json()
    assert [k["public_key"] for k in listed] == [new.text]
    async with api.db.connection() as conn:
        events = await audit.list_events(conn, "acme", "host_key_replaced")
    assert [(e["actor_id"], e["id"]) for e in events] == [("ada", done.json()["audit_event_id"])]
