"""Fixtures for the notify tests: a database with the outbox table, users, and a REAL SMTP server (aiosmtpd).

The outbox table has no Alembic migration yet (the lead generates it), so it is created here with
`Base.metadata.create_all` on top of the migrated schema.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiot.accounts import users as accounts
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store import notify as notify_models
from aiot.store.base import Base
from aiot.store.engine import Database
from aiot.store.models import Role
from tests.conftest import free_port
from tests.support.smtp import MailSink, SmtpServer

PASSWORD = "correct-horse-battery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server on a free port, NOT started yet (tests decide when it is up)."""
    server = SmtpServer(port=free_port(), sink=MailSink())
    yield server
    server.stop()


def make_database(url: str) -> Database:
    migrate.upgrade(url)
    db = Database(url)
    Base.metadata.create_all(db.engine, tables=[notify_models.OutboxEmail.__table__])
    return db


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = make_database(db_url)
    yield db
    db.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = make_database(f"sqlite:///{tmp_path / 'aiot.db'}")
    yield db
    db.dispose()


@pytest.fixture
def users(sqlite_db: Database) -> dict[str, tuple[str, str]]:
    """username -> (user id, API token) for one admin and two end users with e-mail addresses."""
    from datetime import timedelta

    out = {}
    with sqlite_db.session() as session:
        for name, role in (("admin1", Role.admin), ("alice", Role.end_user), ("bob", Role.end_user)):
            user = accounts.create_user(
                session, username=name, password=PASSWORD, role=role, email=f"{name}@example.test"
            )
            out[name] = (user.id, accounts.issue_token(session, user, ttl=timedelta(hours=1)).token)
    return out


def make_ctx(db: Database, tmp_path: Path, **settings: Any) -> ServiceContext:
    return ServiceContext(settings=Settings(data_dir=tmp_path / "data", database_url=db.url, **settings), db=db)


async def wait_until(predicate: Callable[[], bool], limit_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit_s:
            pytest.fail(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start
