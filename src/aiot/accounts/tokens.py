"""Opaque bearer tokens: `aiot_<id>_<secret>`; only the SHA-256 of the secret is stored.

A long random secret makes a salted slow hash unnecessary, and a fast hash keeps every API request cheap.
The id part makes a leaked token easy to find and revoke, and lets logs name a token without its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "aiot"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def format_token(token_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}.{token_id}.{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a presented token into (id, secret); None when it is not one of ours."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secrets_match(expected_hash: str, secret: str) -> bool:
    return hmac.compare_digest(expected_hash, hash_secret(secret))
