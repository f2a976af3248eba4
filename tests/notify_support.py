"""Receivers of the notification tests, real servers on loopback: an HTTP endpoint that
records what it gets and answers a chosen sequence of statuses, and an SMTP server
(aiosmtpd) that keeps every message; and a way to drive the dispatcher until done."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opsconductor.notification_dispatch import Dispatcher


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)


@contextmanager
def http_receiver(*statuses: int) -> Iterator[Receiver]:
    """POSTs to ``receiver.url`` are recorded and answered ``statuses`` in turn (the last
    one from then on; 200 if none given)."""
    answers = list(statuses) or [200]
    receiver = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            receiver.requests.append(Received(dict(self.headers.items()), body))
            status = answers[min(len(receiver.requests), len(answers)) - 1]
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/opsc"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    #: (envelope sender, envelope recipients, the message as received)
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    #: (login, password) of each successful AUTH
    logins: list[tuple[str, str]] = field(default_factory=list)

    def parsed(self, index: int = -1) -> EmailMessage:
        parsed = message_from_bytes(self.messages[index][2], policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Keep:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.box.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files): clients trust it through
    SSL_CERT_FILE, so the client's certificate check stays on."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextmanager
def smtp_receiver(
    tls: tuple[Path, Path] | None = None, password: str | None = None
) -> Iterator[Mailbox]:
    """An SMTP server; with ``tls`` (cert, key) it requires STARTTLS, and with ``password``
    it requires AUTH (any login with that password) over TLS."""
    box = Mailbox("127.0.0.1", _free_port())
    extra: dict[str, Any] = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        extra.update(tls_context=context, require_starttls=True)
    if password is not None:

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            if not isinstance(data, LoginPassword) or data.password.decode() != password:
                return AuthResult(success=False, handled=False)
            box.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=True)

        extra.update(authenticator=check, auth_required=True, auth_require_tls=True)
    controller = Controller(_Keep(box), hostname=box.host, port=box.port, **extra)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


async def dispatch_until(
    dispatcher: Dispatcher, done: Callable[[], bool], within_s: float = 60.0
) -> None:
    """Run dispatcher rounds (as a worker's loop does) until ``done``; bounded in time, not
    in rounds (a retry may be due only after the first back-off, 5 s: a fast machine runs
    many rounds before then)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        await dispatcher.round()
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the dispatcher never got there")
