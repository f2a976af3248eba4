"""End to end through a real socket: ``opsc tokens create``, ``opsc serve`` on loopback,
HTTP calls as curl would make them, token revocation, clean stop on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served import logged_in, opsc, serving

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "plans" / "hello.yaml"


def _token(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert result.returncode == 0, result.stdout + result.stderr
    token_id = re.search(r"token id ([0-9a-f-]{36})", result.stdout)
    token = re.search(r"^(opsc_\S+)$", result.stdout, re.MULTILINE)
    assert token_id and token, result.stdout
    return token_id[1], token[1]


@pytest.fixture
def server(cli_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with serving(cli_env) as running:
        yield running


def test_token_submit_poll_cancel_and_revoke_over_a_real_socket(
    cli_env: dict[str, str], server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, proc = server
    env = {**cli_env, "OPSC_TENANT": "acme"}
    # hello.yaml runs on localhost: the installation admin lets tenant acme run local steps
    assert opsc(env, "tenant", "local-exec", "on").returncode == 0
    token_id, token = _token(opsc(env, "tokens", "create", "alice", "--role", "operator"))
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/executions").status_code == 401

        r = http.post(
            "/executions",
            content=HELLO.read_bytes(),
            headers={**auth, "Content-Type": "application/yaml", "Idempotency-Key": "e2e-1"},
        )
        assert r.status_code == 201, r.text
        done = r.json()
        assert done["status"] == "completed"
        assert done["actor_id"] == "alice" and done["tenant_id"] == "acme"
        again = http.post(
            "/executions",
            content=HELLO.read_bytes(),
            headers={**auth, "Content-Type": "application/yaml", "Idempotency-Key": "e2e-1"},
        )
        assert again.status_code == 200
        assert again.json()["id"] == done["id"]

        events = http.get(f"/executions/{done['id']}/events", params={"wait": 5}, headers=auth)
        kinds = [e["event_type"] for e in events.json()["events"]]
        assert kinds[0] == "submitted" and "step_finished" in kinds

        pending_plan = {
            "name": "needs a human",
            "approval_level": 1,
            "steps": [
                {
                    "name": "a",
                    "type": "command",
                    "command": "true",
                    "targets": {"hostnames": ["localhost"]},
                }
            ],
        }
        pending = http.post("/executions", json=pending_plan, headers=auth).json()
        cancelled = http.post(f"/executions/{pending['id']}/cancel", headers=auth)
        assert cancelled.status_code == 200
        assert cancelled.json()["execution"]["status"] == "cancelled"

        revoked = opsc(env, "tokens", "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        assert http.get("/executions", headers=auth).status_code == 401
        assert http.get(url.removesuffix("/api/v1") + "/readyz").json()["status"] == "ready"

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert "Traceback" not in err


def test_local_cli_is_the_installation_admin_and_a_login_is_its_token(
    cli_env: dict[str, str], server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    """Without a login the shell is ``local-admin:<unix user>`` (from the OS, whatever the
    environment says); after ``opsc login`` it is the token's actor with the token's roles."""
    import pwd

    me = f"local-admin:{pwd.getpwuid(os.geteuid()).pw_name}"
    first = opsc({**cli_env, "OPSC_ACTOR": "somebody-else", "USER": "x"}, "run", str(HELLO))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"actor {me}" in first.stdout
    url, _ = server
    intern = logged_in(cli_env, url, "intern", "viewer", config=tmp_path / "intern")
    assert "intern in tenant default (roles: viewer" in opsc(intern, "whoami").stdout
    denied = opsc(intern, "run", str(HELLO), "--idempotency-key", "intern-1")
    assert denied.returncode == 2
    assert "actor 'intern': viewer may not submit executions" in denied.stderr
    listed = opsc(cli_env, "roles", "list")
    assert re.search(rf"admin .*{re.escape(me)}", listed.stdout), listed.stdout
    assert re.search(r"viewer .*intern", listed.stdout), listed.stdout
    assert opsc(intern, "logout").returncode == 0
    assert me in opsc(intern, "whoami").stdout


def test_ctrl_c_ends_open_streams_and_long_polls_instead_of_waiting_for_them(
    cli_env: dict[str, str], server: tuple[str, subprocess.Popen[str]]
) -> None:
    """uvicorn waits for open connections to finish before it stops: an SSE stream (15 s
    keepalives, no end) held Ctrl-C for about 30 s. The stream now ends with a resync (its
    client resumes elsewhere by Last-Event-ID) and a long poll answers at once."""
    url, proc = server
    _, token = _token(opsc(cli_env, "tokens", "create", "otto", "--role", "operator"))
    auth = {"Authorization": f"Bearer {token}"}
    plan = {
        "name": "waits for a human",
        "approval_level": 1,
        "steps": [{"name": "n", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
    }
    with httpx.Client(base_url=url, timeout=60) as http:
        waiting = http.post("/executions", json=plan, headers=auth).json()
        last = http.get(f"/executions/{waiting['id']}/events", headers=auth).json()["events"]
    received: list[str] = []
    polled: list[int] = []

    def stream() -> None:
        with (
            httpx.Client(base_url=url, timeout=120) as http,
            http.stream("GET", "/stream", headers=auth) as r,
        ):
            for line in r.iter_lines():
                received.append(line)

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            after = {"wait": 60, "after": last[-1]["id"]}
            done = http.get(f"/executions/{waiting['id']}/events", params=after, headers=auth)
            polled.append(done.status_code)

    readers = [threading.Thread(target=stream), threading.Thread(target=poll)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 30
    while "retry: 1000" not in received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "retry: 1000" in received  # the stream is open
    time.sleep(1.5)  # and the long poll, sent with it, is parked
    stopping = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    took = time.monotonic() - stopping
    for reader in readers:
        reader.join(timeout=30)
    assert proc.returncode == 0
    assert "event: resync" in received
    assert polled == [200]  # answered (nothing new), not cut off
    # liveness, not speed: well under the stream's own life, far from uvicorn's wait
    assert took < 12, f"the server took {took:.1f} s to stop"
