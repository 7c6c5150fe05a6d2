"""NATS JWTs signed with nkeys (Ed25519): read a server's authorization request, write the response.

Why written here and not taken from `nats-jwt` on PyPI: auth callout needs three small documents (the request
the server signs, a user claim, the response claim) and one signature scheme; the `nkeys` library (the NATS
project's own) does the signing, and this module is the JSON around it (JWT v2 layout: header
`{"typ": "JWT", "alg": "ed25519-nkey"}`, base64url without padding, `jti` = base32 SHA-512/256 of the claims).
The server checks the signature, `sub`, `aud` and `iss` of what we answer; we check its signature on the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class JwtError(ValueError):
    """A JWT that is malformed or whose signature does not verify."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def account_keypair(secret: bytes) -> nkeys.KeyPair:
    """The platform's callout issuer (an account nkey), derived from the platform secret so every replica of
    the auth service signs with the same key and the server's `issuer` never changes with a restart."""
    raw = hmac.new(secret, b"aiot nats callout issuer", hashlib.sha256).digest()
    return nkeys.from_seed(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_ACCOUNT))


def public_key(keypair: nkeys.KeyPair) -> str:
    key: bytes = keypair.public_key
    return key.decode("ascii")


def _verify_key(public: str) -> nacl.signing.VerifyKey:
    """The Ed25519 key inside an nkey public key (prefix byte, 32 bytes, CRC-16)."""
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"issuer {public!r} is not an nkey public key") from exc
    if len(raw) != 35 or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise JwtError(f"issuer {public!r} is not an nkey public key (length or checksum)")
    return nacl.signing.VerifyKey(raw[1:33])


def decode(token: str) -> dict[str, Any]:
    """The claims of `token` after checking its signature against its own issuer (`iss`)."""
    try:
        header_b64, claims_b64, sig_b64 = token.split(".")
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(claims_b64))
        signature = _b64decode(sig_b64)
    except (ValueError, binascii.Error) as exc:
        raise JwtError(f"not a JWT: {exc}") from exc
    if header.get("alg") not in ("ed25519-nkey", "ed25519") or not isinstance(claims, dict):
        raise JwtError(f"unexpected JWT header {header}")
    try:
        _verify_key(str(claims.get("iss", ""))).verify(f"{header_b64}.{claims_b64}".encode("ascii"), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise JwtError("JWT signature does not verify") from exc
    return claims


def encode(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """Sign `claims` (iss, iat and jti are set here) with `signer`."""
    body = {**claims, "iss": public_key(signer), "iat": int(time.time()), "jti": ""}
    digest = hashlib.new("sha512_256", json.dumps(body, separators=(",", ":")).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode("ascii").rstrip("=")
    header_b64 = _b64encode(json.dumps(HEADER, separators=(",", ":")).encode())
    claims_b64 = _b64encode(json.dumps(body, separators=(",", ":")).encode())
    signature = signer.sign(f"{header_b64}.{claims_b64}".encode("ascii"))
    return f"{header_b64}.{claims_b64}.{_b64encode(signature)}"


def user_claims(
    user_nkey: str,
    name: str,
    account: str,
    permissions: dict[str, Any],
    connection_types: Sequence[str] | None,
    expires_at: int | None = None,
) -> dict[str, Any]:
    """A user JWT's claims: who (`sub` = the nkey the server made for this connection), where (`aud` = the
    account in server-configuration mode) and what it may do (`permissions` as in a config `users` entry)."""
    nats: dict[str, Any] = {
        "pub": permissions.get("publish", {}),
        "sub": permissions.get("subscribe", {}),
        "subs": -1,
        "data": -1,
        "payload": -1,
        "type": "user",
        "version": 2,
    }
    if permissions.get("allow_responses"):
        nats["resp"] = {"max": 1, "ttl": 0}
    if connection_types:
        nats["allowed_connection_types"] = list(connection_types)
    claims: dict[str, Any] = {"sub": user_nkey, "name": name, "aud": account, "nats": nats}
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


def response_claims(user_nkey: str, server_id: str, *, user_jwt: str = "", error: str = "") -> dict[str, Any]:
    """The authorization response: the user JWT, or an error the server logs and refuses the client with."""
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt:
        nats["jwt"] = user_jwt
    if error:
        nats["error"] = error
    return {"sub": user_nkey, "aud": server_id, "nats": nats}


def derived_secret(secret: str, purpose: str) -> str:
    """A password derived from `secret` for `purpose` (no second secret to store or lose)."""
    return base64.urlsafe_b64encode(hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()).decode()
