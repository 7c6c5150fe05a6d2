"""Password hashes are at full cost unless AIOT_INSECURE_FAST_HASHES=1 (which only the test suite sets)."""

from __future__ import annotations

import bcrypt
import pytest

from aiot.accounts import passwords
from aiot.bus import auth


@pytest.fixture
def fresh_hasher():
    passwords._hasher.cache_clear()
    yield
    passwords._hasher.cache_clear()


def test_full_cost_without_the_flag(monkeypatch: pytest.MonkeyPatch, fresh_hasher: None) -> None:
    monkeypatch.delenv(auth.INSECURE_FAST_HASHES, raising=False)
    person = passwords.hash_password("correct horse battery")
    assert "$argon2id$" in person and "m=65536,t=3,p=4" in person  # argon2-cffi's default profile (RFC 9106)
    assert passwords.verify_password(person, "correct horse battery")
    assert auth.hash_password("device-secret").startswith("$2b$10$")  # bcrypt cost 10


def test_cheapest_cost_with_the_flag_and_hashes_verify_across(
    monkeypatch: pytest.MonkeyPatch, fresh_hasher: None
) -> None:
    monkeypatch.delenv(auth.INSECURE_FAST_HASHES, raising=False)
    full = passwords.hash_password("correct horse battery")
    passwords._hasher.cache_clear()
    monkeypatch.setenv(auth.INSECURE_FAST_HASHES, "1")
    cheap = passwords.hash_password("correct horse battery")
    assert "m=8,t=1,p=1" in cheap
    assert passwords.verify_password(full, "correct horse battery")  # the cost is read from the hash itself
    assert passwords.verify_password(cheap, "correct horse battery")
    device = auth.hash_password("device-secret")
    assert device.startswith("$2b$04$") and bcrypt.checkpw(b"device-secret", device.encode())


def test_aiot_up_warns_when_the_flag_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from aiot.cli.main import app

    monkeypatch.setenv(auth.INSECURE_FAST_HASHES, "1")
    result = CliRunner().invoke(app, ["service", "run", "no-such-service"])
    assert "AIOT_INSECURE_FAST_HASHES=1" in result.output
