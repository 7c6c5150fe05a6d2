"""Time helpers: the platform stores and sends aware UTC datetimes only (time zones at the edges)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Treat a naive datetime read back from a database as UTC (SQLite drops the offset)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
