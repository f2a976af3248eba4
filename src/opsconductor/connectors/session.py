"""One execution's access to its targets: picks the connector by step type and asset
connection, owns the open connections (SSH per target, HTTP clients) until ``aclose``, and
implements record-only mode in one place.

Every step is *prepared* first (templates rendered, credentials resolved, source files
read) and only then *run*; record-only mode stops between the two, so a dark launch
proves that everything resolves while touching nothing.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import httpx

from opsconductor import pushed_files
from opsconductor.connectors import (
    ansible_step,
    in_process,
    local,
    sandbox,
    ssh,
    ssh_config,
    ssh_files,
    ssh_reach,
    ssh_run,
    tenant_files,
)
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.actions import (
    NOOP,
    Action,
    bounded,
    from_command,
    plain,
    plain_env,
)
from opsconductor.connectors.credentials import resolve_credential as env_credentials
from opsconductor.connectors.outcome import RECORD_ONLY, Outcome, StepInputError
from opsconductor.connectors.sandbox import Sandbox
from opsconductor.inventory import Asset
from opsconductor.output import OutputSink, cap_text
from opsconductor.plan import (
    ActingStep,
    AnsibleStep,
    CommandStep,
    FileStep,
    HttpStep,
    NoopStep,
    ScriptStep,
)
from opsconductor.templating import asset_context, render


class Connectors:
    def __init__(
        self,
        known_hosts: ssh.HostKeyStore,
        *,
        resolve_credential: ssh.CredentialResolver | None = None,
        record_only: bool = False,
        access: TenantAccess | None = None,
        jump_hosts: Mapping[str, Asset] | None = None,
    ) -> None:
        self.record_only = record_only
        #: assets a target's ``proxy_jump`` may name (bastions), by asset id
        self.jump_hosts: Mapping[str, Asset] = jump_hosts or {}
        self._ssh_config: ssh_config.SshConfig | None = None
        if resolve_credential is None:  # env: and file: references (the latter confined)
            root = access.files_root if access else None
            resolve_credential = functools.partial(env_credentials, files_root=root)
        self.ssh = ssh.SshPool(known_hosts, resolve_credential)
        self._http: dict[bool, httpx.AsyncClient] = {}
        #: the tenant's files root and local capability; None: no file step, no local step
        self.access = access
        self._sandbox: Sandbox | None = None

    @property
    def holding(self) -> bool:
        """Anything for ``aclose`` to close (an SSH connection, an HTTP client)?"""
        return self.ssh.holding or bool(self._http)

    async def aclose(self) -> None:
        await self.ssh.close()
        for client in self._http.values():
            await client.aclose()
        self._http.clear()

    async def execute(
        self,
        step: ActingStep,
        asset: Asset,
        *,
        where: str,
        timeout_s: float,
        cancel: asyncio.Event | None = None,
        env: dict[str, str] | None = None,
        results: Mapping[str, Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        approved_files: Mapping[str, str] | None = None,
        on_output: OutputSink | None = None,
    ) -> Outcome:
        """Run ``step`` on ``asset``; ``where`` (``steps[2]``) prefixes input errors;
        ``env`` is set for commands and scripts under the step's own ``env``; ``results``
        (earlier steps on this target, by name) feed ``{{ steps.<name>.output }}``;
        ``approved_files`` (rendered source -> SHA-256; the engine always passes it for a
        push) are the only bytes a push may copy; ``params`` feed ``{{ params.<name> }}``;
        ``on_output`` gets each whole line a command or script prints, as it prints it."""
        if isinstance(step, CommandStep | ScriptStep) and env:
            step = step.model_copy(update={"env": {**step.env, **env}})
        context = asset_context(asset, results, params)
        try:
            action = await self._prepare(step, asset, where, context, approved_files, on_output)
        except StepInputError as exc:
            return Outcome("failed", error=str(exc))
        if self.record_only:
            return Outcome("skipped", output=cap_text(f"{RECORD_ONLY}: would {action.summary}"))
        try:
            return await action.run(timeout_s, cancel)
        except (StepInputError, ssh.SshError) as exc:
            return Outcome("failed", error=str(exc))
        except (asyncssh.Error, OSError) as exc:
            return Outcome("failed", error=cap_text(f"{type(exc).__name__}: {exc}"))

    async def _prepare(
        self,
        step: ActingStep,
        asset: Asset,
        where: str,
        context: dict[str, Any],
        approved_files: Mapping[str, str] | None,
        on_output: OutputSink | None = None,
    ) -> Action:
        if isinstance(step, CommandStep):
            env = plain_env(step.env, where)
            return await self._command(step, asset, env, where, on_output)
        if isinstance(step, ScriptStep):
            env = plain_env(step.env, where)
            return await self._script(step, asset, env, where, on_output)
        if isinstance(step, FileStep):
            return await self._file(step, asset, where, context, approved_files)
        if isinstance(step, HttpStep):
            return await in_process.http_action(
                step, where, context, access=self.access, client_for=self._client
            )
        if isinstance(step, NoopStep):
            return NOOP
        if isinstance(step, AnsibleStep):  # the engine runs it once for all targets
            raise StepInputError(f"{where}: an ansible step runs on all its targets at once")
        return await in_process.sql_action(step, where, context, access=self.access)

    # -- the local sandbox ---------------------------------------------------------------

    def _local(self, where: str) -> None:
        """Refuse a local step that cannot run sandboxed here (touches nothing)."""
        try:
            sandbox.check(self.access)
        except sandbox.SandboxUnavailable as exc:
            raise sandbox.SandboxUnavailable(f"{where}: {exc}") from None

    async def _box(self) -> Sandbox:
        """The tenant's sandbox, set up on first use (user, working directory)."""
        if self._sandbox is None:
            self._sandbox = await asyncio.to_thread(sandbox.prepare, self.access)
        return self._sandbox

    def _files_root(self, field: str) -> Path:
        if self.access is None:
            raise StepInputError(f"{field}: no tenant files root for this run")
        return self.access.files_root

    # -- commands and scripts: local process or SSH -------------------------------------

    async def ssh_target(self, asset: Asset) -> ssh.SshTarget:
        """How ``asset`` is reached (``ssh_reach``), its credentials resolvable."""
        return await self._ssh_target(asset)

    async def ansible(
        self,
        step: AnsibleStep,
        assets: Sequence[Asset],
        *,
        index: int,
        timeout_s: float,
        cancel: asyncio.Event | None,
        params: Mapping[str, Any],
        plain_params: Mapping[str, Any],
        approved_files: Mapping[str, str] | None,
        on_output: ansible_step.HostSink,
    ) -> dict[str, Outcome]:
        """Run an ``ansible`` step once on all ``assets``; an outcome per asset id."""
        return await ansible_step.run(
            self,
            step,
            assets,
            index=index,
            timeout_s=timeout_s,
            cancel=cancel,
            params=params,
            plain_params=plain_params,
            approved_files=approved_files,
            on_output=on_output,
        )

    async def _ssh_target(self, asset: Asset) -> ssh.SshTarget:
        if self._ssh_config is None:  # read once per execution
            root = self.access.files_root if self.access else None
            self._ssh_config = ssh_reach.load_config(root)
        target = ssh_reach.target_for(asset, self.jump_hosts, self._ssh_config)
        hop: ssh.SshTarget | None = target
        while hop is not None:  # resolved now: record-only must prove they exist
            await self.ssh.credential(hop)
            hop = hop.jump
        return target

    async def _connection(
        self, target: ssh.SshTarget, timeout_s: float
    ) -> asyncssh.SSHClientConnection | Outcome:
        try:
            return await asyncio.wait_for(self.ssh.connection(target), timeout_s)
        except TimeoutError:
            return Outcome("timeout", error=f"{target.where}: connect timed out")

    @staticmethod
    def _become(step: CommandStep | ScriptStep, asset: Asset, where: str) -> ssh_run.Become | None:
        """How the step escalates on this target (None: it does not)."""
        user = step.become_as
        if user is None:
            return None
        if asset.connection_type == "local":  # refused at submission too (inventory)
            raise StepInputError(f"{where}.become: not available on local targets")
        password = None
        if step.become_password is not None:
            password = plain(step.become_password, f"{where}.become_password")
        try:
            return ssh_run.Become(user, password)
        except ValueError as exc:
            raise StepInputError(f"{where}.{exc}") from None

    @staticmethod
    def _as(become: ssh_run.Become | None) -> str:
        return "" if become is None else f" as {become.user} (sudo)"

    async def _command(
        self,
        step: CommandStep,
        asset: Asset,
        env: dict[str, str],
        where: str,
        on_output: OutputSink | None = None,
    ) -> Action:
        become = self._become(step, asset, where)
        if asset.connection_type == "local":
            self._local(where)

            async def run_local(budget: float, cancel: asyncio.Event | None) -> Outcome:
                result = await local.run_command(
                    await self._box(),
                    step.command,
                    timeout_s=budget,
                    env=env,
                    cwd=step.cwd,
                    cancel=cancel,
                    on_output=on_output,
                )
                return from_command(result, budget)

            return Action(f"run {step.command!r} locally (sandboxed)", run_local)
        target = await self._ssh_target(asset)

        async def run_ssh(budget: float, cancel: asyncio.Event | None) -> Outcome:
            conn = await self._connection(target, budget)
            if isinstance(conn, Outcome):
                return conn
            result = await ssh_run.run_command(
                conn,
                step.command,
                timeout_s=budget,
                env=env,
                cwd=step.cwd,
                cancel=cancel,
                become=become,
                on_output=on_output,
            )
            return from_command(result, budget)

        return Action(f"run {step.command!r} on {target.where}{self._as(become)}", run_ssh)

    async def _script(
        self,
        step: ScriptStep,
        asset: Asset,
        env: dict[str, str],
        where: str,
        on_output: OutputSink | None = None,
    ) -> Action:
        lines = len(step.script.splitlines())
        become = self._become(step, asset, where)
        if asset.connection_type == "local":
            self._local(where)

            async def run_local(budget: float, cancel: asyncio.Event | None) -> Outcome:
                result = await local.run_script(
                    await self._box(),
                    step.script,
                    interpreter=step.interpreter,
                    args=step.args,
                    timeout_s=budget,
                    env=env,
                    cwd=step.cwd,
                    cancel=cancel,
                    on_output=on_output,
                )
                return from_command(result, budget)

            summary = f"run a {lines}-line {step.interpreter} script locally (sandboxed)"
            return Action(summary, run_local)
        target = await self._ssh_target(asset)

        async def run_ssh(budget: float, cancel: asyncio.Event | None) -> Outcome:
            conn = await self._connection(target, budget)
            if isinstance(conn, Outcome):
                return conn
            result = await ssh_run.run_script(
                conn,
                step.script,
                interpreter=step.interpreter,
                args=step.args,
                timeout_s=budget,
                env=env,
                cwd=step.cwd,
                cancel=cancel,
                become=become,
                on_output=on_output,
            )
            return from_command(result, budget)

        summary = (
            f"upload and run a {lines}-line {step.interpreter} script on {target.where}"
            f"{self._as(become)}"
        )
        return Action(summary, run_ssh)

    # -- file copies ---------------------------------------------------------------------

    async def _file(
        self,
        step: FileStep,
        asset: Asset,
        where: str,
        context: dict[str, Any],
        approved_files: Mapping[str, str] | None,
    ) -> Action:
        # Templates are tenant input: rendered (budgeted) off the event loop.
        src, dest = await asyncio.to_thread(
            lambda: (
                render(step.src, context, f"{where}.src"),
                render(step.dest, context, f"{where}.dest"),
            )
        )
        mode = int(step.mode, 8) if step.mode else None
        if asset.connection_type == "local":
            self._local(where)
        if step.direction == "fetch":
            field = f"{where}.dest"
            return await self._fetch(
                asset, src, tenant_files.destination(self._files_root(field), dest, field), mode
            )
        if not dest.startswith("/"):
            raise StepInputError(f"{where}.dest: must be an absolute path (got {dest!r})")
        field = f"{where}.src"
        path = tenant_files.source(self._files_root(field), src, field)
        try:
            source = ssh_files.file_digest(path)
        except OSError as exc:
            raise StepInputError(f"{field}: cannot read {src}: {exc.strerror}") from None
        if approved_files is not None:
            approved = approved_files.get(src)
            if approved is None:
                raise StepInputError(f"{field}: {src} was not part of the approved plan")
            if approved != source.sha256:
                raise StepInputError(
                    pushed_files.changed_message(field, src, approved, source.sha256)
                )
        # The copy must hold exactly the bytes checked here (and approved): a file that
        # changes between now and the copy fails its checksum and never replaces ``dest``.
        done = f"copied {source.size} bytes to {dest}, sha256 {source.sha256} verified"
        if asset.connection_type == "local":
            return self._local_push(path, dest, mode, source, done, where)
        target = await self._ssh_target(asset)

        async def run_ssh(budget: float, cancel: asyncio.Event | None) -> Outcome:
            async def copy() -> Outcome:
                conn = await self._connection(target, budget)
                if isinstance(conn, Outcome):
                    return conn
                await ssh_files.copy_file(conn, path, dest, mode, expected=source.sha256)
                return Outcome("completed", output=done)

            return await bounded(copy(), budget, cancel)

        summary = f"copy {src} ({source.size} bytes) to {target.where}:{dest}"
        return Action(summary, run_ssh)

    async def _fetch(self, asset: Asset, src: str, dest: Path, mode: int | None) -> Action:
        if asset.connection_type == "local":
            return self._local_fetch(src, dest, mode)
        target = await self._ssh_target(asset)

        async def run_ssh(budget: float, cancel: asyncio.Event | None) -> Outcome:
            async def fetch() -> Outcome:
                conn = await self._connection(target, budget)
                if isinstance(conn, Outcome):
                    return conn
                got = await ssh_files.fetch_file(conn, src, dest, mode)
                return Outcome(
                    "completed",
                    output=f"fetched {got.size} bytes to {dest}, sha256 {got.sha256} verified",
                )

            return await bounded(fetch(), budget, cancel)

        return Action(f"fetch {target.where}:{src} to {dest}", run_ssh)

    def _local_push(
        self,
        src: Path,
        dest: str,
        mode: int | None,
        source: ssh_files.Copied,
        done: str,
        where: str,
    ) -> Action:
        # The sandbox's user writes the copy: only the tenant's working directory takes it.
        assert self.access is not None  # _local checked it
        work = Path(os.path.abspath(self.access.work_dir))
        if ".." in Path(dest).parts or not Path(dest).is_relative_to(work):
            raise StepInputError(
                f"{where}.dest: a local target's files are written in the tenant's working "
                f"directory {work}; got {dest!r}"
            )

        async def run_local(budget: float, cancel: asyncio.Event | None) -> Outcome:
            result = await local.push_file(
                await self._box(),
                src,
                dest,
                mode,
                sha256=source.sha256,
                timeout_s=budget,
                cancel=cancel,
            )
            outcome = from_command(result, budget)
            return Outcome("completed", output=done) if outcome.status == "completed" else outcome

        return Action(f"copy {src} to {dest} locally (sandboxed)", run_local)

    def _local_fetch(self, src: str, dest: Path, mode: int | None) -> Action:
        async def run_local(budget: float, cancel: asyncio.Event | None) -> Outcome:
            result, digest, size = await local.fetch_file(
                await self._box(), src, dest, mode, timeout_s=budget, cancel=cancel
            )
            outcome = from_command(result, budget)
            if outcome.status != "completed":
                return outcome
            return Outcome("completed", output=f"fetched {size} bytes to {dest}, sha256 {digest}")

        return Action(f"fetch {src} to {dest} locally (sandboxed)", run_local)

    def _client(self, verify: bool) -> httpx.AsyncClient:
        if verify not in self._http:
            self._http[verify] = httpx.AsyncClient(verify=verify, follow_redirects=False)
        return self._http[verify]
