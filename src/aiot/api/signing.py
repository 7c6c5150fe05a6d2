"""Values the platform signs with its secret key: CSRF tokens, the login form's token, apps-origin tickets/cookies.

One key, many purposes: every signature covers a purpose string, so a value made for one use (say, the login
form) is never accepted for another (say, an app viewer's cookie). Payloads are small JSON objects, readable by
whoever holds the value (they carry ids and expiry times, never a secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from fastapi import FastAPI

from aiot.api.state import app_context
from aiot.secrets_store import derive_password, platform_secret


def app_secret(app: FastAPI) -> bytes:
    """The platform secret, read once per app (it is a file read otherwise)."""
    secret = getattr(app.state, "signing_secret", None)
    if secret is None:
        secret = platform_secret(app_context(app).settings)
        app.state.signing_secret = secret
    return secret


def derived_token(secret: bytes, purpose: str, *parts: object) -> str:
    """A token only the platform can compute from `parts` (e.g. the CSRF token of one session)."""
    return derive_password(secret, purpose, *parts)


def tokens_match(sent: str, expected: str) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, purpose: str, payload: dict[str, Any], ttl_s: float) -> str:
    """`payload` with an expiry (`exp`, epoch seconds) and a MAC over purpose and payload."""
    body = _b64(json.dumps({**payload, "exp": int(time.time() + ttl_s)}, separators=(",", ":")).encode())
    mac = hmac.new(secret, f"{purpose}\x00{body}".encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(secret: bytes, purpose: str, value: str) -> dict[str, Any] | None:
    """The payload of a value made by `sign` for this purpose and not expired, else None."""
    body, _, mac = value.partition(".")
    if not body or not mac:
        return None
    expected = _b64(hmac.new(secret, f"{purpose}\x00{body}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int) or payload["exp"] < time.time():
        return None
    return payload
