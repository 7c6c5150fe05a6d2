"""NotifyService against a real SMTP server (aiosmtpd): delivery, retries while the server is down, replicas."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from aiot.notify.outbox import enqueue
from aiot.notify.service import NotifyService
from aiot.services.contract import HealthState
from aiot.store.engine import Database
from aiot.store.notify import OutboxEmail, OutboxStatus
from tests.notify.conftest import SmtpServer, make_ctx, wait_until

FAST = {"poll_interval": 0.1, "retry_base": 0.2, "retry_max": 0.4}


def rows(db: Database) -> list[OutboxEmail]:
    with db.session() as session:
        return list(session.scalars(select(OutboxEmail).order_by(OutboxEmail.created_at)))


async def test_mail_arrives_with_headers_and_body(sqlite_db: Database, smtp_server: SmtpServer, tmp_path: Path) -> None:
    smtp_server.start()
    with sqlite_db.session() as session:
        row = enqueue(
            session,
            "Alice <alice@example.test>",
            "Your app smart-home is running",
            "Open it at: http://cp.test/apps/ins_1/\n",
            kind="app_running",
            html="<p>Open it at <a href='http://cp.test/apps/ins_1/'>here</a></p>",
        )
        email_id = row.id
    service = NotifyService(**FAST)
    await service.start(
        make_ctx(
            sqlite_db, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp_server.port, mail_from="AIoT <noreply@aiot.test>"
        )
    )
    try:
        await wait_until(lambda: len(smtp_server.sink.messages) == 1, 10, "the mail to arrive")
        await wait_until(lambda: rows(sqlite_db)[0].status == OutboxStatus.sent, 5, "sent to be recorded")
        await wait_until(lambda: service.health().state == HealthState.ok, 5, "health ok")
    finally:
        await service.stop()
    msg = smtp_server.sink.messages[0]
    assert msg["Subject"] == "Your app smart-home is running"
    assert msg["To"] == "Alice <alice@example.test>"
    assert msg["From"] == "AIoT <noreply@aiot.test>"
    assert msg["Message-ID"] == f"<{email_id}@aiot.test>"
    assert msg["X-Aiot-Outbox-Id"] == email_id
    assert "http://cp.test/apps/ins_1/" in msg.get_body(("plain",)).get_content()
    assert "<a href=" in msg.get_body(("html",)).get_content()
    assert smtp_server.sink.envelopes[0] == ("noreply@aiot.test", ["alice@example.test"])
    row = rows(sqlite_db)[0]
    assert row.sent_at is not None and row.attempts == 1 and row.last_error is None


async def test_server_down_retries_then_delivers(sqlite_db: Database, smtp_server: SmtpServer, tmp_path: Path) -> None:
    with sqlite_db.session() as session:
        enqueue(session, "bob@example.test", "hello", "body", kind="test")
    service = NotifyService(**FAST, max_attempts=50)
    await service.start(make_ctx(sqlite_db, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp_server.port))
    try:
        # Three attempts over, and between attempts (the next one, due at once with FAST back-off, may begin any
        # moment: then the row says `sending`).
        await wait_until(
            lambda: (r := rows(sqlite_db)[0]).attempts >= 3 and r.status == OutboxStatus.pending,
            10,
            "three failed attempts",
        )
        row = rows(sqlite_db)[0]
        assert row.status in (OutboxStatus.pending, OutboxStatus.sending) and row.sent_at is None
        assert "unreachable" in (row.last_error or "") and str(smtp_server.port) in (row.last_error or "")
        assert row.next_attempt_at > row.created_at
        health = service.health()
        assert health.state == HealthState.degraded and "unreachable" in health.detail
        smtp_server.start()
        await wait_until(lambda: len(smtp_server.sink.messages) == 1, 10, "delivery once the server is up")
        await wait_until(lambda: rows(sqlite_db)[0].status == OutboxStatus.sent, 5, "sent to be recorded")
        await wait_until(lambda: service.health().state == HealthState.ok, 5, "health to recover")
    finally:
        await service.stop()
    assert rows(sqlite_db)[0].attempts >= 3  # the third may be the one that found the server up


def test_backoff_doubles_and_caps() -> None:
    service = NotifyService(retry_base=5, retry_max=600)
    assert [service.backoff(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert service.backoff(20) == 600


async def test_gives_up_after_max_attempts(sqlite_db: Database, smtp_server: SmtpServer, tmp_path: Path) -> None:
    with sqlite_db.session() as session:
        enqueue(session, "bob@example.test", "hello", "body", kind="test")
    service = NotifyService(**FAST, max_attempts=2)
    await service.start(make_ctx(sqlite_db, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp_server.port))
    try:
        await wait_until(lambda: rows(sqlite_db)[0].status == OutboxStatus.failed, 10, "the mail to be given up")
    finally:
        await service.stop()
    row = rows(sqlite_db)[0]
    assert row.attempts == 2 and "gave up: 2 attempts" in (row.last_error or "")


async def test_refused_recipient_fails_at_once(sqlite_db: Database, smtp_server: SmtpServer, tmp_path: Path) -> None:
    smtp_server.sink.refuse.add("ghost@example.test")
    smtp_server.start()
    with sqlite_db.session() as session:
        enqueue(session, "ghost@example.test", "hello", "body", kind="test")
        enqueue(session, "bob@example.test", "hello", "body", kind="test")
    service = NotifyService(**FAST)
    await service.start(make_ctx(sqlite_db, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp_server.port))
    try:
        await wait_until(
            lambda: {r.status for r in rows(sqlite_db)} == {OutboxStatus.failed, OutboxStatus.sent},
            10,
            "one failed, one sent",
        )
    finally:
        await service.stop()
    ghost = next(r for r in rows(sqlite_db) if r.to_address.startswith("ghost"))
    assert ghost.attempts == 1 and "refused for good" in (ghost.last_error or "")
    assert len(smtp_server.sink.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_login_with_configured_user(sqlite_db: Database, smtp_server: SmtpServer, tmp_path: Path) -> None:
    smtp_server.start_with_login("mailer", "s3cret")
    with sqlite_db.session() as session:
        enqueue(session, "bob@example.test", "hello", "body", kind="test")
    service = NotifyService(**FAST)
    await service.start(
        make_ctx(
            sqlite_db,
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=smtp_server.port,
            smtp_user="mailer",
            smtp_password="s3cret",
        )
    )
    try:
        await wait_until(lambda: len(smtp_server.sink.messages) == 1, 10, "delivery after login")
    finally:
        await service.stop()
    assert smtp_server.logins == [("mailer", "s3cret")]


async def test_two_replicas_send_each_mail_once(database: Database, smtp_server: SmtpServer, tmp_path: Path) -> None:
    smtp_server.sink.delay = 0.02  # widen the window in which both replicas look at the same due rows
    smtp_server.start()
    count = 12
    with database.session() as session:
        for i in range(count):
            enqueue(session, f"user{i}@example.test", f"mail {i}", "body", kind="test")
    replicas = [NotifyService(**FAST), NotifyService(**FAST)]
    for service in replicas:
        await service.start(make_ctx(database, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp_server.port))
    try:
        await wait_until(lambda: all(r.status == OutboxStatus.sent for r in rows(database)), 20, "all sent")
    finally:
        for service in replicas:
            await service.stop()
    ids = [m["X-Aiot-Outbox-Id"] for m in smtp_server.sink.messages]
    assert len(ids) == count and len(set(ids)) == count, f"duplicates or losses: {sorted(ids)}"
    assert all(r.attempts == 1 for r in rows(database))
    assert replicas[0].sent + replicas[1].sent == count


async def test_no_smtp_host_keeps_mail_in_outbox(sqlite_db: Database, tmp_path: Path) -> None:
    with sqlite_db.session() as session:
        enqueue(session, "bob@example.test", "hello", "body", kind="test")
    service = NotifyService(**FAST)
    await service.start(make_ctx(sqlite_db, tmp_path))
    try:
        await service.run_once()
        health = service.health()
    finally:
        await service.stop()
    assert health.state == HealthState.degraded
    assert "smtp_host is not set" in health.detail and "1 e-mail" in health.detail
    row = rows(sqlite_db)[0]
    assert row.status == OutboxStatus.pending and row.attempts == 0


@pytest.mark.parametrize("bad", [{"retry_base": 0}, {"retry_base": 10, "retry_max": 5}, {"max_attempts": 0}])
def test_bad_service_options_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="NotifyService"):
        NotifyService(**bad)
