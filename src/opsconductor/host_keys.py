"""SSH host keys as the trust decision sees them: parsing, fingerprints, and the rule that
tells a trusted key from an unknown host and from a CHANGED key. No I/O here; the storage
and the use cases (trust, replace, remove, each recorded as an audit event) are in
``opsconductor.db.connectors``, the network side in ``opsconductor.connectors.ssh``.

The rule. A tenant stores, per host:port, a *set* of keys (normally one; a host may
legitimately have one per key type, e.g. ssh-ed25519 and ssh-rsa). A presented key is

* trusted when it is one of the stored keys (any of them: the connector offers the server
  only the stored key types, so it answers with one of those);
* unknown when nothing is stored for host:port (refused, or learned under ``accept-new``);
* CHANGED in every other case, *whatever its type*. A different key of a stored type is a
  change; so is a key of a type not stored yet, because the key type is chosen by whoever
  answers the connection: "it is only a new type" is no evidence that it is the same host.
  A changed key is never learned and never added beside the old one; only an explicit,
  audited ``replace`` (with the fingerprint the operator verified) changes a host's keys.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opsconductor.errors import BadInput, Conflict

if TYPE_CHECKING:
    import asyncssh


@dataclass(frozen=True)
class HostKey:
    """One public host key: ``text`` is the OpenSSH line without comment."""

    text: str
    key_type: str
    fingerprint: str

    @classmethod
    def parse(cls, text: str) -> HostKey:
        """A key in OpenSSH format ('ssh-ed25519 AAAA… [comment]'); BadInput otherwise."""
        import asyncssh  # loaded by the few commands that read keys (~0.1 s)

        try:
            key = asyncssh.import_public_key(text.strip())
        except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
            raise BadInput(f"not an OpenSSH public key: {exc}") from None
        return cls.of(key)

    @classmethod
    def of(cls, key: asyncssh.SSHKey) -> HostKey:
        words = key.export_public_key("openssh").decode().split()
        # get_fingerprint() is OpenSSH's format: 'SHA256:' + unpadded base64 of the digest,
        # what `ssh-keygen -lf` and ssh's own prompts print.
        return cls(" ".join(words[:2]), words[0], key.get_fingerprint("sha256"))

    def describe(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


class Verdict(enum.StrEnum):
    TRUSTED = "trusted"
    UNKNOWN = "unknown"
    CHANGED = "changed"


def verdict(stored: Sequence[HostKey], presented: HostKey) -> Verdict:
    """The rule of the module docstring."""
    if any(k.text == presented.text for k in stored):
        return Verdict.TRUSTED
    return Verdict.CHANGED if stored else Verdict.UNKNOWN


def replace_hint(host: str, port: int) -> str:
    # The hint never carries the presented fingerprint: copying it from the very message
    # that reports a possible interception would "verify" nothing.
    return (
        f"opsc known-hosts replace {host} --port {port} --scan "
        "--fingerprint SHA256:<the fingerprint you verified on the host>"
    )


class HostKeyChanged(Conflict):
    """A host presents (or an operator tries to trust) a key other than the stored one(s)."""

    def __init__(
        self,
        host: str,
        port: int,
        stored: Sequence[HostKey],
        presented: HostKey,
        *,
        note: str = "",
    ) -> None:
        self.host, self.port = host, port
        self.stored, self.presented = tuple(stored), presented
        old = ", ".join(k.describe() for k in stored)
        super().__init__(
            f"HOST KEY CHANGED for {host}:{port}: stored {old}; "
            f"presented {presented.describe()}{note}. Someone may be intercepting the "
            "connection, or the host's key was replaced (re-install, rotation). Compare the "
            "presented fingerprint with the host's own (`ssh-keygen -lf "
            "/etc/ssh/ssh_host_*_key.pub` on its console) and, only if they match, replace "
            f"the stored key: {replace_hint(host, port)}"
        )


class FingerprintMismatch(BadInput):
    """The key about to be trusted is not the one whose fingerprint the operator stated."""


def check_stated(stated: str, key: HostKey) -> None:
    """The fingerprint the operator verified out of band must be the key's, exactly."""
    if stated.strip() != key.fingerprint:
        raise FingerprintMismatch(
            f"the key's fingerprint is {key.fingerprint}, not the {stated.strip()} you stated; "
            "nothing was changed (if you scanned, the host that answered is not the one "
            "you verified)"
        )
