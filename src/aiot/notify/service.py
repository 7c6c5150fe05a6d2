"""`NotifyService` ("notify"): delivers the outbox over SMTP, with retries, safe to run as several replicas.

Loop: every `poll_interval` seconds (or at once when kicked on `aiot.notify.kick`), take the due rows, and for
each one claim it (conditional UPDATE: one replica wins), send it in a worker thread with `smtplib`, and record
the outcome: sent_at on success; on failure a retry after `retry_base * 2**(attempts-1)` seconds (capped at
`retry_max`), or `failed` after `max_attempts` attempts or a permanent refusal. When the server cannot be
reached at all the rest of the batch waits for the next round instead of failing one by one.

With no `smtp_host` configured nothing is sent: mails stay in the outbox (visible in the API) and the health
says how many wait, so an operator sees why nobody got a mail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

from aiot.ids import new_id
from aiot.notify import outbox, smtp
from aiot.services.contract import HealthState, ServiceHealth
from aiot.services.loop import LoopService
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from aiot.services.contract import ServiceContext

log = logging.getLogger(__name__)

KICK_SUBJECT = "aiot.notify.kick"


class NotifyService(LoopService):
    name = "notify"
    wake_subject = KICK_SUBJECT

    def __init__(
        self,
        *,
        poll_interval: float = 2.0,
        retry_base: float = 5.0,
        retry_max: float = 600.0,
        max_attempts: int = 10,
        lease: float = 300.0,
        batch: int = 20,
    ) -> None:
        if retry_base <= 0 or retry_max < retry_base:
            raise ValueError(f"NotifyService: need 0 < retry_base <= retry_max, got {retry_base}, {retry_max}")
        if max_attempts < 1:
            raise ValueError(f"NotifyService: max_attempts must be >= 1, got {max_attempts}")
        super().__init__()
        self.poll_interval = self.interval = poll_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease)
        self.batch = batch
        self.worker = ""
        self.sent = 0
        self.failed = 0
        self.waiting = 0
        self._config: smtp.SmtpConfig | None = None
        self._delivery_error = ""  # the last failed send; kept until a send succeeds (not just a pass)

    # ----------------------------------------------------------------- lifecycle

    async def on_start(self, ctx: ServiceContext) -> None:
        self._config = smtp.SmtpConfig.from_settings(ctx.settings)
        self.worker = f"{ctx.instance_id or socket.gethostname()}:{os.getpid()}:{new_id('ntf')}"[:64]
        if self._config is None:
            log.warning("notify: smtp_host is not set; e-mails stay in the outbox (set AIOT_SMTP_HOST to send)")

    def kick(self) -> None:
        """Look at the outbox now instead of at the next poll (same process)."""
        self.wake()

    def describe_error(self, exc: Exception) -> str:
        return f"outbox check failed: {type(exc).__name__}: {exc}"

    def health(self) -> ServiceHealth:
        if self._task is None:
            return ServiceHealth(HealthState.stopped)
        extra = {"sent": self.sent, "failed": self.failed, "waiting": self.waiting}
        if self._config is None:
            return ServiceHealth(
                HealthState.degraded, f"smtp_host is not set: {self.waiting} e-mail(s) wait in the outbox", extra
            )
        error = self._error or self._delivery_error
        if error:
            return ServiceHealth(HealthState.degraded, f"{error}; {self.waiting} e-mail(s) waiting", extra)
        return ServiceHealth(
            HealthState.ok, f"{self.sent} sent, {self.waiting} waiting via {self._config.where}", extra
        )

    # ----------------------------------------------------------------- work

    async def run_pass(self) -> None:
        await self.run_once()

    async def run_once(self) -> int:
        """One round: send what is due. Returns how many mails were delivered."""
        delivered = 0
        if self._config is not None:
            ids = await asyncio.to_thread(self._due)
            for email_id in ids:
                result = await asyncio.to_thread(self._attempt, email_id)
                if result == "sent":
                    delivered += 1
                elif result == "unreachable":
                    break  # the server is down: the others wait for the next round
        self.waiting = await asyncio.to_thread(self._count_waiting)
        return delivered

    def _due(self) -> list[str]:
        assert self._ctx is not None
        with self._ctx.db.session() as session:
            return outbox.due_ids(session, utcnow(), self.batch)

    def _count_waiting(self) -> int:
        assert self._ctx is not None
        with self._ctx.db.session() as session:
            return outbox.count_waiting(session)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt: retry_base doubling, capped at retry_max."""
        return min(self.retry_base * 2 ** max(attempts - 1, 0), self.retry_max)

    def _attempt(self, email_id: str) -> str:
        """Claim, send and record one mail (blocking; runs in a worker thread). Returns what happened."""
        ctx, config = self._ctx, self._config
        assert ctx is not None and config is not None
        with ctx.db.session() as session:
            claimed = outbox.claim(session, email_id, self.worker, utcnow(), self.lease)
        if claimed is None:
            return "taken"  # another replica has it, or it is no longer due
        try:
            smtp.send(config, smtp.build_message(claimed, config.mail_from))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
            return self._record_failure(claimed, exc, config)
        with ctx.db.session() as session:
            outbox.mark_sent(session, claimed.id, self.worker, utcnow())
        self.sent += 1
        self._delivery_error = ""
        log.info("notify: sent %s to %s (attempt %d)", claimed.id, claimed.to_address, claimed.attempts)
        return "sent"

    def _record_failure(self, claimed: outbox.Claimed, exc: BaseException, config: smtp.SmtpConfig) -> str:
        assert self._ctx is not None
        error = smtp.describe(exc, config)
        unreachable = smtp.is_connection_problem(exc)
        if unreachable:
            self._delivery_error = error
        with self._ctx.db.session() as session:
            if smtp.is_permanent(exc) or claimed.attempts >= self.max_attempts:
                reason = "refused for good" if smtp.is_permanent(exc) else f"{claimed.attempts} attempts"
                outbox.mark_failed(session, claimed.id, self.worker, f"{error} (gave up: {reason})")
                self.failed += 1
                log.error("notify: giving up on %s to %s: %s", claimed.id, claimed.to_address, error)
                return "unreachable" if unreachable else "failed"
            delay = self.backoff(claimed.attempts)
            outbox.mark_retry(session, claimed.id, self.worker, error, utcnow() + timedelta(seconds=delay))
        log.warning("notify: %s to %s not sent (%s); retry in %.0fs", claimed.id, claimed.to_address, error, delay)
        return "unreachable" if unreachable else "retry"
