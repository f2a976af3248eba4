"""The sandbox local steps run in: bubblewrap, as an unprivileged user, with nothing of ours.

A local step runs on the control plane's own machine, where the secret store's key, the
database (its socket, its data directory, its trusting loopback port), the other tenants'
work and the server's environment all are. So a local step (``connectors/local.py``) never
runs as the server's user, and never outside this sandbox:

* **bubblewrap** (``bwrap``) builds an empty root: read-only binds of ``/usr``, ``/etc``
  and the ``/bin``, ``/lib*`` links, a fresh ``/proc`` of its own PID namespace (so no
  process of ours is visible, let alone its ``/proc/<pid>/environ``), a minimal ``/dev``,
  a private ``/tmp``, and the tenant's working directory bound writable at its own path.
  Nothing else: not ``$OPSC_HOME``, not ``/var/run/postgresql``, not ``/home``, not the
  other tenants' directories. IPC, PID and (unless the tenant is allowed the network)
  network namespaces are new; ``--die-with-parent`` and ``--new-session`` tie the sandbox
  to the worker and cut it off from any terminal. ``/etc`` is whole because programs need
  their configuration; what is secret there (``/etc/shadow``, SSH host keys) is readable by
  root only, and the step is not root.
* **the user**: ``bwrap`` starts as root (it needs no user namespace then, and can bind
  directories only root may enter, such as a 0700 ``$OPSC_HOME``), keeps only the
  capabilities to change identity, and runs ``setpriv``, which drops to ``opsc-run`` with no
  supplementary groups, no capabilities (bounding set included) and ``no_new_privs`` (a
  setuid binary cannot give them back). Why not the alternatives: ``bwrap --uid`` needs a
  user namespace, and as root its mapping makes the sandbox user root outside (every file
  of ours readable again); ``setpriv`` *before* ``bwrap`` needs unprivileged user
  namespaces (often disabled) and an ``opsc-run`` that can traverse ``$OPSC_HOME``.
* **the environment**: ``bwrap`` and ``setpriv`` start with an empty environment, so the
  sandbox's PID 1 (``bwrap``) holds none of the server's variables, and neither of the
  two processes that run as root ever sees a variable the plan chose (``LD_PRELOAD`` in
  a root process would be code of the tenant's running as root). The step's variables
  (plus ``PATH``, ``HOME``, ``LANG``) travel in a file bound read-only at ``/run/opsc/env``
  and are set by the unprivileged shell after the drop; values never appear on a command
  line, where ``ps`` would show them to every user of the host.

Refusals (``SandboxUnavailable``) say why and never fall back to running unsandboxed:
the tenant lacks the capability, the worker is not root, ``bwrap`` or ``setpriv`` is
missing, the user cannot be created.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opsconductor.connectors.access import TenantAccess, capability_refusal
from opsconductor.connectors.outcome import StepInputError

#: Where the sandbox looks for programs; also where we look for bwrap, setpriv, useradd.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Files we hand to the step (its environment, a script) appear here, read-only.
DATA_DIR = "/run/opsc"
ENV_FILE = f"{DATA_DIR}/env"
SCRIPT_FILE = f"{DATA_DIR}/script"
#: Top-level system directories (or merged-/usr links) the sandbox sees where they exist.
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Run by the unprivileged shell: wait for the worker's go line on stdin (end-of-file: the
#: worker is gone, so the step never starts; ``local.Gate``), then the step's environment,
#: its directory, and the step, which reads the rest of stdin.
LAUNCHER = f'read -r _ || exit 125; . {ENV_FILE} && cd -- "$1" || exit 126; shift; exec "$@"'
#: What bwrap runs under. ``--die-with-parent`` binds only the sandbox's own processes: a
#: worker SIGKILLed while bwrap was still setting up left the outer bwrap blocked for good
#: (seen after chaos runs: parent 1, waiting on an eventfd, no child). setpriv has the
#: kernel SIGKILL it (and so bwrap, which it becomes) when the worker dies; a worker gone
#: before that was set is seen here as a changed parent, and nothing is started.
#: (The shell exports PWD on its own: unset, bwrap starts with an empty environment.)
PARENT_GUARD = 'test "$PPID" = "$1" || exit 125; shift; unset PWD; exec "$@"'


def guarded(setpriv: str, argv: Sequence[str], parent_pid: int) -> list[str]:
    """``argv`` run so that it dies with ``parent_pid`` (the process that spawns it)."""
    guard = ["/bin/sh", "-c", PARENT_GUARD, "opsc-guard", str(parent_pid)]
    return [setpriv, "--pdeathsig", "KILL", "--", *guard, *argv]


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SandboxUnavailable(StepInputError):
    """A local step cannot run sandboxed here, so it does not run at all."""


@dataclass(frozen=True)
class SandboxUser:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Sandbox:
    """How to start one tenant's local steps; ``argv`` is pure."""

    bwrap: str
    setpriv: str
    user: SandboxUser
    work_dir: Path
    network: bool
    #: (name, link target or None for a directory) of SYSTEM_DIRS present on this host
    system: tuple[tuple[str, str | None], ...] = ()
    #: the private /tmp is writable by the step (1777): an ansible controller needs one
    writable_tmp: bool = False

    def environment(self, env: Mapping[str, str]) -> str:
        """The env file: what the step sets, over a minimal PATH, HOME and LANG."""
        merged = {"PATH": SYSTEM_PATH, "HOME": str(self.work_dir), "LANG": "C.UTF-8", **env}
        lines = []
        for name, value in merged.items():
            if not _NAME.match(name):
                raise StepInputError(f"env: {name!r} is not a valid environment variable name")
            lines.append(f"export {name}={shlex.quote(value)}\n")
        return "".join(lines)

    def argv(
        self,
        inner: Sequence[str],
        *,
        cwd: str | None,
        data: Mapping[str, int],
        info_fd: int,
        binds: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """The command line running ``inner`` in the sandbox from ``cwd`` (default: the
        working directory); ``data`` maps a path under DATA_DIR to the descriptor to copy
        there (it must hold ENV_FILE). bwrap writes to ``info_fd`` once it is bound to its
        parent (``--die-with-parent``); the step waits for a line on its stdin first."""
        args = [self.bwrap, "--ro-bind", "/usr", "/usr"]
        for name, target in self.system:
            if target is None:
                args += ["--ro-bind", f"/{name}", f"/{name}"]
            else:
                args += ["--symlink", target, f"/{name}"]
        args += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev"]
        if self.writable_tmp:  # and /dev/shm, for Python's multiprocessing locks
            args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
        else:
            args += ["--tmpfs", "/tmp"]
        # bwrap would create the working directory's parents with the mode of the bound
        # directory (0700, so the step could not reach it): create them 0755 first.
        for parent in reversed(self.work_dir.parents):
            if parent != Path("/"):
                args += ["--dir", str(parent)]
        args += ["--bind", str(self.work_dir), str(self.work_dir)]
        for path, fd in data.items():
            args += ["--perms", "0444", "--ro-bind-data", str(fd), path]
        for source, path in binds:  # more, read-only (an ansible step's project, Python)
            args += [
                a for p in reversed(Path(path).parents) if p != Path("/") for a in ("--dir", str(p))
            ]
            args += ["--ro-bind", source, path]
        args += ["--chdir", "/", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try"]
        if not self.network:
            args.append("--unshare-net")
        args += ["--die-with-parent", "--new-session", "--info-fd", str(info_fd)]
        # Root inside keeps only what setpriv needs to become the user, then drops it all.
        args += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
            args += ["--cap-add", cap]
        args += [
            "--",
            self.setpriv,
            f"--reuid={self.user.uid}",
            f"--regid={self.user.gid}",
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            "/bin/sh",
            "-c",
            LAUNCHER,
            "opsc-step",
            cwd or str(self.work_dir),
            *inner,
        ]
        return guarded(self.setpriv, args, os.getpid())


def check(access: TenantAccess | None, *, capability: bool = True) -> None:
    """Refuse (SandboxUnavailable) what makes a sandboxed local step impossible here;
    touches nothing, so record-only runs call it too. ``capability=False``: an ansible
    step's controller, which runs here without the tenant's local-exec capability (its
    sandbox has no network but its targets' SSH ports, ``connectors/ansible_run.py``)."""
    if access is None:
        raise SandboxUnavailable("local execution: no tenant context for this run")
    if capability and not access.local_execution:
        raise SandboxUnavailable(capability_refusal(access.tenant_id))
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            f"local execution: steps run as the unprivileged user {access.local_user!r} "
            f"inside a bubblewrap sandbox, which needs this worker to run as root (it runs "
            f"as uid {os.geteuid()}); refusing to run the step as the worker's own user"
        )
    _tool("bwrap", "bubblewrap")
    _tool("setpriv", "util-linux")


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        raise SandboxUnavailable(
            f"local execution: {name} is not installed, and local steps never run outside "
            f"their sandbox (install it: apt-get install {package})"
        )
    return found


_user_lock = threading.Lock()


def ensure_user(name: str) -> SandboxUser:
    """The sandbox user, created on first use as a system user without home or shell."""
    with _user_lock:  # two steps of one worker must not both run useradd
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            made = subprocess.run(
                [
                    _tool("useradd", "passwd"),
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
                capture_output=True,
                text=True,
                env={"PATH": SYSTEM_PATH},
                check=False,
            )
            try:  # another worker may have created it meanwhile: that is fine too
                entry = pwd.getpwnam(name)
            except KeyError:
                raise SandboxUnavailable(
                    f"local execution: could not create the sandbox user {name!r}: "
                    f"{made.stderr.strip() or made.returncode}"
                ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0 or entry.pw_uid == os.geteuid():
        raise SandboxUnavailable(
            f"local execution: the sandbox user {name!r} must be an unprivileged user of its "
            f"own (uid {entry.pw_uid}, gid {entry.pw_gid})"
        )
    return SandboxUser(name, entry.pw_uid, entry.pw_gid)


def ensure_work_dir(path: Path, user: SandboxUser) -> None:
    """The tenant's working directory: the user's, mode 0700. Its parents stay ours: the
    step can neither replace the directory nor see beside it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise SandboxUnavailable(f"local execution: {path} is not a directory") from None
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    os.chmod(path, 0o700)  # not a link (checked above), in a parent only we can write


def prepare(access: TenantAccess | None, *, capability: bool = True) -> Sandbox:
    """Everything a local step needs, set up (user, working directory), or a refusal.
    Blocking: call it in a thread."""
    check(access, capability=capability)
    assert access is not None
    user = ensure_user(access.local_user)
    work = Path(os.path.abspath(access.work_dir))
    ensure_work_dir(work, user)
    system = tuple(
        (name, os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None)
        for name in SYSTEM_DIRS
        if os.path.lexists(f"/{name}")
    )
    return Sandbox(
        bwrap=_tool("bwrap", "bubblewrap"),
        setpriv=_tool("setpriv", "util-linux"),
        user=user,
        work_dir=work,
        network=access.local_network,
        system=system,
    )
