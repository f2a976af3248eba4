"""How an SSH asset is reached: its address, port, login and credential, the tenant's
``ssh_config`` (``connectors/ssh_config.py``) and the bastion(s) in between.

The asset's own fields win over the config, as the command line wins over the config in
OpenSSH. A bastion named by the asset's ``proxy_jump`` is another asset of the tenant, and
one named by the config's ``ProxyJump`` is a ``[user@]host[:port]`` (looked up in the config
too); either way it becomes an ``SshTarget`` of its own, so the pool checks its host key
against the tenant's known_hosts like any target's, before anything goes through it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from opsconductor.connectors import ssh_config, tenant_files
from opsconductor.connectors.outcome import StepInputError
from opsconductor.connectors.ssh import SshTarget, default_username
from opsconductor.connectors.ssh_config import SshConfig
from opsconductor.inventory import Asset

log = logging.getLogger(__name__)

#: bastions behind bastions: more is a loop or a mistake
MAX_HOPS = 8


def load_config(files_root: Path | None) -> SshConfig:
    """The tenant's ``ssh_config`` (empty when it has none); its warnings are logged."""
    if files_root is None or not (files_root / ssh_config.FILE_NAME).exists():
        return SshConfig()
    path = tenant_files.source(files_root, ssh_config.FILE_NAME, "ssh_config")
    try:
        config = ssh_config.parse(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise StepInputError(f"ssh_config: cannot read {path}: {exc}") from None
    for warning in config.warnings:
        log.warning("%s: %s", path, warning)
    return config


def target_for(
    asset: Asset,
    jump_hosts: Mapping[str, Asset],
    config: SshConfig,
    _chain: tuple[str, ...] = (),
) -> SshTarget:
    """The target for ``asset``; ``jump_hosts`` holds the assets its ``proxy_jump`` may
    name (the engine loads them with the run's targets)."""
    found = config.lookup(asset.address)
    identity = found.identity_file
    jump: SshTarget | None = None
    chain = (*_chain, asset.asset_id)
    if asset.proxy_jump is not None:
        jump = _bastion(asset, jump_hosts, config, chain)
    elif found.proxy_jump is not None:
        jump = _hops(found.proxy_jump, config)
    return SshTarget(
        host=found.hostname or asset.address,
        port=asset.port or found.port or 22,
        username=asset.username or found.user or default_username(),
        credential_ref=asset.credential_ref or (f"file:{identity}" if identity else None),
        jump=jump,
    )


def _bastion(
    asset: Asset, jump_hosts: Mapping[str, Asset], config: SshConfig, chain: tuple[str, ...]
) -> SshTarget:
    name = asset.proxy_jump
    bastion = jump_hosts.get(name or "")
    if bastion is None:
        raise StepInputError(f"asset {asset.asset_id!r}: proxy_jump {name!r}: no such asset")
    if bastion.connection_type != "ssh":
        raise StepInputError(
            f"asset {asset.asset_id!r}: proxy_jump {name!r} is a "
            f"{bastion.connection_type!r} asset; a bastion is an ssh asset"
        )
    if bastion.asset_id in chain or len(chain) > MAX_HOPS:
        raise StepInputError(
            f"asset {asset.asset_id!r}: proxy_jump loops or goes too deep: "
            + " -> ".join((*chain, bastion.asset_id))
        )
    return target_for(bastion, jump_hosts, config, chain)


def _hops(proxy_jump: str, config: SshConfig) -> SshTarget | None:
    try:
        hops = ssh_config.hops(proxy_jump)
    except ValueError as exc:
        raise StepInputError(f"ssh_config: {exc}") from None
    if len(hops) > MAX_HOPS:
        raise StepInputError(f"ssh_config: ProxyJump {proxy_jump!r} has too many hops")
    previous: SshTarget | None = None
    for user, host, port in hops:
        # A hop's own ProxyJump is not followed (the chain is this one list), as in ssh -J.
        found = config.lookup(host)
        identity = found.identity_file
        previous = SshTarget(
            host=found.hostname or host,
            port=port or found.port or 22,
            username=user or found.user or default_username(),
            credential_ref=f"file:{identity}" if identity else None,
            jump=previous,
        )
    return previous
