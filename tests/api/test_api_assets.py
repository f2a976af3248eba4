"""Assets CRUD over HTTP, per tenant; a database outage answers 503 without a traceback."""

from __future__ import annotations

import httpx

from opsconductor.api.app import create_app
from opsconductor.db.connection import Database
from tests.api.support import Api, command_plan

URL = "/api/v1/assets"


async def test_assets_crud_within_the_tenant(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    other = await api.login("globex", "gil", "admin")
    new = {
        "asset_id": "web-1",
        "hostname": "web-1.internal",
        "environment": "staging",
        "tags": {"role": "web"},
    }
    r = await api.client.post(URL, json=new, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["address"] == "web-1.internal"  # defaults to the hostname

    assert (await api.client.post(URL, json=new, headers=admin)).status_code == 400  # duplicate
    bad = await api.client.post(URL, json={**new, "asset_id": "x", "colour": "red"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["path"] == "body.colour"

    got = (await api.client.get(f"{URL}/web-1", headers=admin)).json()
    assert got["tags"] == {"role": "web"}
    assert (await api.client.get(f"{URL}/web-1", headers=other)).status_code == 404

    r = await api.client.put(
        f"{URL}/web-1", json={"hostname": "web-1.internal", "environment": "prod"}, headers=admin
    )
    assert r.status_code == 200
    assert r.json()["environment"] == "prod"
    assert r.json()["tags"] == {}
    missing = await api.client.put(f"{URL}/nope", json={"hostname": "n"}, headers=admin)
    assert missing.status_code == 404

    ids = [a["asset_id"] for a in (await api.client.get(URL, headers=admin)).json()]
    assert ids == ["localhost", "web-1"]
    assert (await api.client.delete(f"{URL}/web-1", headers=other)).status_code == 404
    assert (await api.client.delete(f"{URL}/web-1", headers=admin)).status_code == 204
    assert (await api.client.get(f"{URL}/web-1", headers=admin)).status_code == 404


async def test_removing_an_asset_keeps_the_history_of_its_executions(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    await api.add_asset("acme", "db-1", "dev")
    plan = command_plan(("echo kept", "read", {"assets": ["db-1"]}))
    done = (await api.client.post("/api/v1/executions", json=plan, headers=admin)).json()
    assert (await api.client.delete(f"{URL}/db-1", headers=admin)).status_code == 204
    again = (await api.client.get(f"/api/v1/executions/{done['id']}", headers=admin)).json()
    assert again["steps"][0]["target_asset_id"] == "db-1"
    assert again["steps"][0]["output"].strip() == "kept"


async def test_database_outage_is_503_problem_not_traceback(database_url: str) -> None:
    db = Database(database_url)
    await db.open()
    await db.close()  # the pool is gone: every query fails
    app = create_app(db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get(URL, headers={"Authorization": "Bearer opsc_x"})
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in r.text
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "the database is unreachable"
        assert (await client.get("/healthz")).status_code == 200


async def test_text_postgres_cannot_store_is_refused_with_its_path(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    r = await api.client.post(
        URL, json={"asset_id": "a1", "hostname": "h", "tags": {"k": "v\x00"}}, headers=admin
    )
    assert r.status_code == 422
    assert "tags.k: text must not contain NUL" in r.json()["detail"]
    r = await api.client.get(f"{URL}/bad%00id", headers=admin)
    assert r.status_code == 400
    assert r.json()["detail"].startswith("path.asset_id: text must not contain NUL")
    plan = command_plan(("echo \x00", "read", {"hostnames": ["localhost"]}))
    r = await api.client.post("/api/v1/executions", json=plan, headers=admin)
    assert r.status_code == 400
    assert r.json()["detail"].startswith("steps[0].command: text must not contain NUL")
    r = await api.client.post(
        "/api/v1/executions",
        content=b'{"name": "\\ud800", "steps": []}',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("name: text must not contain")
