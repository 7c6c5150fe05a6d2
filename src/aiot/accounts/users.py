"""Users, roles and tokens: the rules, independent of HTTP (the API and CLI both call these).

Errors are `aiot.errors.PlatformError` subclasses so the API maps them to 4xx bodies naming the field.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aiot.accounts.emails import check_email
from aiot.accounts.passwords import MIN_PASSWORD_LENGTH, hash_password, needs_rehash, verify_password
from aiot.accounts.tokens import format_token, hash_secret, new_secret, parse_token, secrets_match
from aiot.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from aiot.store.engine import Database
from aiot.store.models import ApiToken, Role, TokenKind, User
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
# Verifying against a real hash when the user does not exist keeps login time the same either way.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class IssuedToken:
    """A token as handed to its owner once: the full secret is never stored or shown again."""

    token: str
    record: ApiToken


def check_password_rules(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"{field} must be at least {MIN_PASSWORD_LENGTH} characters long", field=field)


def create_user(session: Session, *, username: str, password: str, role: Role, email: str | None = None) -> User:
    if not USERNAME_RE.match(username):
        raise ValidationFailed(
            "username must be 2-64 characters: a lower-case letter, then lower-case letters, digits, '_', '.', '-'",
            field="username",
        )
    check_password_rules(password)
    if email:
        try:
            email = check_email(email)
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="email") from exc
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"a user named {username!r} already exists", field="username")
    user = User(username=username, password_hash=hash_password(password), role=role, email=email)
    session.add(user)
    session.flush()
    log.info("user created: %s (%s, role %s)", user.username, user.id, role.value)
    return user


def get_user(session: Session, user_id_or_name: str) -> User:
    user = session.get(User, user_id_or_name) or session.scalar(select(User).where(User.username == user_id_or_name))
    if user is None:
        raise NotFound(f"no user {user_id_or_name!r}", field="user")
    return user


def authenticate(session: Session, username: str, password: str) -> User:
    """The user with these credentials, or Unauthorized (same message whatever was wrong)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        raise Unauthorized("wrong username or password")
    if not verify_password(user.password_hash, password):
        raise Unauthorized("wrong username or password")
    if user.disabled:
        raise Unauthorized("this account is disabled; ask an admin")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def issue_token(
    session: Session, user: User, *, ttl: timedelta, kind: TokenKind = TokenKind.api, name: str = ""
) -> IssuedToken:
    secret = new_secret()
    record = ApiToken(
        user_id=user.id, secret_hash=hash_secret(secret), kind=kind, name=name[:100], expires_at=utcnow() + ttl
    )
    session.add(record)
    session.flush()
    return IssuedToken(token=format_token(record.id, secret), record=record)


def resolve_token(session: Session, token: str) -> tuple[User, ApiToken]:
    """The user and token record behind a presented token; Unauthorized with the reason otherwise."""
    parsed = parse_token(token)
    if parsed is None:
        raise Unauthorized("malformed token: expected 'aiot.<id>.<secret>'")
    token_id, secret = parsed
    record = session.get(ApiToken, token_id)
    if record is None or not secrets_match(record.secret_hash, secret):
        raise Unauthorized("unknown token")
    if record.revoked_at is not None:
        raise Unauthorized("token revoked")
    now = utcnow()
    if record.expires_at <= now:
        raise Unauthorized("token expired; log in again")
    if record.user.disabled:
        raise Unauthorized("this account is disabled; ask an admin")
    return record.user, record


def touch_token(db: Database, record: ApiToken) -> None:
    """Remember when a token was last used, at most once a minute (a write per request would serialise SQLite
    for nothing), in its own transaction and best effort: a full disk or a busy database must not turn a
    read into an error, and the caller's session may be read-only."""
    now = utcnow()
    if record.last_used_at is not None and now - record.last_used_at <= timedelta(minutes=1):
        return
    try:
        with db.session() as session:
            session.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=now))
    except Exception as exc:  # noqa: BLE001 - bookkeeping only; the request goes on
        log.warning("could not record the use of token %s: %s", record.id, type(exc).__name__)


def revoke_token(session: Session, record: ApiToken) -> None:
    if record.revoked_at is None:
        record.revoked_at = utcnow()


def revoke_all_tokens(session: Session, user: User) -> int:
    count = 0
    for record in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))):
        record.revoked_at = utcnow()
        count += 1
    return count


def change_password(session: Session, user: User, current: str, new: str) -> None:
    if not verify_password(user.password_hash, current):
        raise ValidationFailed("current password is wrong", field="current_password")
    check_password_rules(new, "new_password")
    set_password(session, user, new)


def set_password(session: Session, user: User, new: str) -> None:
    check_password_rules(new, "password")
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    # A changed password ends every other session: a stolen token stops working.
    revoke_all_tokens(session, user)


def ensure_admin(session: Session, username: str, password: str | None) -> str | None:
    """Create the first admin when there is no user at all; return the generated password (or None).

    Runs on every control plane start; it does nothing once any user exists, so it never overwrites a
    password an admin has since changed.
    """
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    create_user(session, username=username, password=password, role=Role.admin)
    return generated


def list_users(session: Session, role: Role | None = None) -> list[User]:
    """Every user (or those of one role), by username."""
    query = select(User).order_by(User.username)
    if role is not None:
        query = query.where(User.role == role)
    return list(session.scalars(query))


def list_tokens(session: Session, user_id: str) -> list[ApiToken]:
    """A user's tokens and sessions, oldest first (revoked ones included, marked)."""
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)))


def own_token(session: Session, user_id: str, token_id: str) -> ApiToken:
    """One of the user's own tokens; another user's is reported as not found."""
    record = session.get(ApiToken, token_id)
    if record is None or record.user_id != user_id:
        raise NotFound(f"no token {token_id!r} of yours", field="token_id")
    return record
