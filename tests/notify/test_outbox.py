"""`enqueue` in the caller's transaction: dedupe, rollback, validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from aiot.errors import Conflict, ValidationFailed
from aiot.notify import outbox
from aiot.store.engine import Database
from aiot.store.notify import OutboxEmail, OutboxStatus
from aiot.timeutil import utcnow


def count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(OutboxEmail)) or 0


def test_dedupe_key_makes_enqueue_idempotent(database: Database) -> None:
    with database.session() as session:
        first = outbox.enqueue(session, "a@example.test", "running", "at X", kind="app_running", dedupe_key="k1")
    with database.session() as session:
        second = outbox.enqueue(session, "a@example.test", "running again", "at X", kind="app_running", dedupe_key="k1")
        third = outbox.enqueue(session, "a@example.test", "other", "at Y", kind="app_running", dedupe_key="k2")
    assert second.id == first.id and third.id != first.id
    assert count(database) == 2


def test_rolled_back_transaction_leaves_no_mail(database: Database) -> None:
    with pytest.raises(RuntimeError), database.session() as session:
        outbox.enqueue(session, "a@example.test", "running", "at X", kind="app_running")
        raise RuntimeError("the caller's work failed")
    assert count(database) == 0


@pytest.mark.parametrize(
    "to", ["", "not-an-address", "a@b.test, c@d.test", "a@b.test\r\nBcc: x@y.test", "@example.test"]
)
def test_bad_address_is_refused_naming_the_field(database: Database, to: str) -> None:
    with database.session() as session, pytest.raises(ValidationFailed) as info:
        outbox.enqueue(session, to, "s", "b", kind="test")
    assert info.value.details["field"] == "to"


def test_subject_line_breaks_are_folded(database: Database) -> None:
    with database.session() as session:
        row = outbox.enqueue(session, "a@example.test", "hi\r\nBcc: evil@example.test", "b", kind="test")
    assert row.subject == "hi Bcc: evil@example.test"


def test_claim_is_exclusive_and_retry_resets(database: Database) -> None:
    with database.session() as session:
        email_id = outbox.enqueue(session, "a@example.test", "s", "b", kind="test").id
    lease = timedelta(minutes=5)
    with database.session() as session:
        assert outbox.claim(session, email_id, "w1", utcnow(), lease) is not None
    with database.session() as session:
        assert outbox.claim(session, email_id, "w2", utcnow(), lease) is None
        row = session.get(OutboxEmail, email_id)
        assert row is not None
        with pytest.raises(Conflict, match="being sent"):
            outbox.retry(session, row)
    # w1 died: after its lease another worker may take the row over.
    with database.session() as session:
        assert outbox.claim(session, email_id, "w2", utcnow() + lease * 2, lease) is not None
        assert not outbox.mark_sent(session, email_id, "w1", utcnow())  # the old holder cannot record
        assert outbox.mark_sent(session, email_id, "w2", utcnow())
    with database.session() as session:
        row = session.get(OutboxEmail, email_id)
        assert row is not None and row.status == OutboxStatus.sent and row.attempts == 2
        with pytest.raises(Conflict, match="already sent"):
            outbox.retry(session, row)
