"""Fixtures for tests of the API, accounts and store: a migrated database and an API client on it (no network,
real DB). A folder's conftest imports the ones it uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiot.accounts import users as accounts
from aiot.launch.http_app import create_app
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.engine import Database
from aiot.store.models import Role

PASSWORD = "correct-horse-battery"


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    migrate.upgrade(db_url)
    db = Database(db_url)
    yield db
    db.dispose()


@pytest.fixture
def ctx(database: Database, tmp_path: Path) -> ServiceContext:
    settings = Settings(data_dir=tmp_path / "data", database_url=database.url)
    return ServiceContext(settings=settings, db=database)


@pytest.fixture
def api(ctx: ServiceContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as client:
        yield client


@pytest.fixture
def users(database: Database) -> dict[Role, str]:
    """One user per role, all with PASSWORD; returns role -> username."""
    names = {}
    with database.session() as session:
        for role in Role:
            name = f"{role.value.replace('_', '')}1"
            accounts.create_user(session, username=name, password=PASSWORD, role=role)
            names[role] = name
    return names


def login(api: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = api.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}
