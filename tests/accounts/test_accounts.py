"""Login and tokens through the API: wrong password, expired, revoked, disabled, password change."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from aiot.accounts import users as accounts
from aiot.store.engine import Database
from aiot.store.models import ApiToken, Role, User
from aiot.timeutil import utcnow
from tests.support.api_fixtures import PASSWORD, login


def test_login_gives_a_working_token_stored_hashed(api: TestClient, users: dict[Role, str], database: Database) -> None:
    response = api.post("/api/v1/auth/login", json={"username": users[Role.end_user], "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["role"] == "end_user"
    with database.session() as session:
        stored = [t.secret_hash for t in session.query(ApiToken)]
        used = session.get(ApiToken, token.split(".")[1])
        assert used is not None and used.last_used_at is not None  # the use was recorded
    assert stored and all(token.split(".")[-1] not in h for h in stored)
    with database.session() as session:
        hashes = [u.password_hash for u in session.query(User)]
    assert all(h.startswith("$argon2id$") for h in hashes)


def test_wrong_password_and_unknown_user_get_the_same_401(api: TestClient, users: dict[Role, str]) -> None:
    wrong = api.post("/api/v1/auth/login", json={"username": users[Role.admin], "password": "nope-nope-nope"})
    unknown = api.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope-nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"] == "wrong username or password"


def test_expired_token_is_refused(api: TestClient, users: dict[Role, str], database: Database) -> None:
    with database.session() as session:
        user = accounts.get_user(session, users[Role.admin])
        issued = accounts.issue_token(session, user, ttl=timedelta(seconds=-1))
    response = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {issued.token}"})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_revoked_token_is_refused(api: TestClient, users: dict[Role, str]) -> None:
    headers = login(api, users[Role.app_developer])
    assert api.post("/api/v1/auth/logout", headers=headers).status_code == 204
    response = api.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_revoke_one_of_my_tokens_by_id(api: TestClient, users: dict[Role, str]) -> None:
    first = login(api, users[Role.ai_developer])
    second = login(api, users[Role.ai_developer])
    tokens = api.get("/api/v1/auth/tokens", headers=first).json()
    assert len(tokens) == 2
    second_id = second["Authorization"].split(".")[1]
    assert api.delete(f"/api/v1/auth/tokens/{second_id}", headers=first).status_code == 204
    assert api.get("/api/v1/auth/me", headers=second).status_code == 401
    assert api.get("/api/v1/auth/me", headers=first).status_code == 200


def test_malformed_and_garbage_tokens(api: TestClient, users: dict[Role, str]) -> None:
    for header in ("Bearer nonsense", "Bearer aiot.tok_x.y", "Basic abc", "Bearer "):
        response = api.get("/api/v1/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["error"]["code"] == "unauthorized"


def test_disabled_user_cannot_log_in_and_loses_tokens(api: TestClient, users: dict[Role, str]) -> None:
    admin = login(api, users[Role.admin])
    victim = login(api, users[Role.end_user])
    response = api.patch(f"/api/v1/users/{users[Role.end_user]}", json={"disabled": True}, headers=admin)
    assert response.status_code == 200 and response.json()["disabled"] is True
    assert api.get("/api/v1/auth/me", headers=victim).status_code == 401
    relogin = api.post("/api/v1/auth/login", json={"username": users[Role.end_user], "password": PASSWORD})
    assert relogin.status_code == 401 and "disabled" in relogin.json()["error"]["message"]


def test_change_own_password(api: TestClient, users: dict[Role, str]) -> None:
    headers = login(api, users[Role.end_user])
    bad = api.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": "wrong-wrong", "new_password": "another-long-one"},
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "current_password"
    ok = api.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "another-long-one"},
    )
    assert ok.status_code == 204
    assert api.get("/api/v1/auth/me", headers=headers).status_code == 401
    login(api, users[Role.end_user], "another-long-one")


def test_admin_creates_user_and_assigns_role(api: TestClient, users: dict[Role, str]) -> None:
    admin = login(api, users[Role.admin])
    created = api.post(
        "/api/v1/users", headers=admin, json={"username": "carol", "password": "carol-password", "role": "end_user"}
    )
    assert created.status_code == 201
    dup = api.post(
        "/api/v1/users", headers=admin, json={"username": "carol", "password": "carol-password", "role": "end_user"}
    )
    assert dup.status_code == 409 and dup.json()["error"]["details"]["field"] == "username"
    changed = api.patch("/api/v1/users/carol", headers=admin, json={"role": "app_developer"})
    assert changed.json()["role"] == "app_developer"
    assert login(api, "carol", "carol-password")
    short = api.post("/api/v1/users", headers=admin, json={"username": "dave", "password": "x", "role": "end_user"})
    assert short.status_code == 422 and short.json()["error"]["details"]["problems"][0]["field"] == "password"


def test_admin_cannot_lock_themselves_out(api: TestClient, users: dict[Role, str]) -> None:
    admin = login(api, users[Role.admin])
    response = api.patch(f"/api/v1/users/{users[Role.admin]}", headers=admin, json={"disabled": True})
    assert response.status_code == 409


def test_first_admin_is_created_once(database: Database) -> None:
    with database.session() as session:
        generated = accounts.ensure_admin(session, "root", None)
    assert generated and len(generated) >= 12
    with database.session() as session:
        assert accounts.ensure_admin(session, "root", "other-password") is None
        assert accounts.authenticate(session, "root", generated).role == Role.admin


def test_cookie_session_needs_csrf_header_for_writes(api: TestClient, users: dict[Role, str]) -> None:
    response = api.post("/api/v1/auth/session", json={"username": users[Role.admin], "password": PASSWORD})
    assert response.status_code == 200
    assert "aiot_session" in api.cookies and "httponly" in response.headers["set-cookie"].lower()
    assert api.get("/api/v1/auth/me").status_code == 200
    body = {"username": "erin", "password": "erin-password", "role": "end_user"}
    refused = api.post("/api/v1/users", json=body)
    assert refused.status_code == 403 and refused.json()["error"]["details"]["field"] == "x-csrf-token"
    accepted = api.post("/api/v1/users", json=body, headers={"x-csrf-token": response.json()["csrf_token"]})
    assert accepted.status_code == 201


def test_token_expiry_is_in_the_future(api: TestClient, users: dict[Role, str], database: Database) -> None:
    login(api, users[Role.admin])
    with database.session() as session:
        token = session.query(ApiToken).one()
        assert token.expires_at > utcnow() + timedelta(hours=1)
