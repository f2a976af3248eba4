"""Inventory sources over the API: tenant admins add, list, sync (dry run, then apply) and
remove them; others are refused; bad input is a 400 naming the field."""

from __future__ import annotations

from opsconductor.config import load_settings
from opsconductor.db import audit
from opsconductor.secret_store import put
from tests.api.support import Api
from tests.netbox_lab import NetBox, device, netbox, vm

URL = "/api/v1/inventory/sources"


async def test_inventory_sources_over_the_api(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    operator = await api.login("acme", "otto", "operator")
    state = NetBox(devices=[device(1, "sw-1", "10.0.0.1"), device(2, "sw-2", "10.0.0.2")])
    state.vms = [vm(1, "app-1", "10.1.0.1")]
    with netbox(state) as nb:
        await put(api.db, load_settings().home, "acme", "nb/token", nb.token, "test")
        body = {"name": "nb", "kind": "netbox", "url": nb.url + "/", "token_ref": "nb/token"}
        denied = await api.client.post(URL, json=body, headers=operator)
        assert denied.status_code == 403, denied.text
        made = await api.client.post(URL, json={**body, "every": "30m"}, headers=admin)
        assert made.status_code == 201, made.text
        assert made.json()["url"] == nb.url and made.json()["every"] == "30m"
        bad = await api.client.post(URL, json={**body, "name": "n2", "every": "5s"}, headers=admin)
        assert bad.status_code == 400 and bad.json()["detail"].startswith("every:")

        dry = await api.client.post(f"{URL}/nb/sync", params={"dry_run": "true"}, headers=admin)
        assert dry.status_code == 200, dry.text
        assert dry.json()["applied"] is False
        assert [a["asset_id"] for a in dry.json()["added"]] == ["app-1", "sw-1", "sw-2"]
        assert dry.json()["added"][1]["fields"]["address"] == "10.0.0.1"
        assets = (await api.client.get("/api/v1/assets", headers=admin)).json()
        assert [a["asset_id"] for a in assets] == ["localhost"]

        done = await api.client.post(f"{URL}/nb/sync", headers=admin)
        assert done.json()["applied"] is True and len(done.json()["added"]) == 3
        nb.devices.pop()
        nb.devices[0] = device(1, "sw-1", "10.0.0.11")
        again = (await api.client.post(f"{URL}/nb/sync", headers=admin)).json()
        assert again["changed"] == [
            {
                "asset_id": "sw-1",
                "changes": [{"field": "address", "old": "10.0.0.1", "new": "10.0.0.11"}],
            }
        ]
        assert again["removed"] == [{"asset_id": "sw-2", "hostname": "sw-2", "address": "10.0.0.2"}]

    listed = (await api.client.get(URL, headers=admin)).json()
    assert [(s["name"], s["last_result"], s["last_counts"]) for s in listed] == [
        ("nb", "ok", {"added": 0, "changed": 1, "removed": 1, "unchanged": 1})
    ]
    assert (await api.client.get(URL, headers=operator)).status_code == 403
    gone = await api.client.delete(f"{URL}/nb", headers=admin)
    assert gone.status_code == 204
    assert (await api.client.delete(f"{URL}/nb", headers=admin)).status_code == 404
    assets = (await api.client.get("/api/v1/assets", headers=admin)).json()
    assert [a["asset_id"] for a in assets] == ["app-1", "localhost", "sw-1"]  # they stay
    async with api.db.connection() as conn:
        kinds = [e["event_type"] for e in await audit.list_events(conn, "acme")]
    assert kinds.count("inventory_synced") == 2
    assert "inventory_source_added" in kinds and "inventory_source_removed" in kinds


async def test_an_unreachable_source_is_a_502_naming_it(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    body = {"name": "nb", "kind": "netbox", "url": "http://127.0.0.1:9"}
    assert (await api.client.post(URL, json=body, headers=admin)).status_code == 201
    r = await api.client.post(f"{URL}/nb/sync", headers=admin)
    assert r.status_code == 502, r.text
    assert r.json()["detail"].startswith("GET /api/dcim/devices/?limit=1000: ConnectError")
    missing = await api.client.post(f"{URL}/nope/sync", headers=admin)
    assert missing.status_code == 404
