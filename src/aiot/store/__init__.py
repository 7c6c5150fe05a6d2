"""State store: SQLAlchemy 2 models, sessions and Alembic migrations (SQLite or PostgreSQL)."""

from aiot.store.base import Base, UTCDateTime
from aiot.store.engine import Database, make_engine

__all__ = ["Base", "Database", "UTCDateTime", "make_engine"]
