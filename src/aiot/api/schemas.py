"""Request and response bodies of the core API (users, auth, status)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiot.accounts.emails import check_email
from aiot.store.models import Role


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    token_name: str = Field("", max_length=100, description="A label to recognise the token by (e.g. 'cli').")


class TokenOut(BaseModel):
    token: str = Field(description="Bearer token; shown once, keep it secret.")
    token_id: str
    expires_at: datetime
    user: UserOut


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    email: str | None
    role: Role
    disabled: bool
    created_at: datetime


def _email(value: str | None) -> str | None:
    """A checked address (422 naming `email` otherwise); an empty string means "no address"."""
    if value is None or not value.strip():
        return None if value is None else ""
    return check_email(value)


class SessionOut(UserOut):
    csrf_token: str = Field(description="Send it as the X-CSRF-Token header on unsafe requests of this session.")


class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role
    email: str | None = Field(None, max_length=254, description="name@example.com; checked, no DNS look-up")

    _check_email = field_validator("email")(_email)


class UserUpdate(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    email: str | None = Field(None, max_length=254, description="name@example.com; an empty string removes it")

    _check_email = field_validator("email")(_email)
    password: str | None = Field(None, min_length=8, max_length=1024, description="Admin reset.")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class TokenInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class StatusOut(BaseModel):
    version: str
    database: dict[str, Any]
    nats: dict[str, Any]
    services: dict[str, Any]


TokenOut.model_rebuild()
