"""A real sshd target whose login user has sudo *with a password*, for ``become`` tests.

Needs root (to create the user and its sudoers file), ``sudo`` and OpenSSH's ``sshd``:
``skip_reason`` says which is missing. Everything made here is removed by ``stop``: the
user, its sudoers file, its sudo timestamps, the lab's folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.sshlab import SSHD, OpenSshLab, free_ports

SUDO = shutil.which("sudo")
SUDOERS_D = Path("/etc/sudoers.d")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "become tests create a user and a sudoers entry: they need root"
    if SUDO is None:
        return "sudo is not installed (apt-get install sudo)"
    if SSHD is None:
        return "OpenSSH sshd is not installed (apt-get install openssh-server)"
    if not shutil.which("useradd") or not SUDOERS_D.is_dir():
        return "no useradd or /etc/sudoers.d on this machine"
    return None


class SudoLab:
    """One sshd port; ``username`` logs in with the lab's key and may run anything through
    sudo after giving ``password`` (asked every time: ``timestamp_timeout=0``)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.username = f"opsc-bt-{tag}"
        self.password = f"Sudo-{secrets.token_urlsafe(12)}"
        self.sudoers = SUDOERS_D / f"opsc-bt-{tag}"
        # sshd reads authorized_keys as the user: the folder must be open to it.
        self.folder = Path(tempfile.mkdtemp(prefix="opsc-sudolab-"))
        self.folder.chmod(0o755)
        subprocess.run(
            [
                *("useradd", "--no-create-home", "--home-dir", "/nonexistent"),
                *("--shell", "/bin/sh", self.username),
            ],
            check=True,
        )
        try:
            subprocess.run(
                ["chpasswd"], input=f"{self.username}:{self.password}\n", text=True, check=True
            )
            rules = (
                f"Defaults:{self.username} timestamp_timeout=0, lecture=never\n"
                f"{self.username} ALL=(ALL:ALL) ALL\n"
            )
            staged = self.folder / "sudoers"
            staged.write_text(rules)
            subprocess.run(["visudo", "-cqf", str(staged)], check=True)
            shutil.copyfile(staged, self.sudoers)
            self.sudoers.chmod(0o440)
            self.ssh = OpenSshLab(self.folder / "sshd", free_ports(1))
            (self.folder / "sshd").chmod(0o755)
            (self.folder / "sshd" / "authorized_keys").chmod(0o644)
        except BaseException:
            self.stop()
            raise
        self.ssh.username = self.username
        self.keys = self.ssh.keys
        self.ports = self.ssh.ports

    def stop(self) -> None:
        ssh = getattr(self, "ssh", None)
        if ssh is not None:
            ssh.stop()
        self.sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", "--force", self.username], check=False, capture_output=True)
        Path("/run/sudo/ts", self.username).unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)
