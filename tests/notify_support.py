"""Receivers of the notification tests, real servers on loopback: an HTTP endpoint that
records what it gets and answers a chosen sequence of statuses, and an SMTP server
(aiosmtpd) that keeps every message; and a way to drive the dispatcher until done."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

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


@contextmanager
def smtp_receiver() -> Iterator[Mailbox]:
    box = Mailbox("127.0.0.1", _free_port())
    controller = Controller(_Keep(box), hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


async def dispatch_until(
    dispatcher: Dispatcher, done: Callable[[], bool], rounds: int = 200
) -> None:
    """Run dispatcher rounds (as a worker's loop does) until ``done``; bounded."""
    for _ in range(rounds):
        await dispatcher.round()
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the dispatcher never got there")
