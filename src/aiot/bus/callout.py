"""Answer a nats-server's auth callout: who may connect, and with which permissions, decided from a directory.

With auth callout (nats-server 2.10+) the server keeps no user list: for every client that is not one of its
`auth_users` it sends a signed authorization request to `$SYS.REQ.USER.AUTH`, and the answer (a user JWT signed
by the configured issuer) decides the connection and carries its permissions. That works on any NATS
deployment - a cluster the platform does not run included - and a credential issued a second ago works at once
(no config file, no reload). Replicas share the work as a queue group.

`CalloutResponder` checks the server's signature on the request, looks the user name up in a directory (a
callable, fed from the database by the `nats-auth` service), verifies the password (bcrypt hashes in a worker
thread, with a cache of verified passwords so a reconnect storm does not redo bcrypt), enforces "MQTT client id =
user name" at connect (a device can no longer take over another device's MQTT session), and answers with the same
permissions a config file entry would carry (`auth.permissions_for`). A refusal carries its reason, which the
server logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import bcrypt
import nkeys

from aiot.bus import nkey_jwt
from aiot.bus.auth import NatsUser, permissions_for

log = logging.getLogger(__name__)

CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE_GROUP = "aiot-auth-callout"
MISS_REFRESH_SECONDS = 1.0
GLOBAL_ACCOUNT = "$G"

Lookup = Callable[[str], NatsUser | None]
_CLIENT_TYPES = {"nats": "STANDARD", "mqtt": "MQTT", "websocket": "WEBSOCKET"}
"""client_info.type in a callout request -> the connection type names users are restricted with."""


class CalloutResponder:
    """Subscribes to the callout subject on a platform connection and answers each request."""

    def __init__(
        self,
        nc: Any,
        issuer: nkeys.KeyPair,
        lookup: Lookup,
        *,
        account: str = GLOBAL_ACCOUNT,
        on_miss: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.issuer = issuer
        self.lookup = lookup
        self.account = account
        self.on_miss = on_miss
        """Refreshes the directory (from the database) when a user is not in it: a credential committed a moment
        ago, whose change notice has not been applied yet, is then found instead of refused."""
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self.allowed = 0
        self.refused = 0
        self._verified: dict[str, tuple[str, bytes]] = {}  # username -> (stored hash, sha256 of the password)
        self._sub: Any = None
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(CALLOUT_SUBJECT, queue=QUEUE_GROUP, cb=self._on_request)
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def forget(self, username: str) -> None:
        """Drop a cached password check (its credential changed or was revoked)."""
        self._verified.pop(username, None)

    async def _on_request(self, msg: Any) -> None:
        """One task per request: nats-py delivers a subscription's messages one after another, and a bcrypt check
        (in a worker thread) must not hold up the connections behind it."""
        task = asyncio.create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, msg: Any) -> None:
        try:
            request = nkey_jwt.decode(msg.data.decode("ascii"))
            claims = request["nats"]
            server_id = str(claims["server_id"]["id"])
            user_nkey = str(claims["user_nkey"])
        except (nkey_jwt.JwtError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("ignored a malformed auth callout request: %s", exc)
            return  # no answer: the server refuses the client when its auth timeout passes
        if request.get("iss") != server_id:
            log.warning("ignored an auth callout request not signed by the server it names")
            return
        user, reason = await self.decide(claims.get("connect_opts") or {}, claims.get("client_info") or {})
        if user is None:
            self.refused += 1
            answer = nkey_jwt.response_claims(user_nkey, server_id, error=reason)
        else:
            self.allowed += 1
            user_jwt = nkey_jwt.encode(
                nkey_jwt.user_claims(
                    user_nkey, user.username, self.account, permissions_for(user), user.connection_types
                ),
                self.issuer,
            )
            answer = nkey_jwt.response_claims(user_nkey, server_id, user_jwt=user_jwt)
        await msg.respond(nkey_jwt.encode(answer, self.issuer).encode("ascii"))

    async def decide(self, connect: dict[str, Any], client: dict[str, Any]) -> tuple[NatsUser | None, str]:
        """(the user, "") when the connection may proceed, else (None, why)."""
        username, password = str(connect.get("user") or ""), str(connect.get("pass") or "")
        user = self.lookup(username) if username else None
        if user is None and username and await self._refreshed():
            user = self.lookup(username)
        if user is None or not password or not await self._password_ok(user, password):
            return None, "unknown user or wrong password"
        kind = "LEAFNODE" if client.get("kind") == "Leafnode" else _CLIENT_TYPES.get(str(client.get("type")), "")
        if user.connection_types is not None and kind not in user.connection_types:
            # checked here: nats-server 2.15 does not apply a callout user's allowed_connection_types itself
            return None, f"{username!r} may not connect as {kind or 'this client type'}"
        if client.get("type") == "mqtt" and client.get("mqtt_id") != username:
            return None, f"MQTT client id must be the user name {username!r}"
        return user, ""

    async def _refreshed(self) -> bool:
        """Run `on_miss` (one at a time, at most once a second: unknown names cannot make it a DB load); True
        when a refresh ran or was joined."""
        if self.on_miss is None:
            return False
        if self._refresh is None or self._refresh.done():
            if time.monotonic() - self._refreshed_at < MISS_REFRESH_SECONDS:
                return False
            self._refreshed_at = time.monotonic()
            self._refresh = asyncio.ensure_future(self.on_miss())
        try:
            await asyncio.shield(self._refresh)
        except Exception as exc:  # noqa: BLE001 - the user stays unknown; the reason is logged
            log.warning("refreshing the NATS user directory failed: %s", exc)
            return False
        return True

    async def _password_ok(self, user: NatsUser, password: str) -> bool:
        if user.password is not None:
            return hmac.compare_digest(user.password.encode(), password.encode())
        stored = user.password_hash or ""
        digest = hashlib.sha256(password.encode()).digest()
        cached = self._verified.get(user.username)
        if cached is not None and cached[0] == stored and hmac.compare_digest(cached[1], digest):
            return True
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), stored.encode())
        if ok:
            self._verified[user.username] = (stored, digest)
        return ok


def server_config(
    issuer_public: str,
    platform_user: str,
    platform_password_hash: str,
    system_user: str | None = None,
    system_password_hash: str | None = None,
) -> str:
    """The part of a nats-server configuration that hands authentication to the platform (every server of a
    cluster gets the same). The platform's own user is the one `auth_users` entry: it connects without the
    callout (it is the callout's answerer) and keeps every permission."""
    users = [{"user": platform_user, "password": platform_password_hash}]
    auth_users = [platform_user] + ([system_user] if system_user and system_password_hash else [])
    lines = [
        "# AIoT platform: auth callout (generated by `aiot nats callout-config`; hashes, not passwords)",
        "authorization {",
        "  timeout: 10",
        f"  users = {json.dumps(users)}",
        "  auth_callout {",
        f"    issuer: {json.dumps(issuer_public)}",
        f"    auth_users: {json.dumps(auth_users)}",
        "  }",
        "}",
    ]
    if system_user and system_password_hash:
        system = [{"user": system_user, "password": system_password_hash}]
        lines += [
            "# lets the platform close a revoked credential's open connections",
            f"accounts {{ SYS {{ users = {json.dumps(system)} }} }}",
            "system_account: SYS",
        ]
    return "\n".join(lines) + "\n"
