"""The tenant's ssh_config (connectors/ssh_config.py) and how an asset becomes an SSH target
with its bastions (connectors/ssh_reach.py). Pure; the real connections are in
test_bastion.py."""

from __future__ import annotations

import pytest

from opsconductor.connectors import ssh_config
from opsconductor.connectors.outcome import StepInputError
from opsconductor.connectors.ssh import SshTarget
from opsconductor.connectors.ssh_reach import target_for
from opsconductor.inventory import Asset

CONFIG = """
# comments and blank lines are skipped
User everyone
Host web-* !web-9
    HostName %h.internal
    Port 2200
    IdentityFile keys/web
    ProxyJump ops@jump.example.com:2222
    ForwardAgent yes
Host jump.example.com
    IdentityFile=keys/jump
    Port 99
Match host db
    User ignored
Host *
    Port=22
    User last
    ProxyCommand nc %h %p
"""


def test_first_value_wins_and_only_honoured_keys_apply() -> None:
    config = ssh_config.parse(CONFIG)
    assert config.lookup("web-1") == ssh_config.HostConfig(
        hostname="web-1.internal",
        port=2200,
        user="everyone",  # before the first Host line: every host, and first
        identity_file="keys/web",
        proxy_jump="ops@jump.example.com:2222",
    )
    assert config.lookup("web-9") == ssh_config.HostConfig(port=22, user="everyone")
    assert config.lookup("db") == ssh_config.HostConfig(port=22, user="everyone")
    assert config.warnings == (
        "ssh_config line 9: ForwardAgent is not supported; ignored",
        "ssh_config line 13: Match blocks are not supported; block ignored",
        "ssh_config line 18: ProxyCommand is not supported; ignored",
    )


def test_a_bad_port_is_warned_not_used() -> None:
    config = ssh_config.parse("Host a\n  Port http\n")
    assert config.lookup("a").port is None
    assert config.warnings == ("ssh_config line 2: Port 'http' is not a port number; ignored",)


def test_proxyjump_hops() -> None:
    assert ssh_config.hops("a, ops@b:2222,ssh://c") == [
        (None, "a", None),
        ("ops", "b", 2222),
        (None, "c", None),
    ]
    assert ssh_config.hops("none") == []
    with pytest.raises(ValueError, match="use \\[user@\\]host\\[:port\\]"):
        ssh_config.hops("b:port")


def ssh_asset(asset_id: str, **kw: object) -> Asset:
    fields: dict[str, object] = {"address": asset_id, "username": "u", **kw}
    return Asset(asset_id, f"{asset_id}.test", environment="test", connection_type="ssh",
                 **fields)  # type: ignore[arg-type]  # fmt: skip


def test_asset_fields_win_over_the_config_and_proxy_jump_names_an_asset() -> None:
    config = ssh_config.parse(CONFIG)
    bastion = ssh_asset("bastion", address="10.0.0.1", port=2022, credential_ref="file:b")
    web = ssh_asset("web-1", port=2201, proxy_jump="bastion")
    assert target_for(web, {"bastion": bastion}, config) == SshTarget(
        host="web-1.internal",
        port=2201,
        username="u",
        credential_ref="file:keys/web",
        jump=SshTarget("10.0.0.1", 2022, "u", "file:b"),
    )


def test_the_configs_proxyjump_becomes_a_checked_hop() -> None:
    web = ssh_asset("web-2", username=None)
    target = target_for(web, {}, ssh_config.parse(CONFIG))
    assert target.jump == SshTarget("jump.example.com", 2222, "ops", "file:keys/jump")
    assert target.where == "everyone@web-2.internal:2200 via ops@jump.example.com:2222"


def test_a_missing_local_or_looping_bastion_is_refused() -> None:
    empty = ssh_config.SshConfig()
    with pytest.raises(StepInputError, match="proxy_jump 'gone': no such asset"):
        target_for(ssh_asset("a", proxy_jump="gone"), {}, empty)
    local = Asset("localhost", "localhost", "127.0.0.1", "local")
    with pytest.raises(StepInputError, match="a bastion is an ssh asset"):
        target_for(ssh_asset("a", proxy_jump="localhost"), {"localhost": local}, empty)
    a, b = ssh_asset("a", proxy_jump="b"), ssh_asset("b", proxy_jump="a")
    with pytest.raises(StepInputError, match="loops or goes too deep: a -> b -> a"):
        target_for(a, {"a": a, "b": b}, empty)
