"""An ``ansible`` step on all its targets at once: each target's SSH reach resolved like an
SSH step's (address, login, credential, bastions, the tenant's trusted host keys, checked
by connecting once), the approved playbook files staged, one sandboxed ``ansible-playbook``
run (``ansible_run.py``), and one ``Outcome`` per target from its host's results
(``ansible_events.py``). Record-only mode stops after the preparation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from opsconductor import ansible_events, playbook_files
from opsconductor.connectors import ansible_run, sandbox, ssh, tenant_files
from opsconductor.connectors.actions import plain
from opsconductor.connectors.outcome import RECORD_ONLY, Outcome, StepInputError
from opsconductor.inventory import Asset
from opsconductor.output import cap_text
from opsconductor.plan import AnsibleStep
from opsconductor.templating import Scope, render

if TYPE_CHECKING:
    from opsconductor.connectors.session import Connectors

#: (asset id, or None for a line about every host; stream; one line)
HostSink = Callable[[str | None, str, str], None]
DEFAULT_FORKS = 10


def extra_vars(
    step: AnsibleStep, where: str, params: Mapping[str, Any], plain_params: Mapping[str, Any]
) -> dict[str, Any]:
    """The plan's parameters (secret references left out, as for commands' environment),
    then the step's ``extra_vars``, their strings rendered over ``params``."""
    context = {"params": Scope("params", params)}
    rendered: dict[str, Any] = {}
    for name, value in step.extra_vars.items():
        if isinstance(value, str):  # a fetched secret (SecretText) is returned as is
            value = render(value, context, f"{where}.extra_vars.{name}")
        rendered[name] = value
    return {**plain_params, **rendered}


async def _host(
    session: Connectors, asset: Asset, where: str
) -> tuple[ansible_run.Host, ssh.SshTarget]:
    target = await session.ssh_target(asset)
    secret = await session.ssh.credential(target)
    if secret is None:
        raise StepInputError(
            f"{where}: {asset.asset_id} needs a credential (credential_ref: a private key or "
            "a password): the controller logs in with ssh, without the worker's own keys"
        )
    key = secret.lstrip().startswith("-----BEGIN")
    if not session.record_only:  # checked (and learned under accept-new) as any SSH step,
        await session.ssh.connection(target)  # bastions first, each checked alike
    keys = await session.ssh.known_hosts.keys(target.host, target.port)
    host = ansible_run.Host(
        name=asset.asset_id,
        address=target.host,
        port=target.port,
        user=target.username,
        private_key=secret if key else "",
        known_keys=tuple(keys),
        variables=dict(asset.vars),
        password=None if key else secret,
    )
    return host, target


def _dialer(session: Connectors, targets: Mapping[str, ssh.SshTarget]) -> ansible_run.Dial:
    """The forwarder's way to each host: a direct TCP connection, or a ``direct-tcpip``
    channel over the pool's connection to its bastion (whose host key the pool checked;
    a bastion behind a bastion is reached the same way, hop by hop)."""

    async def dial(
        host: ansible_run.Host,
    ) -> tuple[ansible_run.ByteReader, ansible_run.ByteWriter]:
        target = targets[host.name]
        if target.jump is None:
            return await ansible_run.dial_direct(host)
        try:
            bastion = await session.ssh.connection(target.jump)
            reader, writer = await bastion.open_connection(target.host, target.port)
        except (ssh.SshError, asyncssh.Error) as exc:
            raise ConnectionError(f"{target.where}: {exc}") from None
        return reader, writer

    return dial


def _readable(folder: Path) -> None:
    """The staged copy is root's; the sandbox's user reads it (its parent stays 0700)."""
    for current, dirs, files in os.walk(folder):
        os.chmod(current, 0o755)
        for name in files:
            os.chmod(Path(current, name), 0o644)
        for name in dirs:
            os.chmod(Path(current, name), 0o755)


async def run(
    session: Connectors,
    step: AnsibleStep,
    assets: Sequence[Asset],
    *,
    index: int,
    timeout_s: float,
    cancel: asyncio.Event | None,
    params: Mapping[str, Any],
    plain_params: Mapping[str, Any],
    approved_files: Mapping[str, str] | None,
    on_output: HostSink,
) -> dict[str, Outcome]:
    """One outcome per asset id."""
    where = f"steps[{index}]"
    try:
        problem = ansible_run.available()
        if problem is not None:
            raise StepInputError(f"{where}: {problem}")
        try:
            sandbox.check(session.access, capability=False)
        except sandbox.SandboxUnavailable as exc:
            raise StepInputError(f"{where}: ansible-playbook runs sandboxed only: {exc}") from None
        variables = await asyncio.to_thread(extra_vars, step, where, params, plain_params)
        if step.become_password is not None:  # in the extra-vars file: never on a command line
            field = f"{where}.become_password"
            variables["ansible_become_password"] = plain(step.become_password, field)
    except StepInputError as exc:
        return {a.asset_id: Outcome("failed", error=str(exc)) for a in assets}
    outcomes: dict[str, Outcome] = {}
    hosts: list[ansible_run.Host] = []
    targets: dict[str, ssh.SshTarget] = {}
    for asset in assets:
        try:
            host, targets[asset.asset_id] = await _host(session, asset, where)
            hosts.append(host)
        except (StepInputError, ssh.SshError) as exc:
            outcomes[asset.asset_id] = Outcome("failed", error=str(exc))
    if not hosts:
        return outcomes
    summary = f"run playbook {step.playbook} on {', '.join(h.name for h in hosts)}"
    if session.record_only:
        skipped = Outcome("skipped", output=cap_text(f"{RECORD_ONLY}: would {summary}"))
        return {**outcomes, **{h.name: skipped for h in hosts}}
    dial = _dialer(session, targets)
    ran = await _run(
        session, step, index, hosts, dial, variables, timeout_s, cancel, approved_files, on_output
    )
    return {**outcomes, **ran}


async def _run(
    session: Connectors,
    step: AnsibleStep,
    index: int,
    hosts: list[ansible_run.Host],
    dial: ansible_run.Dial,
    variables: dict[str, Any],
    timeout_s: float,
    cancel: asyncio.Event | None,
    approved_files: Mapping[str, str] | None,
    on_output: HostSink,
) -> dict[str, Outcome]:
    access = session.access
    assert access is not None  # sandbox.check passed
    where = f"steps[{index}]"

    def resolve(src: str, field: str) -> Path:
        return tenant_files.source(access.files_root, src, field)

    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="opsc-ansible-"))
    try:
        project, sockets = scratch / "project", scratch / "net"
        try:
            if approved_files is None:
                raise StepInputError(f"{where}.playbook: no approved digest is recorded")
            await asyncio.to_thread(
                playbook_files.stage, step, index, approved_files, resolve, project
            )
        except StepInputError as exc:
            return {h.name: Outcome("failed", error=str(exc)) for h in hosts}
        await asyncio.to_thread(_readable, project)
        sockets.mkdir(mode=0o755)
        box = await asyncio.to_thread(functools.partial(sandbox.prepare, access, capability=False))
        # No network: the forwarder is its only way out. A /tmp of its own for Ansible.
        box = dataclasses.replace(box, network=False, writable_tmp=True)
        events = ansible_events.Events(h.name for h in hosts)

        def line(stream: str, text: str) -> None:
            routed = events.feed(stream, text)
            if routed is not None:
                for part in routed[1].split("\n"):
                    on_output(routed[0], stream, part)

        result = await ansible_run.run_playbook(
            box,
            hosts,
            project=project,
            playbook=step.playbook,
            extra_vars=variables,
            become_user=step.become_as,
            tags=step.tags,
            forks=step.concurrency or DEFAULT_FORKS,
            sockets=sockets,
            timeout_s=timeout_s,
            cancel=cancel,
            on_output=line,
            dial=dial,
        )
    except StepInputError as exc:
        return {h.name: Outcome("failed", error=str(exc)) for h in hosts}
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, scratch)
    if result.cancelled or result.timed_out:
        status = "cancelled" if result.cancelled else "timeout"
        error = None if result.cancelled else f"timed out after {timeout_s:.0f}s"
        return {
            h.name: Outcome(status, result.exit_code, cap_text(events.text(h.name)), error=error)
            for h in hosts
        }
    found: dict[str, Outcome] = {}
    for host in hosts:
        ended = events.outcome(host.name, result.exit_code)
        found[host.name] = Outcome(
            ended.status, result.exit_code, cap_text(ended.output), error=ended.error
        )
    return found
