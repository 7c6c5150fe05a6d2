"""Request and response bodies of the core API (users, auth, status), and `OutModel`, the base of every
response model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiot.accounts.emails import check_email
from aiot.store.models import Role


class OutModel(BaseModel):
    """Base of the response models of routes whose answers are built as dicts (`*_out` builders): a key the
    builder adds but the model does not declare is an error (500 in tests), never silently dropped, so the
    OpenAPI document and the answers cannot drift apart unnoticed."""

    model_config = ConfigDict(extra="forbid")


Timestamp = str
"""An ISO 8601 date-time with its offset, as the builders write it (`datetime.isoformat()`)."""


ZIP_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the package archive (zip)",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""`responses=` of the routes that answer with a package archive."""


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


class RolloutOut(OutModel):
    """One version change of an app instance or a model (`aiot.deployer.rollouts.rollout_out`)."""

    id: str
    target: str = Field(description="instance or model")
    target_id: str
    from_version: str | None
    to_version: str
    from_package_id: str | None
    to_package_id: str
    state: str = Field(description="rolling, succeeded, rolled_back or failed")
    reason: str
    manual_rollback: bool
    detail: dict[str, Any]
    started_at: Timestamp
    finished_at: Timestamp | None


class LoadSampleOut(OutModel):
    at: Timestamp
    cpu: float = Field(description="percent (a node: of the machine; a workload: of one core, summed)")
    memory: float | None = Field(None, description="a node: percent of its memory")
    memory_mb: float | None = Field(None, description="a workload: resident MiB of its processes")


class LoadHistoryOut(OutModel):
    """The recent load reports of a node or workload, oldest first (about two minutes, at most an hour)."""

    samples: list[LoadSampleOut]


TokenOut.model_rebuild()
