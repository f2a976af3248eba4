"""opsc end to end over SSH: trust a host key, add an asset, run, run record-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import lab_key
from tests.served import opsc


def test_known_hosts_assets_run_and_record_only(
    cli_env: dict[str, str], ssh_lab: Any, tmp_path: Path
) -> None:
    port = str(ssh_lab.ports[3])
    added = opsc(
        cli_env,
        "assets",
        "add",
        "box",
        "--connection",
        "ssh",
        "--address",
        "127.0.0.1",
        "--port",
        port,
        "--username",
        ssh_lab.username,
        "--credential-ref",
        f"file:{lab_key(ssh_lab)}",  # in the tenant's files root (OPSC_FILES_ROOT)
        "--tag",
        "role=box",
    )
    assert added.returncode == 0, added.stderr
    marker = tmp_path / "made-by-ssh"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: touch over ssh\nsteps:\n"
        "  - {name: touch, type: command, action_class: modify, targets: {tags: {role: box}},\n"
        f"     command: 'touch {marker} && echo touched'}}\n"
    )

    refused = opsc(cli_env, "run", str(plan))  # no trusted host key yet
    assert refused.returncode == 1
    assert "known_hosts" in refused.stdout and not marker.exists()

    scanned = opsc(cli_env, "known-hosts", "add", "127.0.0.1", "--port", port, "--scan")
    assert scanned.returncode == 0, scanned.stderr
    assert f"trusted 127.0.0.1:{port} SHA256:" in scanned.stdout
    listed = opsc(cli_env, "known-hosts", "list")
    assert port in listed.stdout and "SHA256:" in listed.stdout

    dark = opsc(cli_env, "run", "--record-only", str(plan), "-k", "dark-1")
    assert dark.returncode == 0, dark.stdout + dark.stderr
    assert "record-only" in dark.stdout and not marker.exists()

    real = opsc(cli_env, "run", str(plan), "-k", "real-1")
    assert real.returncode == 0, real.stdout + real.stderr
    assert marker.exists() and "touched" in real.stdout

    on = opsc(cli_env, "tenant", "record-only", "on")
    assert on.returncode == 0 and "record-only on" in on.stdout
    marker.unlink()
    dark_tenant = opsc(cli_env, "run", str(plan), "-k", "real-2")
    assert dark_tenant.returncode == 0 and not marker.exists()

    removed = opsc(cli_env, "known-hosts", "remove", "127.0.0.1", "--port", port)
    assert removed.returncode == 0 and "removed 1 key(s)" in removed.stdout
    again = opsc(cli_env, "known-hosts", "remove", "127.0.0.1", "--port", port)
    assert again.returncode == 2
