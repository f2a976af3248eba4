"""Inbound webhooks take no token: the HMAC signature is the only proof of the sender.
Forged, stale, replayed and oversized deliveries are refused (401/409/400), start nothing
and are recorded with their reason; the signing secret is stored sealed only."""

from __future__ import annotations

import asyncio
import json
import time

from opsconductor import hooks
from tests.api import conftest as api_fixtures
from tests.api.support import Api
from tests.api.test_api_hooks import JOBS, PAYLOAD, make_hook, signed

api = api_fixtures.api  # the API fixture of tests/api, here too


async def _runs(api: Api) -> int:
    async with api.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM execution.executions WHERE job_name = 'release'"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def _deliveries(api: Api, headers: dict[str, str], hook_id: str) -> list[dict[str, object]]:
    got = await api.client.get(f"{JOBS}/release/hooks/{hook_id}/deliveries", headers=headers)
    found: list[dict[str, object]] = got.json()
    return found


async def test_forged_and_stale_deliveries_are_refused_and_recorded(api: Api) -> None:
    headers, hook = await make_hook(api)
    url, secret = hook["path"], hook["secret"]
    unsigned = await api.client.post(url, json=PAYLOAD)
    assert unsigned.status_code == 401
    forged = await api.client.post(url, **signed("not-the-secret", PAYLOAD))
    assert forged.status_code == 401 and "bad signature" in forged.text
    # A genuine signature over another body: the body was tampered with.
    genuine = signed(secret, PAYLOAD)
    tampered = json.dumps({**PAYLOAD, "release": {"tag": "evil"}}).encode()
    changed = await api.client.post(url, content=tampered, headers=genuine["headers"])
    assert changed.status_code == 401 and "bad signature" in changed.text
    stale = await api.client.post(url, **signed(secret, PAYLOAD, at=time.time() - 301))
    assert stale.status_code == 401 and "stale timestamp" in stale.text
    future = await api.client.post(url, **signed(secret, PAYLOAD, at=time.time() + 301))
    assert future.status_code == 401 and "stale timestamp" in future.text
    mangled = signed(secret, PAYLOAD)
    mangled["headers"][hooks.SIGNATURE_HEADER] = "md5=abc"
    assert (await api.client.post(url, **mangled)).status_code == 401
    assert await _runs(api) == 0
    log = await _deliveries(api, headers, hook["id"])
    assert [d["status_code"] for d in log] == [401] * 6
    assert not any(d["accepted"] for d in log)
    reasons = [str(d["reason"]) for d in log]
    assert sum("bad signature" in r for r in reasons) == 2
    assert sum("stale timestamp" in r for r in reasons) == 2
    unknown = await api.client.post("/api/v1/hooks/AAAAAAAAAAAAAAAAAAAAAAAA", **genuine)
    assert unknown.status_code == 404


async def test_a_replay_is_refused_even_when_concurrent(api: Api) -> None:
    headers, hook = await make_hook(api)
    url, secret = hook["path"], hook["secret"]
    first = signed(secret, PAYLOAD, **{hooks.DELIVERY_HEADER: "gh-1"})
    assert (await api.client.post(url, **first)).status_code == 202
    again = await api.client.post(url, **first)
    assert again.status_code == 409 and "replay" in again.text
    # The same delivery id under a fresh signature (a new timestamp) is a replay too.
    later = signed(secret, PAYLOAD, at=time.time() + 2, **{hooks.DELIVERY_HEADER: "gh-1"})
    assert (await api.client.post(url, **later)).status_code == 409
    # Ten identical requests at once: one starts the job.
    burst = signed(secret, {**PAYLOAD, "n": 2})
    answers = await asyncio.gather(*(api.client.post(url, **burst) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [202] + [409] * 9
    assert await _runs(api) == 2
    log = await _deliveries(api, headers, hook["id"])
    assert sum(1 for d in log if d["accepted"]) == 2
    assert sum(1 for d in log if d["status_code"] == 409) == 11


async def test_body_size_is_bounded(api: Api) -> None:
    _, hook = await make_hook(api)
    huge = {"release": {"tag": "v1"}, "pad": "x" * (hooks.MAX_BODY + 10)}
    refused = await api.client.post(hook["path"], **signed(hook["secret"], huge))
    assert refused.status_code in (400, 413)
    assert await _runs(api) == 0


async def test_the_secret_is_stored_sealed_and_never_shown_again(api: Api) -> None:
    headers, hook = await make_hook(api)
    secret = hook["secret"]
    await api.client.post(hook["path"], **signed(secret, PAYLOAD))
    await api.client.post(hook["path"], **signed("wrong", PAYLOAD))
    async with api.db.connection() as conn:
        for table in ("job_hooks", "hook_deliveries", "secrets", "executions", "execution_events"):
            cur = await conn.execute(f"SELECT t::text AS row FROM execution.{table} t")
            for row in await cur.fetchall():
                assert secret not in row["row"], table
    for path in (f"{JOBS}/release/hooks", f"{JOBS}/release/hooks/{hook['id']}/deliveries"):
        assert secret not in (await api.client.get(path, headers=headers)).text


async def test_a_flood_of_bad_requests_is_refused_but_records_a_bounded_number(api: Api) -> None:
    from opsconductor.services.hooks import REFUSALS_RECORDED_PER_MINUTE as CAP

    headers, hook = await make_hook(api)
    url, secret = hook["path"], hook["secret"]
    answers = [
        (await api.client.post(url, **signed("guess", {**PAYLOAD, "n": n}))).status_code
        for n in range(CAP + 15)
    ]
    assert answers == [401] * (CAP + 15)  # every one refused
    async with api.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM execution.hook_deliveries WHERE hook_id = %s",
            (hook["id"],),
        )
        row = await cur.fetchone()
    assert row is not None and row["n"] == CAP  # but only the minute's budget recorded
    # The genuine sender still gets through, and its delivery is recorded.
    assert (await api.client.post(url, **signed(secret, PAYLOAD))).status_code == 202
    log = await _deliveries(api, headers, hook["id"])
    assert sum(1 for d in log if d["accepted"]) == 1
    assert await _runs(api) == 1


async def test_a_version_saved_later_does_not_run_under_the_hooks_creator(api: Api) -> None:
    """A hook runs as its creator: the version of when it was made, unless she chose to
    follow the latest; a version bob saves later does not run under olga's name."""
    from tests.api.test_api_hooks import job_plan

    headers, pinned = await make_hook(api)
    assert pinned["job_version"] == 1
    body: dict[str, object] = {
        "mapping": {"version": "/release/tag", "repo": "repository.full_name"}
    }
    body["follow_latest"] = True
    following = (await api.client.post(f"{JOBS}/release/hooks", json=body, headers=headers)).json()
    assert following["job_version"] is None
    both = {"version": 1, "follow_latest": True}
    refused = await api.client.post(f"{JOBS}/release/hooks", json=both, headers=headers)
    assert refused.status_code == 400 and "version" in refused.text
    missing = await api.client.post(f"{JOBS}/release/hooks", json={"version": 9}, headers=headers)
    assert missing.status_code == 404
    bob = await api.login("acme", "bob", "operator")
    saved = await api.client.put(
        f"{JOBS}/release", json={**job_plan(), "name": "bob's release"}, headers=bob
    )
    assert saved.status_code == 201, saved.text
    ran = {}
    for hook in (pinned, following):
        got = await api.client.post(hook["path"], **signed(hook["secret"], PAYLOAD))
        assert got.status_code == 202, got.text
        ran[hook["id"]] = got.json()["job_version"]
    assert ran == {pinned["id"]: 1, following["id"]: 2}


async def test_what_needs_no_secret_is_refused_before_the_hook_is_read(api: Api) -> None:
    """Size, headers and their form, the timestamp's window and the delivery id's form are
    checked before the hook is read or its secret opened: a known and an unknown hook get
    the very same answer (nothing tells whether a hook exists), the known one's refusal is
    recorded all the same, and none of it needs the secret (deleted here: a request that
    reached it would be told it is gone)."""
    from opsconductor import secret_store

    headers, hook = await make_hook(api)
    url, secret = hook["path"], hook["secret"]
    unknown = "/api/v1/hooks/" + "A" * 24
    await secret_store.delete(api.db, "acme", f"hooks/{hook['id']}")
    mangled = signed(secret, PAYLOAD)
    mangled["headers"][hooks.SIGNATURE_HEADER] = "md5=abc"
    garbled = signed(secret, PAYLOAD)
    garbled["headers"][hooks.TIMESTAMP_HEADER] = "soon"
    huge = {"release": {"tag": "v1"}, "pad": "x" * (hooks.MAX_BODY + 10)}
    oversized = (await api.client.post(unknown, **signed(secret, huge))).status_code == 413
    cheap = {
        "unsigned": ({"json": PAYLOAD}, 401, "missing"),
        "mangled": (mangled, 401, "expected sha256="),
        "garbled": (garbled, 401, "expected unix seconds"),
        "stale": (signed(secret, PAYLOAD, at=time.time() - 3600), 401, "stale timestamp"),
        "future": (signed(secret, PAYLOAD, at=time.time() + 3600), 401, "stale timestamp"),
        "delivery": (signed(secret, PAYLOAD, **{hooks.DELIVERY_HEADER: "a b"}), 400, "Delivery"),
        # (the app's body limit may answer it first: 413, unrecorded)
        "huge": (
            signed(secret, huge),
            413 if oversized else 400,
            "exceeds" if oversized else "takes",
        ),
    }
    for why, (request, status, reason) in cheap.items():
        known = await api.client.post(url, **request)
        other = await api.client.post(unknown, **request)
        answers = [{**a.json(), "instance": None} for a in (known, other)]  # the URL's path
        assert known.status_code == other.status_code and answers[0] == answers[1], why
        assert known.status_code == status and reason in known.text, why
    # Well-formed and fresh: only now is the hook read and its secret looked for.
    forged = signed("guess", PAYLOAD)
    assert (await api.client.post(unknown, **forged)).status_code == 404
    past = await api.client.post(url, **forged)
    assert past.status_code == 401 and "signing secret is gone" in past.text
    log = await _deliveries(api, headers, hook["id"])
    assert len(log) == len(cheap) - oversized + 1 and not any(d["accepted"] for d in log)
    assert sum("signing secret is gone" in str(d["reason"]) for d in log) == 1
    assert await _runs(api) == 0
    async with api.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM execution.hook_deliveries WHERE hook_id = %s",
            (unknown.rsplit("/", 1)[1],),
        )
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0
