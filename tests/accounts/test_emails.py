"""User e-mail addresses are checked on create and update: a bad one is a 422 naming `email`.

The address ends up in an SMTP `To:` header, so a line break or a second address is an injection, not a typo."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from aiot.accounts import users as accounts
from aiot.accounts.emails import check_email
from aiot.errors import ValidationFailed
from aiot.store.engine import Database
from aiot.store.models import Role, User

BAD = [
    "not-an-address",
    "eve@",
    "@example.com",
    "eve@localhost",
    "eve example@example.com",
    "eve@exa mple.com",
    "eve@example.com\r\nBcc: victim@evil.test",
    "eve@example.com, mallory@evil.test",
    "a..b@example.com",
    "eve@-example.com",
    "eve@example.c0m",
    "x" * 65 + "@example.com",
    "eve@" + "a" * 250 + ".com",
]
GOOD = [
    ("eve@example.com", "eve@example.com"),
    ("  Eve.Smith+iot@Example.COM ", "Eve.Smith+iot@example.com"),
    ("o'brien@mail.example.co.uk", "o'brien@mail.example.co.uk"),
    ("jörg@bücher.de", "jörg@bücher.de"),
]


@pytest.mark.parametrize("address", BAD)
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="expected an address like name@example.com"):
        check_email(address)


@pytest.mark.parametrize(("address", "stored"), GOOD)
def test_good_addresses_are_kept(address: str, stored: str) -> None:
    assert check_email(address) == stored


def test_the_api_refuses_a_bad_email_on_create_and_update(api: TestClient, database: Database) -> None:
    with database.session() as session:
        admin = User(username="admin1", role=Role.admin, password_hash="!unusable")
        session.add(admin)
        session.flush()
        headers = {"Authorization": f"Bearer {accounts.issue_token(session, admin, ttl=timedelta(minutes=5)).token}"}
    body = {"username": "erin", "password": "erin-password", "role": "end_user"}
    for bad in ("erin@example.com\nBcc: all@evil.test", "erin"):
        refused = api.post("/api/v1/users", headers=headers, json={**body, "email": bad})
        assert refused.status_code == 422, refused.text
        assert [p["field"] for p in refused.json()["error"]["details"]["problems"]] == ["email"]
    created = api.post("/api/v1/users", headers=headers, json={**body, "email": "Erin@Example.com"})
    assert created.status_code == 201 and created.json()["email"] == "Erin@example.com"
    patched = api.patch("/api/v1/users/erin", headers=headers, json={"email": "erin at example.com"})
    assert patched.status_code == 422
    assert [p["field"] for p in patched.json()["error"]["details"]["problems"]] == ["email"]
    assert api.get("/api/v1/users/erin", headers=headers).json()["email"] == "Erin@example.com"  # unchanged


def test_the_account_service_checks_too(database: Database) -> None:
    """The CLI's first-admin path and scripts create users without the API's schema."""
    with database.session() as session, pytest.raises(ValidationFailed) as caught:
        accounts.create_user(
            session, username="frank", password="frank-password", role=Role.end_user, email="frank@@example.com"
        )
    assert caught.value.details["field"] == "email"
