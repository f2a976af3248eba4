"""Inbound webhooks over HTTP: a signed delivery starts the job with params mapped from
its body; what is refused is recorded. (Forgeries and replays: tests/security/.)"""

from __future__ import annotations

import json
import time
from typing import Any

from opsconductor import hooks
from tests.api.support import Api

JOBS = "/api/v1/jobs"


def job_plan() -> dict[str, Any]:
    return {
        "name": "release",
        "params": {
            "version": {"type": "string"},
            "repo": {"type": "string"},
            "dry_run": {"type": "bool", "default": False},
            "stage": {"type": "choice", "choices": ["staging", "prod"], "default": "staging"},
        },
        "steps": [{"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
    }


async def make_hook(api: Api, **extra: Any) -> tuple[dict[str, str], dict[str, Any]]:
    headers = await api.login("acme", "olga", "operator")
    saved = await api.client.put(f"{JOBS}/release", json=job_plan(), headers=headers)
    assert saved.status_code == 201, saved.text
    body = {"mapping": {"version": "/release/tag", "repo": "repository.full_name"}, **extra}
    made = await api.client.post(f"{JOBS}/release/hooks", json=body, headers=headers)
    assert made.status_code == 201, made.text
    return headers, made.json()


def signed(secret: str, payload: Any, *, at: float | None = None, **extra: str) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time() if at is None else at))
    return {
        "content": body,
        "headers": {
            "Content-Type": "application/json",
            hooks.TIMESTAMP_HEADER: stamp,
            hooks.SIGNATURE_HEADER: "sha256=" + hooks.sign(secret, stamp, body),
            **extra,
        },
    }


PAYLOAD = {"release": {"tag": "v1.4.2"}, "repository": {"full_name": "acme/shop"}}


async def test_a_signed_delivery_starts_the_job_with_mapped_params(api: Api) -> None:
    headers, hook = await make_hook(api, params={"dry_run": True})
    assert hook["path"] == f"/api/v1/hooks/{hook['id']}" and len(hook["secret"]) >= 40
    got = await api.client.post(hook["path"], **signed(hook["secret"], PAYLOAD))
    assert got.status_code == 202, got.text
    started = got.json()
    assert (started["job"], started["job_version"]) == ("release", 1)
    execution = await api.client.get(
        f"/api/v1/executions/{started['execution_id']}", headers=headers
    )
    assert execution.json()["job_name"] == "release"
    async with api.db.connection() as conn:
        cur = await conn.execute(
            "SELECT plan_snapshot -> 'params' AS params FROM execution.executions WHERE id = %s",
            (started["execution_id"],),
        )
        row = await cur.fetchone()
    assert row is not None
    assert row["params"] == {
        "version": "v1.4.2",
        "repo": "acme/shop",
        "dry_run": True,
        "stage": "staging",
    }
    listed = (await api.client.get(f"{JOBS}/release/hooks", headers=headers)).json()
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    log = await api.client.get(f"{JOBS}/release/hooks/{hook['id']}/deliveries", headers=headers)
    (accepted,) = log.json()
    assert accepted["accepted"] and accepted["status_code"] == 202
    assert accepted["execution_id"] == started["execution_id"]


async def test_a_body_that_does_not_fit_the_params_is_refused_and_recorded(api: Api) -> None:
    headers, hook = await make_hook(
        api, mapping={"version": "/v", "stage": "/stage"}, params={"repo": "r"}
    )
    wrong = await api.client.post(
        hook["path"], **signed(hook["secret"], {"v": "1", "stage": "moon-base-secret"})
    )
    assert wrong.status_code == 400 and "params.stage" in wrong.text
    nested = await api.client.post(hook["path"], **signed(hook["secret"], {"v": {"a": 1}}))
    assert nested.status_code == 400 and "mapping.version: /v is a object" in nested.text
    log = await api.client.get(f"{JOBS}/release/hooks/{hook['id']}/deliveries", headers=headers)
    reasons = [d["reason"] for d in log.json()]
    assert len(reasons) == 2 and all(not d["accepted"] for d in log.json())
    assert "moon-base-secret" not in log.text  # the body's values are not recorded


async def test_hooks_need_rights_and_known_params(api: Api) -> None:
    headers, _ = await make_hook(api)
    unknown = await api.client.post(
        f"{JOBS}/release/hooks", json={"mapping": {"nope": "/x"}}, headers=headers
    )
    assert unknown.status_code == 400 and "mapping.nope" in unknown.text
    too_many = {f"p{i}": "/x" for i in range(40)}
    bounded = await api.client.post(
        f"{JOBS}/release/hooks", json={"mapping": too_many}, headers=headers
    )
    assert bounded.status_code == 400 and "at most 32" in bounded.text
    viewer = await api.login("acme", "vera", "viewer")
    refused = await api.client.post(f"{JOBS}/release/hooks", json={}, headers=viewer)
    assert refused.status_code == 403
