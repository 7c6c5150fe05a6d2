"""Outbox operations on the database: enqueue (callers), claim/record outcomes (the notify service), retry (API).

Callers enqueue inside their own transaction, so a mail exists exactly when the fact it reports was committed.
Delivery is a separate step: a notify replica first *claims* a row with a conditional UPDATE (only one replica
can win it: the WHERE re-checks the status under the database's row lock) and only then talks to SMTP, so two
replicas never send the same row. The claim is a lease: a replica that died mid-send leaves a row that another
one takes over after `claim_expires_at` (the one case where a mail may go out twice - it carries the same
Message-ID both times, so mail clients show it once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiot.accounts.caller import Caller
from aiot.errors import Conflict, NotFound, ValidationFailed
from aiot.store.notify import OutboxEmail, OutboxStatus
from aiot.timeutil import utcnow

MAX_SUBJECT = 300


def _one_line(text: str) -> str:
    """Header values must not contain line breaks (header injection); fold them into spaces."""
    return " ".join(text.splitlines()).strip()


def check_address(to: str) -> str:
    """The address, stripped; `ValidationFailed` naming the field when it cannot be an e-mail address."""
    address = (to or "").strip()
    _, parsed = parseaddr(address)
    local, _, domain = parsed.rpartition("@")
    if not local or not domain or any(c in address for c in "\r\n,;") or " " in parsed:
        raise ValidationFailed(f"{to!r} is not an e-mail address (expected name@domain)", field="to")
    return address


def enqueue(
    session: Session,
    to: str,
    subject: str,
    body: str,
    *,
    kind: str,
    user_id: str | None = None,
    dedupe_key: str | None = None,
    html: str | None = None,
) -> OutboxEmail:
    """Add a mail to the outbox in the caller's transaction (it is sent after that transaction commits).

    Idempotent on `dedupe_key`: when a mail with that key exists (whatever its status) it is returned and
    nothing is added, so "instance X is running at Y" goes out once even when requested twice.
    """
    address = check_address(to)
    if not kind or len(kind) > 40:
        raise ValidationFailed("kind must be 1-40 characters (e.g. 'app_running')", field="kind")
    if dedupe_key is not None and not 0 < len(dedupe_key) <= 200:
        raise ValidationFailed("dedupe_key must be 1-200 characters", field="dedupe_key")
    if dedupe_key is not None:
        existing = session.scalar(select(OutboxEmail).where(OutboxEmail.dedupe_key == dedupe_key))
        if existing is not None:
            return existing
    row = OutboxEmail(
        to_address=address,
        subject=_one_line(subject)[:MAX_SUBJECT],
        body=body,
        html=html,
        kind=kind,
        user_id=user_id,
        dedupe_key=dedupe_key,
        status=OutboxStatus.pending,
        created_at=utcnow(),
        next_attempt_at=utcnow(),
        attempts=0,
    )
    if dedupe_key is None:
        session.add(row)
        session.flush()
        return row
    try:
        with session.begin_nested():  # a concurrent enqueue of the same key loses only this savepoint
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.scalar(select(OutboxEmail).where(OutboxEmail.dedupe_key == dedupe_key))
        if existing is None:
            raise
        return existing
    return row


# ---------------------------------------------------------------------- delivery side (notify service)


@dataclass(frozen=True)
class Claimed:
    """A detached copy of a claimed row: what the sender needs, safe to use outside the session."""

    id: str
    to_address: str
    subject: str
    body: str
    html: str | None
    attempts: int
    created_at: datetime


def due_ids(session: Session, now: datetime, limit: int) -> list[str]:
    """Rows worth trying now: pending and due, or stuck in `sending` past their lease (a replica died)."""
    query = (
        select(OutboxEmail.id)
        .where(
            or_(
                (OutboxEmail.status == OutboxStatus.pending) & (OutboxEmail.next_attempt_at <= now),
                (OutboxEmail.status == OutboxStatus.sending) & (OutboxEmail.claim_expires_at < now),
            )
        )
        .order_by(OutboxEmail.next_attempt_at, OutboxEmail.created_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim(session: Session, email_id: str, worker: str, now: datetime, lease: timedelta) -> Claimed | None:
    """Take the row for `worker` (counts an attempt), or None when another replica has it or it is done.

    The UPDATE's WHERE repeats the due condition; the database applies it atomically per row, so of two
    replicas racing for one row exactly one sees rowcount 1.
    """
    result = session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == email_id)
        .where(
            or_(
                (OutboxEmail.status == OutboxStatus.pending) & (OutboxEmail.next_attempt_at <= now),
                (OutboxEmail.status == OutboxStatus.sending) & (OutboxEmail.claim_expires_at < now),
            )
        )
        .values(
            status=OutboxStatus.sending,
            claimed_by=worker,
            claim_expires_at=now + lease,
            attempts=OutboxEmail.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    row = session.get(OutboxEmail, email_id, populate_existing=True)
    assert row is not None
    return Claimed(
        id=row.id,
        to_address=row.to_address,
        subject=row.subject,
        body=row.body,
        html=row.html,
        attempts=row.attempts,
        created_at=row.created_at,
    )


def _finish(session: Session, email_id: str, worker: str, **values: object) -> bool:
    """Record an outcome, only while `worker` still holds the claim (else another replica took over)."""
    result = session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == email_id, OutboxEmail.claimed_by == worker, OutboxEmail.status == OutboxStatus.sending)
        .values(claimed_by=None, claim_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_sent(session: Session, email_id: str, worker: str, now: datetime) -> bool:
    return _finish(session, email_id, worker, status=OutboxStatus.sent, sent_at=now, last_error=None)


def mark_retry(session: Session, email_id: str, worker: str, error: str, next_attempt_at: datetime) -> bool:
    return _finish(
        session, email_id, worker, status=OutboxStatus.pending, last_error=error[:1000], next_attempt_at=next_attempt_at
    )


def mark_failed(session: Session, email_id: str, worker: str, error: str) -> bool:
    return _finish(session, email_id, worker, status=OutboxStatus.failed, last_error=error[:1000])


def count_waiting(session: Session) -> int:
    """Mails not delivered yet and not given up (pending or being sent)."""
    from sqlalchemy import func

    return (
        session.scalar(
            select(func.count())
            .select_from(OutboxEmail)
            .where(OutboxEmail.status.in_([OutboxStatus.pending, OutboxStatus.sending]))
        )
        or 0
    )


# ---------------------------------------------------------------------- API side


def retry(session: Session, email: OutboxEmail, now: datetime | None = None) -> OutboxEmail:
    """Make a failed (or waiting) mail due now with a fresh attempt budget; a sent mail is a Conflict."""
    now = now or utcnow()
    if email.status == OutboxStatus.sent:
        raise Conflict(
            f"e-mail {email.id} was already sent at {email.sent_at.isoformat() if email.sent_at else '?'}"
            "; it is not sent again",
            field="id",
        )
    if email.status == OutboxStatus.sending and email.claim_expires_at and email.claim_expires_at > now:
        raise Conflict(f"e-mail {email.id} is being sent right now; look again in a moment", field="id")
    email.status = OutboxStatus.pending
    email.attempts = 0
    email.next_attempt_at = now
    email.claimed_by = None
    email.claim_expires_at = None
    session.flush()
    return email


# ---------------------------------------------------------------------- what people may read of it


def visible_email(session: Session, email_id: str, caller: Caller) -> OutboxEmail:
    """A mail the caller may see: admins every one, others those sent to them. Someone else's mail answers 404
    like a missing one: its existence is not the caller's business."""
    row = session.get(OutboxEmail, email_id)
    if row is None or (not caller.is_admin and row.user_id != caller.user_id):
        raise NotFound(f"no e-mail {email_id} in your outbox", field="id")
    return row


def list_emails(
    session: Session,
    user_id: str | None,
    status: OutboxStatus | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[OutboxEmail]:
    """Newest first; `user_id` None lists everyone's (admins)."""
    query = select(OutboxEmail).order_by(OutboxEmail.created_at.desc(), OutboxEmail.id).limit(limit)
    if user_id is not None:
        query = query.where(OutboxEmail.user_id == user_id)
    if status is not None:
        query = query.where(OutboxEmail.status == status)
    if kind:
        query = query.where(OutboxEmail.kind == kind)
    return list(session.scalars(query))
