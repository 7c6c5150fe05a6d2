"""Engine and session factory for SQLite (embedded default) or PostgreSQL.

SQLite gets WAL mode (readers don't block the writer; a SIGKILL loses no committed transaction), foreign keys
on, and a busy timeout so that several platform processes can share the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from aiot.datadir import PRIVATE_DIR, PRIVATE_FILE, create_private_file, tighten


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine for `url`; for SQLite, create the parent folder (0700 when it is new), the database file
    0600 (its -wal and -shm files then get the same mode), and set the pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            database = Path(parsed.database)
            database.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
            create_private_file(database)
            for suffix in ("-wal", "-shm", "-journal"):  # left by an older version with a wider mode
                tighten(database.with_name(database.name + suffix), PRIVATE_FILE)
        # Connections are kept (not closed past the default 5): the API's worker threads use many at once, and
        # opening one (file, pragmas) costs more than the query (profiled: 8 % of an agent report's time).
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 10}, pool_size=20, max_overflow=40
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """One engine plus its session factory; shared by every service of a process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error (nothing half-written)."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
