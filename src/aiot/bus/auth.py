"""Who may connect to NATS, and what they may publish and subscribe to.

A `NatsUser` is what the auth callout (`callout.py`) answers with: its password (or bcrypt hash) is checked by the
responder, its permissions go into the user JWT (`permissions_for`). The platform's own user is in the server's
config as a bcrypt hash; its plain password only exists in the platform's credentials file (mode 0600).

Permission rules added here, and why:

* An empty `publish`/`subscribe` list means "nothing" (rendered as `deny: [">"]`): in nats-server an empty
  allow list means "no restriction", which would be the opposite of what a caller writing `[]` meant.
* MQTT `a/b/#` matches `a/b` itself as well as everything below it, so nats-server subscribes the MQTT client
  to both `a.b.>` and `a.b`; a subscribe allow `a.b.>` is therefore widened with `a.b`, otherwise the whole MQTT
  SUBSCRIBE is refused (observed: SUBACK failure and "Subscription Violation - Subject a.b").
* MQTT QoS 1 subscriptions are delivered through a JetStream consumer whose delivery subject is
  `$MQTT.sub.<nuid>`. Older nats-server releases (and the NATS MQTT docs) require subscribe permission on
  `$MQTT.sub.>` for users with permissions; since nats-io/nats-server PR #7637 (Dec 2025, in 2.15.1 which we
  ship) `$MQTT.` subjects are implicitly allowed for MQTT connections only. Granting `$MQTT.sub.>` to a user
  that may also connect as a plain NATS client would let it subscribe to `$MQTT.sub.>` and read every MQTT
  session's QoS 1 deliveries, so it is added ONLY for MQTT-only users (`connection_types=["MQTT"]`, where the
  server refuses MQTT subscriptions to `$MQTT.` topics): QoS 1 then also works on an older nats-server, and
  the grant cannot be abused. Declare device users MQTT-only. Both behaviours are tested.
* Request/reply over NATS needs subscribe permission on the reply inbox (`_INBOX.>` by default); it is NOT
  added automatically, since it lets a user see others' replies. Add it (or a per-user inbox prefix) yourself.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal

import bcrypt
from pydantic import BaseModel, Field, field_validator, model_validator

ConnectionType = Literal["STANDARD", "WEBSOCKET", "MQTT", "LEAFNODE"]

PLATFORM_USER = "aiot-platform"
MQTT_DELIVERY_SUBJECT = "$MQTT.sub.>"
# Cost 10: each client connection makes the server run one bcrypt check; 10 keeps that ~50 ms on a small box.
_BCRYPT_ROUNDS = 10
INSECURE_FAST_HASHES = "AIOT_INSECURE_FAST_HASHES"


def insecure_fast_hashes() -> bool:
    """True when `AIOT_INSECURE_FAST_HASHES=1`: password hashes (bcrypt here, argon2 for people) at their cheapest
    cost. For the test suite only, which creates thousands of users, devices and workloads on 2 cores (a hash at
    full cost is 60-120 ms of CPU); `aiot up` warns loudly when it is set. Verifying reads the cost from the hash
    itself, so hashes of either kind verify everywhere."""
    return os.environ.get(INSECURE_FAST_HASHES) == "1"


def _check_subject(subject: str) -> str:
    if not subject or subject != subject.strip() or any(c.isspace() for c in subject):
        raise ValueError(f"subject {subject!r} must be non-empty and contain no whitespace")
    tokens = subject.split(".")
    if any(t == "" for t in tokens):
        raise ValueError(f"subject {subject!r} has an empty token (leading, trailing or double '.')")
    if ">" in tokens[:-1]:
        raise ValueError(f"subject {subject!r}: '>' may only be the last token")
    return subject


class NatsUser(BaseModel):
    """One non-platform user of the embedded server (a device, a workload, an external tool).

    `publish`/`subscribe` are allow lists of NATS subjects (wildcards `*` and `>` allowed). MQTT topics map to
    subjects with `/` -> `.` (topic `a/b/c` is subject `a.b.c`).
    """

    username: str = Field(min_length=1, max_length=200)
    password: str | None = Field(None, min_length=1, description="Plain password (hashed before writing).")
    password_hash: str | None = Field(
        None, description="bcrypt hash instead of a password, for callers that only ever stored the hash."
    )
    publish: list[str] = Field(default_factory=list)
    subscribe: list[str] = Field(default_factory=list)
    connection_types: list[ConnectionType] | None = Field(
        None, description="Client kinds this user may connect as; None allows all (NATS, MQTT, ...)."
    )
    allow_responses: bool = Field(
        False, description="May publish replies to requests it received (for users that serve requests)."
    )

    @model_validator(mode="after")
    def _one_secret(self) -> NatsUser:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password or password_hash")
        if self.password_hash is not None and not self.password_hash.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError("password_hash must be a bcrypt hash ($2a$/$2b$/$2y$...)")
        return self

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError(f"username {value!r} must not contain whitespace")
        if value == PLATFORM_USER:
            raise ValueError(f"username {PLATFORM_USER!r} is reserved for the platform itself")
        return value

    @field_validator("publish", "subscribe")
    @classmethod
    def _subjects(cls, value: list[str]) -> list[str]:
        return [_check_subject(s) for s in value]


def hash_password(password: str) -> str:
    """bcrypt hash in the `$2b$...` form nats-server accepts in a `password` field."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4 if insecure_fast_hashes() else _BCRYPT_ROUNDS)).decode()


def _allow_or_nothing(subjects: list[str]) -> dict[str, list[str]]:
    return {"allow": subjects} if subjects else {"deny": [">"]}


def _widen_for_mqtt_multilevel(subjects: list[str]) -> list[str]:
    out: list[str] = []
    for s in subjects:
        if s.endswith(".>"):
            parent = s[:-2]
            if parent not in out and parent not in subjects:
                out.append(parent)
        out.append(s)
    return out


def permissions_for(user: NatsUser) -> dict[str, object]:
    """`user`'s permissions with the rules above applied: the same for a config entry and a callout's JWT."""
    mqtt_allowed = user.connection_types is None or "MQTT" in user.connection_types
    mqtt_only = user.connection_types is not None and set(user.connection_types) == {"MQTT"}
    subscribe = list(user.subscribe)
    if mqtt_allowed and subscribe:
        subscribe = _widen_for_mqtt_multilevel(subscribe)
    if mqtt_only and subscribe and MQTT_DELIVERY_SUBJECT not in subscribe:
        subscribe.append(MQTT_DELIVERY_SUBJECT)
    permissions: dict[str, object] = {
        "publish": _allow_or_nothing(list(user.publish)),
        "subscribe": _allow_or_nothing(subscribe),
    }
    if user.allow_responses:
        permissions["allow_responses"] = True
    return permissions


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600 (it holds credentials or hashes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create_platform_password(path: Path) -> str:
    """The platform user's password: read from `path`, or generated once and saved there with mode 0600."""
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            password = data["password"]
            if data.get("user") != PLATFORM_USER or not isinstance(password, str) or not password:
                raise ValueError("expected user and a non-empty password")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: platform NATS credentials file is malformed ({exc}); expected JSON "
                f'{{"user": "{PLATFORM_USER}", "password": "..."}}. Delete it to generate a new password.'
            ) from exc
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return password
    password = secrets.token_urlsafe(32)
    write_private(path, json.dumps({"user": PLATFORM_USER, "password": password}) + "\n")
    return password


def _access_key(user: NatsUser) -> tuple[object, ...]:
    """What decides `user`'s access, order-insensitive: two users with equal keys need no reconnect."""
    return (
        user.password,
        user.password_hash,
        tuple(sorted(user.publish)),
        tuple(sorted(user.subscribe)),
        tuple(sorted(user.connection_types or ())),
        user.connection_types is None,
        user.allow_responses,
    )


def changed_users(old: dict[str, NatsUser], fresh: dict[str, NatsUser]) -> list[str]:
    """Names in `old` that are gone from `fresh` or whose access changed: their connections must be closed."""
    return [name for name, user in old.items() if name not in fresh or _access_key(fresh[name]) != _access_key(user)]
