"""Build and send one e-mail with the standard library (`email`, `smtplib`); blocking, run it in a thread.

Kept apart from the service so the SMTP details (TLS modes, login, which failures are worth retrying) are in one
small place and the service only decides *when* to send.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from aiot.notify.outbox import Claimed
from aiot.settings import Settings

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP fields of `Settings`, checked once (host set) so the sender needs no Optional checks."""

    host: str
    port: int
    user: str | None
    password: str | None
    starttls: bool
    ssl: bool
    mail_from: str
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig | None:
        """None when `smtp_host` is unset (mail then stays in the outbox)."""
        if not settings.smtp_host:
            return None
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            user=settings.smtp_user,
            password=password,
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
            mail_from=settings.mail_from,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def message_id(email_id: str, mail_from: str) -> str:
    """A Message-ID derived from the outbox id, so a (rare) second delivery of one row is recognisably the same."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "aiot.local"
    return f"<{email_id}@{domain}>"


def build_message(email: Claimed, mail_from: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = email.to_address
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(email.created_at)
    msg["Message-ID"] = message_id(email.id, mail_from)
    msg["X-Aiot-Outbox-Id"] = email.id
    msg.set_content(email.body)
    if email.html:
        msg.add_alternative(email.html, subtype="html")
    return msg


def send(config: SmtpConfig, msg: EmailMessage) -> None:
    """Deliver `msg` (one connection per mail: low volume, and no stale connection to manage). Raises on failure."""
    context = ssl.create_default_context()
    if config.ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with client:
        client.ehlo_or_helo_if_needed()
        if config.starttls and not config.ssl:
            client.starttls(context=context)
            client.ehlo()
        if config.user:
            client.login(config.user, config.password or "")
        client.send_message(msg)


def is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help: the server refused the recipient or the content for good (5xx).

    Connection problems, timeouts, 4xx answers and login or sender errors (a configuration the admin can fix)
    are retried with back-off instead.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPDataError):
        return exc.smtp_code >= 500
    return False


def is_connection_problem(exc: BaseException) -> bool:
    """The server could not be reached at all: trying the next mail right away would fail the same way."""
    if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPServerDisconnected):
        return True
    # smtplib's own errors are OSErrors too; only the socket-level ones (refused, timeout, DNS) count here.
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def describe(exc: BaseException, config: SmtpConfig) -> str:
    text = str(exc).strip() or type(exc).__name__
    if is_connection_problem(exc) and not isinstance(exc, smtplib.SMTPException):
        return f"SMTP server {config.where} unreachable: {type(exc).__name__}: {text}"
    return f"SMTP server {config.where}: {type(exc).__name__}: {text}"
