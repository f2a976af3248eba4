"""Authentication, tenant isolation and RBAC at the API, over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsconductor.db import auth
from tests.api.support import LOCAL, Api, command_plan

URL = "/api/v1/executions"
PLAN = command_plan(("echo hi", "read", LOCAL))


async def test_no_token_bad_token_and_wrong_scheme_are_401(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer opsc_not-a-real-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ):
        r = await api.client.get("/api/v1/executions", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"
        body = r.json()
        assert body["status"] == 401 and body["title"] == "Unauthorized" and body["detail"]


async def test_revoked_and_expired_tokens_are_401(api: Api) -> None:
    async with api.db.transaction() as conn:
        live = await auth.create_token(conn, "acme", "alice")
        old = await auth.create_token(
            conn, "acme", "alice", expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        await auth.grant(conn, "acme", "alice", "viewer", granted_by="test")
    headers = {"Authorization": f"Bearer {live.token}"}
    assert (await api.client.get("/api/v1/executions", headers=headers)).status_code == 200
    expired = {"Authorization": f"Bearer {old.token}"}
    assert (await api.client.get("/api/v1/executions", headers=expired)).status_code == 401
    async with api.db.connection() as conn:
        assert await auth.revoke_token(conn, "acme", str(live.token_id))
    r = await api.client.get("/api/v1/executions", headers=headers)
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


async def test_tokens_are_stored_hashed(api: Api) -> None:
    async with api.db.transaction() as conn:
        made = await auth.create_token(conn, "acme", "alice")
        cur = await conn.execute("SELECT token_hash FROM execution.api_tokens")
        stored = [row["token_hash"] for row in await cur.fetchall()]
    assert stored == [auth.hash_token(made.token)]
    assert made.token not in stored


async def test_other_tenants_executions_are_404_for_read_and_cancel(api: Api) -> None:
    acme = await api.login("acme", "alice", "admin")
    globex = await api.login("globex", "mallory", "admin")
    plan = command_plan(("echo hi", "read", LOCAL), approval_level=1)  # stays pending
    created = await api.client.post("/api/v1/executions", json=plan, headers=acme)
    assert created.status_code == 201, created.text
    ident = created.json()["id"]
    for path in ("", "/steps", "/events"):
        r = await api.client.get(f"/api/v1/executions/{ident}{path}", headers=globex)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
        assert "alice" not in r.text
    r = await api.client.post(f"/api/v1/executions/{ident}/cancel", headers=globex)
    assert r.status_code == 404
    listed = await api.client.get("/api/v1/executions", headers=globex)
    assert listed.json()["items"] == []
    # ... and the owner still sees it, untouched
    mine = await api.client.get(f"/api/v1/executions/{ident}", headers=acme)
    assert mine.json()["status"] == "pending_approval"


async def test_viewer_may_read_but_not_submit_cancel_or_manage(api: Api) -> None:
    viewer = await api.login("acme", "vic", "viewer")
    admin = await api.login("acme", "ada", "admin")
    pending = await api.client.post(
        "/api/v1/executions",
        json=command_plan(("true", "read", LOCAL), approval_level=1),
        headers=admin,
    )
    ident = pending.json()["id"]
    assert (await api.client.get("/api/v1/executions", headers=viewer)).status_code == 200
    assert (await api.client.get(f"/api/v1/executions/{ident}", headers=viewer)).status_code == 200
    assert (await api.client.get("/api/v1/assets", headers=viewer)).status_code == 200
    r = await api.client.post("/api/v1/executions", json=PLAN, headers=viewer)
    assert r.status_code == 403
    assert r.json()["detail"] == "actor 'vic': viewer may not submit executions"
    r = await api.client.post(f"/api/v1/executions/{ident}/cancel", headers=viewer)
    assert r.status_code == 403
    r = await api.client.post(
        "/api/v1/assets", json={"asset_id": "x", "hostname": "x"}, headers=viewer
    )
    assert r.status_code == 403
    assert (await api.client.get("/api/v1/roles", headers=viewer)).status_code == 403
    async with api.db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM execution.executions")
        assert (await cur.fetchone() or {})["n"] == 1  # the refused submit stored nothing


async def test_actor_without_roles_is_denied_everything(api: Api) -> None:
    nobody = await api.login("acme", "nobody")
    assert (await api.client.get("/api/v1/executions", headers=nobody)).status_code == 403
    assert (await api.client.get("/api/v1/stats", headers=nobody)).status_code == 403


async def test_operator_runs_read_on_staging_but_cannot_deploy_to_prod(api: Api) -> None:
    await api.add_asset("acme", "stg-1", "staging")
    await api.add_asset("acme", "prod-1", "prod")
    operator = await api.login("acme", "oscar", "operator")
    staging = {"assets": ["stg-1"]}
    prod = {"assets": ["prod-1"]}

    r = await api.client.post(
        "/api/v1/executions", json=command_plan(("echo ok", "read", staging)), headers=operator
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "completed"

    r = await api.client.post(
        "/api/v1/executions",
        json=command_plan(("echo ok", "read", staging), ("echo ship", "deploy", prod)),
        headers=operator,
    )
    assert r.status_code == 403
    assert r.json()["detail"] == (
        "actor 'oscar': steps[1] 'step 1' on 'prod-1': operator may not deploy steps on "
        "'prod' targets"
    )
    r = await api.client.post(
        "/api/v1/executions",
        json=command_plan(("echo ship", "deploy", staging)),
        headers=operator,
    )
    assert r.status_code == 403  # deploy is admin's, even outside prod

    admin = await api.login("acme", "ada", "admin")
    r = await api.client.post(
        "/api/v1/executions", json=command_plan(("echo ship", "deploy", prod)), headers=admin
    )
    assert r.status_code == 201
    assert r.json()["status"] == "completed"


async def test_custom_role_and_bindings_over_the_api(api: Api) -> None:
    await api.add_asset("acme", "prod-1", "prod")
    admin = await api.login("acme", "ada", "admin")
    r = await api.client.post(
        "/api/v1/roles",
        json={
            "name": "prod-reader",
            "permissions": ["executions:view", "executions:submit", "steps:read@prod"],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    r = await api.client.put("/api/v1/actors/pat/roles/prod-reader", headers=admin)
    assert r.json() == {"actor_id": "pat", "roles": ["prod-reader"]}
    made = await api.client.post("/api/v1/tokens", json={"actor_id": "pat"}, headers=admin)
    pat = {"Authorization": f"Bearer {made.json()['token']}"}
    prod = {"assets": ["prod-1"]}
    ok = await api.client.post(
        "/api/v1/executions", json=command_plan(("true", "read", prod)), headers=pat
    )
    assert ok.status_code == 201
    no = await api.client.post(
        "/api/v1/executions", json=command_plan(("true", "modify", prod)), headers=pat
    )
    assert no.status_code == 403
    r = await api.client.put("/api/v1/actors/pat/roles/no-such-role", headers=admin)
    assert r.status_code == 400
    assert (await api.client.delete("/api/v1/roles/prod-reader", headers=admin)).status_code == 204
    assert (await api.client.get("/api/v1/executions", headers=pat)).status_code == 403
    revoked = await api.client.delete(f"/api/v1/tokens/{made.json()['token_id']}", headers=admin)
    assert revoked.status_code == 204
    assert (await api.client.get("/api/v1/executions", headers=pat)).status_code == 401


ROLE_MATRIX = {
    # role: (list, submit read on localhost, cancel, add asset, manage roles, approve)
    "viewer": (200, 403, 403, 403, 403, 403),
    "operator": (200, 201, 200, 403, 403, 403),
    "approver": (200, 403, 403, 403, 403, 200),
    "admin": (200, 201, 200, 201, 200, 200),
}


@pytest.mark.parametrize("role", sorted(ROLE_MATRIX))
async def test_each_builtin_role_allowed_and_denied(api: Api, role: str) -> None:
    requester = await api.login("acme", "requester", "admin")
    me = await api.login("acme", f"{role}-user", role)
    waiting = []
    for i in range(2):  # one to cancel, one to approve; submitted by someone else
        plan = command_plan((f"echo {i}", "read", LOCAL), approval_level=1)
        waiting.append((await api.client.post(URL, json=plan, headers=requester)).json()["id"])
    got = (
        (await api.client.get(URL, headers=me)).status_code,
        (
            await api.client.post(URL, json=command_plan(("true", "read", LOCAL)), headers=me)
        ).status_code,
        (await api.client.post(f"{URL}/{waiting[0]}/cancel", headers=me)).status_code,
        (
            await api.client.post(
                "/api/v1/assets", json={"asset_id": f"{role}-box", "hostname": role}, headers=me
            )
        ).status_code,
        (await api.client.get("/api/v1/roles", headers=me)).status_code,
        (await api.client.post(f"{URL}/{waiting[1]}/approve", json={}, headers=me)).status_code,
    )
    assert got == ROLE_MATRIX[role]
