"""A real SMTP server for tests (aiosmtpd) that keeps what it received, parsed."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class MailSink:
    """What the SMTP server received: one parsed message per delivery (duplicates included, on purpose)."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered with 550
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    port: int
    sink: MailSink
    controller: Controller | None = None
    logins: list[tuple[str, str]] = field(default_factory=list)

    def start(self, **smtp_kwargs: Any) -> None:
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **smtp_kwargs)
        self.controller.start()

    def start_with_login(self, user: str, password: str) -> None:
        def authenticator(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
            if isinstance(data, LoginPassword):
                self.logins.append((data.login.decode(), data.password.decode()))
                return AuthResult(success=data.login.decode() == user and data.password.decode() == password)
            return AuthResult(success=False, handled=False)

        self.start(authenticator=authenticator, auth_require_tls=False, auth_required=True)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
