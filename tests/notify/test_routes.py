"""GET /outbox (admin: all, others: their own), GET /outbox/{id}, POST /outbox/{id}/retry (admin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiot.api.app import API_PREFIX
from aiot.api.routes import outbox as outbox_routes
from aiot.launch.http_app import create_app
from aiot.notify.outbox import enqueue
from aiot.store.engine import Database
from aiot.store.notify import OutboxEmail, OutboxStatus
from tests.notify.conftest import make_ctx


@pytest.fixture
def api(sqlite_db: Database, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_ctx(sqlite_db, tmp_path))
    if not any(getattr(r, "path", "") == f"{API_PREFIX}/outbox" for r in app.routes):
        app.include_router(outbox_routes.router, prefix=API_PREFIX)  # until the lead mounts it
    with TestClient(app) as client:
        yield client


def auth(users: dict, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {users[name][1]}"}


@pytest.fixture
def mails(sqlite_db: Database, users: dict) -> dict[str, str]:
    with sqlite_db.session() as session:
        a = enqueue(session, "alice@example.test", "for alice", "a", kind="app_running", user_id=users["alice"][0])
        b = enqueue(session, "bob@example.test", "for bob", "b", kind="app_running", user_id=users["bob"][0])
        session.flush()
        b_row = session.get(OutboxEmail, b.id)
        assert b_row is not None
        b_row.status = OutboxStatus.failed
        b_row.attempts = 10
        b_row.last_error = "SMTP server x:25 unreachable"
        return {"alice": a.id, "bob": b.id}


def test_admin_sees_all_users_see_their_own(api: TestClient, users: dict, mails: dict) -> None:
    everything = api.get(f"{API_PREFIX}/outbox", headers=auth(users, "admin1"))
    assert everything.status_code == 200
    assert {m["id"] for m in everything.json()} == set(mails.values())
    mine = api.get(f"{API_PREFIX}/outbox", headers=auth(users, "alice")).json()
    assert [m["id"] for m in mine] == [mails["alice"]]
    assert mine[0]["status"] == "pending" and mine[0]["to"] == "alice@example.test"
    failed = api.get(f"{API_PREFIX}/outbox", params={"status": "failed"}, headers=auth(users, "admin1")).json()
    assert [m["id"] for m in failed] == [mails["bob"]]


def test_show_own_mail_and_not_anothers(api: TestClient, users: dict, mails: dict) -> None:
    own = api.get(f"{API_PREFIX}/outbox/{mails['alice']}", headers=auth(users, "alice"))
    assert own.status_code == 200 and own.json()["subject"] == "for alice"
    other = api.get(f"{API_PREFIX}/outbox/{mails['bob']}", headers=auth(users, "alice"))
    assert other.status_code == 404
    assert api.get(f"{API_PREFIX}/outbox/{mails['bob']}").status_code == 401


def test_retry_is_admin_only_and_resets_the_budget(
    api: TestClient, users: dict, mails: dict, sqlite_db: Database
) -> None:
    url = f"{API_PREFIX}/outbox/{mails['bob']}/retry"
    assert api.post(url, headers=auth(users, "bob")).status_code == 403
    response = api.post(url, headers=auth(users, "admin1"))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending" and response.json()["attempts"] == 0
    with sqlite_db.session() as session:
        row = session.get(OutboxEmail, mails["bob"])
        assert row is not None
        row.status = OutboxStatus.sent
    again = api.post(url, headers=auth(users, "admin1"))
    assert again.status_code == 409 and "already sent" in again.json()["error"]["message"]
    assert api.post(f"{API_PREFIX}/outbox/eml_nothere/retry", headers=auth(users, "admin1")).status_code == 404


def test_bad_limit_names_the_field(api: TestClient, users: dict) -> None:
    response = api.get(f"{API_PREFIX}/outbox", params={"limit": 0}, headers=auth(users, "admin1"))
    assert response.status_code == 422 and response.json()["error"]["details"]["field"] == "limit"
