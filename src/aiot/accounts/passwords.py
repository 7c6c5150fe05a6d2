"""Password hashing with argon2id (argon2-cffi's PasswordHasher; passlib's wrapper breaks on argon2-cffi 25)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from aiot.bus.auth import insecure_fast_hashes


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id at argon2-cffi's defaults (RFC 9106's low-memory profile); its cheapest profile only under
    `AIOT_INSECURE_FAST_HASHES=1` (the test suite, see `insecure_fast_hashes`)."""
    if insecure_fast_hashes():
        return PasswordHasher.from_parameters(profiles.CHEAPEST)
    return PasswordHasher()


MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches; never raises for a wrong password or a damaged hash."""
    try:
        return _hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's defaults."""
    return _hasher().check_needs_rehash(password_hash)
