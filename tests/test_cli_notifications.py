"""opsc notifications as a user meets it: real processes, a real receiver, exit codes; the
same commands after ``opsc login`` go through the API."""

from __future__ import annotations

from pathlib import Path

from tests.notify_support import http_receiver, smtp_receiver
from tests.served import logged_in, opsc, serving


def _ok(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = opsc(env, *args, stdin=stdin)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_channels_add_list_test_deliveries_remove(cli_env: dict[str, str]) -> None:
    _ok(cli_env, "tenant", "local-exec", "on", "--network")  # the receivers are on loopback
    _ok(cli_env, "secrets", "set", "kv/hooks/sign", stdin="cli-signing-key-0042\n")
    with http_receiver(500) as down, smtp_receiver() as box:
        added = _ok(
            cli_env,
            "notifications",
            "channels",
            "add",
            "ops",
            "--webhook",
            down.url,
            "--secret",
            "kv/hooks/sign",
            "--event",
            "execution_failed",
            "--event",
            "dlq_entry",
        )
        assert "added webhook channel ops" in added
        _ok(
            cli_env,
            "notifications",
            "channels",
            "add",
            "mail",
            "--email-to",
            "a@example.org",
            "--smtp-host",
            box.host,
            "--smtp-port",
            str(box.port),
            "--from",
            "opsc@example.org",
            "--event",
            "all",
        )
        listed = _ok(cli_env, "notifications", "channels", "list")
        assert "ops" in listed and "kv/hooks/sign" in listed and "a@example.org" in listed
        failed = opsc(cli_env, "notifications", "channels", "test", "ops")
        assert failed.returncode == 1 and "test message pending: HTTP 500" in failed.stdout
        sent = _ok(cli_env, "notifications", "channels", "test", "mail")
        assert "test message delivered: SMTP accepted" in sent
        assert len(box.messages) == 1
    log = _ok(cli_env, "notifications", "deliveries", "--channel", "ops")
    assert "pending" in log and "HTTP 500" in log and "delivered" not in log
    bad = opsc(
        cli_env,
        "notifications",
        "channels",
        "add",
        "x",
        "--email-to",
        "a@example.org",
        "--smtp-host",
        "mail.example.org",
        "--from",
        "o@example.org",
        "--event",
        "all",
        "--smtp-user",
        "u",
        "--smtp-password-secret",
        "kv/hooks/sign",
    )
    assert bad.returncode == 2 and "credentials need STARTTLS" in bad.stdout + bad.stderr
    _ok(cli_env, "notifications", "channels", "remove", "ops")
    assert "ops" not in _ok(cli_env, "notifications", "channels", "list").split()


def test_the_same_commands_through_the_api(cli_env: dict[str, str], tmp_path: Path) -> None:
    _ok(cli_env, "tenant", "local-exec", "on", "--network")
    _ok(cli_env, "secrets", "set", "kv/hooks/sign", stdin="cli-signing-key-0042\n")
    with serving(cli_env) as (url, _), http_receiver(200) as hook:
        admin = logged_in(cli_env, url, "alice", "admin", config=tmp_path / "alice")
        _ok(
            admin,
            "notifications",
            "channels",
            "add",
            "ops",
            "--webhook",
            hook.url,
            "--secret",
            "kv/hooks/sign",
            "--event",
            "all",
        )
        assert "test message delivered: HTTP 200" in _ok(
            admin, "notifications", "channels", "test", "ops"
        )
        assert "delivered" in _ok(admin, "notifications", "deliveries")
        viewer = logged_in(cli_env, url, "vic", "viewer", config=tmp_path / "vic")
        denied = opsc(viewer, "notifications", "channels", "list")
        assert denied.returncode == 2 and "notifications" in denied.stdout + denied.stderr
    assert len(hook.requests) == 1
