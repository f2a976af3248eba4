"""Re-running the failed over HTTP (``POST /executions/{id}/rerun?failed=true``), grouped
failures in the detail, and record-only at the top level of every execution shape."""

from __future__ import annotations

from typing import Any

from tests.api.support import Api

URL = "/api/v1/executions"


def plan(approval_level: int = 0) -> dict[str, Any]:
    """Three targets; the second step fails on two of them, the same way."""
    return {
        "name": "disk check",
        "approval_level": approval_level,
        "steps": [
            {
                "name": "touch",
                "type": "command",
                "action_class": "read",
                "targets": {"environment": "dev"},
                "command": "true",
            },
            {
                "name": "disk",
                "type": "command",
                "action_class": "read",
                "targets": {"assets": ["web-02", "web-03"]},
                "command": "echo checking >&2; echo 'disk /var 97% full' >&2; exit 1",
            },
        ],
    }


async def setup(api: Api, *roles: str) -> dict[str, str]:
    headers = await api.login("acme", "alice", *roles)
    for name in ("web-01", "web-02", "web-03"):
        await api.add_asset("acme", name, "dev")
    return headers


async def test_rerun_failed_makes_a_linked_execution_over_the_failed_targets(api: Api) -> None:
    headers = await setup(api, "operator")
    first = await api.client.post(URL, json=plan(), headers=headers)
    assert first.status_code == 201, first.text
    old = first.json()
    assert old["status"] == "failed" and old["record_only"] is False
    assert old["failures"] == [
        {
            "step_index": 1,
            "step_name": "disk",
            "message": "exit 1: disk /var 97% full",
            "cause": "exit 1",
            "detail": "disk /var 97% full",
            "count": 2,
            "targets": ["web-02", "web-03"],
            "tail": ["checking", "disk /var 97% full"],
        }
    ]

    again = await api.client.post(
        f"{URL}/{old['id']}/rerun", params={"failed": "true"}, headers=headers
    )
    assert again.status_code == 201, again.text
    new = again.json()
    assert new["rerun_of"] == old["id"] and new["retry_of"] is None
    assert new["plan_hash"] != old["plan_hash"]
    assert sorted({(s["step_name"], s["target_asset_id"]) for s in new["steps"]}) == [
        ("disk", "web-02"),
        ("disk", "web-03"),
        ("touch", "web-02"),
        ("touch", "web-03"),
    ]
    # The plan is the same, each step's selectors narrowed with the failed assets.
    assert new["plan"]["steps"][0]["targets"] == {
        "environment": "dev",
        "assets": ["web-02", "web-03"],
    }
    listed = await api.client.get(URL, headers=headers)
    by_id = {e["id"]: e for e in listed.json()["items"]}
    assert by_id[new["id"]]["rerun_of"] == old["id"] and by_id[old["id"]]["rerun_of"] is None


async def test_a_rerun_needs_approval_again_under_its_new_hash(api: Api) -> None:
    headers = await setup(api, "admin")
    bob = await api.login("acme", "bob", "approver")
    first = await api.client.post(URL, json=plan(approval_level=1), headers=headers)
    old = first.json()
    approved = await api.client.post(f"{URL}/{old['id']}/approve", json={}, headers=bob)
    assert approved.status_code == 200 and approved.json()["status"] == "failed", approved.text

    again = await api.client.post(
        f"{URL}/{old['id']}/rerun", params={"failed": "true"}, headers=headers
    )
    assert again.status_code == 201, again.text
    new = again.json()
    assert new["status"] == "pending_approval"
    assert [a["plan_hash"] for a in new["approvals"]] == [new["plan_hash"]]
    assert new["plan_hash"] != old["plan_hash"]


async def test_what_cannot_be_rerun_is_refused_with_the_reason(api: Api) -> None:
    headers = await setup(api, "operator")
    viewer = await api.login("acme", "vic", "viewer")

    def rerun(ident: str, who: dict[str, str] = headers, **params: str) -> Any:
        return api.client.post(f"{URL}/{ident}/rerun", params=params, headers=who)

    waiting = (await api.client.post(URL, json=plan(approval_level=1), headers=headers)).json()
    refused = await rerun(waiting["id"], failed="true")
    assert refused.status_code == 409, refused.text
    assert "only a finished execution can be re-run" in refused.json()["detail"]

    dark = await api.client.post(URL, params={"record_only": "true"}, json=plan(), headers=headers)
    assert dark.json()["record_only"] is True and dark.json()["status"] == "completed"
    refused = await rerun(dark.json()["id"], failed="true")
    assert refused.status_code == 409 and "record-only" in refused.json()["detail"]

    fine = dict(plan(), steps=plan()["steps"][:1])
    done = (await api.client.post(URL, json=fine, headers=headers)).json()
    assert done["status"] == "completed" and done["failures"] == []
    refused = await rerun(done["id"], failed="true")
    assert refused.status_code == 409
    assert "every target completed every step" in refused.json()["detail"]

    failed = (await api.client.post(URL, json=plan(), headers=headers)).json()
    unflagged = await rerun(failed["id"])
    assert unflagged.status_code == 400 and "failed=true" in unflagged.json()["detail"]
    denied = await rerun(failed["id"], who=viewer, failed="true")
    assert denied.status_code == 403, denied.text
    assert (await rerun("0" * 8, failed="true")).status_code == 404
