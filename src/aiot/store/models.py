"""Tables of the platform core: users and their API tokens / web sessions.

Later capabilities (artifacts, devices, runtime, scheduler, ...) add their own modules of models, each imported
by `aiot.store.all_models` so that Alembic sees every table.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aiot.ids import new_id
from aiot.roles import Role as Role  # defined without SQLAlchemy (the CLI's choices), re-exported here
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class TokenKind(enum.StrEnum):
    """An API token (CLI, scripts) or a browser session (cookie); both are stored hashed."""

    api = "api"
    session = "session"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("usr"))
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=32))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("tok"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the secret part: tokens are long random values, so a fast hash is safe and lookups are O(1).
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[TokenKind] = mapped_column(Enum(TokenKind, native_enum=False, length=16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")
