"""SSH assets over the API keep their login name and credential reference."""

from __future__ import annotations

from tests.api.support import Api

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
