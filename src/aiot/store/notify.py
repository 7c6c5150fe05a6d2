"""The e-mail outbox: every platform e-mail is a row here first, written in the caller's own transaction.

Why a table and not "send now": a mail is then never lost (the SMTP server may be down for an hour) and never
sent for something that rolled back (the row rolls back with it). The notify service delivers rows later and
records the outcome; `status` + `claimed_by`/`claim_expires_at` let several replicas share the work while each
row is sent at most once (a replica claims a row with a conditional UPDATE before it talks to SMTP).

The table is not in `all_models` yet: the lead adds it there and generates the Alembic migration.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class OutboxStatus(enum.StrEnum):
    pending = "pending"  # waiting for its first or next attempt (next_attempt_at)
    sending = "sending"  # claimed by one notify replica until claim_expires_at
    sent = "sent"
    failed = "failed"  # gave up (too many attempts, or the server refused it for good); an admin may retry


class OutboxEmail(Base):
    __tablename__ = "outbox_emails"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("eml"))
    to_address: Mapped[str] = mapped_column(String(254))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True)
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    kind: Mapped[str] = mapped_column(String(40), default="generic")  # app_running, ...
    # "app_running:<instance>:<workload>:<generation>": a second request for the same fact is a no-op.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    status: Mapped[OutboxStatus] = mapped_column(
        Enum(OutboxStatus, native_enum=False, length=16), default=OutboxStatus.pending, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
