"""Migrations build the schema from empty on SQLite and PostgreSQL, and match the ORM models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from aiot.store import migrate
from aiot.store.all_models import metadata
from aiot.store.engine import make_engine


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    assert "users" not in migrate.current_tables(db_url)
    migrate.upgrade(db_url)
    tables = migrate.current_tables(db_url)
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_is_idempotent_and_reversible(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")
    assert not set(metadata.tables) & migrate.current_tables(db_url)
    migrate.upgrade(db_url)
    assert set(metadata.tables) <= migrate.current_tables(db_url)


def test_models_and_migrations_agree(db_url: str) -> None:
    """A model change without a migration fails here (autogenerate finds no difference)."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert inspect(engine).get_foreign_keys("api_tokens")
    finally:
        engine.dispose()
