"""Close the open connections of given NATS users on every server of a deployment (system account API).

Why: with auth callout the server asks the platform only when a client connects, so revoking a device, node or
workload would leave its open connection working until it reconnected. Every server answers
`$SYS.REQ.SERVER.PING.CONNZ` (filtered by user); `$SYS.REQ.SERVER.<id>.KICK` closes one connection there. The
client reconnects, which goes through the callout again: a revoked user is refused, a rotated one gets its new
permissions. Needs a connection as a system-account user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

PING_CONNZ = "$SYS.REQ.SERVER.PING.CONNZ"
GATHER_SECONDS = 0.5


async def _connections_of(nc: Any, usernames: set[str], servers: list[str] | None) -> list[tuple[str, int]]:
    """(server id, connection id) of the open connections of `usernames`: asked of `servers` directly, or of
    every server that answers within GATHER_SECONDS."""
    query = json.dumps({"auth": True, "limit": 100_000}).encode()
    found: list[tuple[str, int]] = []

    def take(data: bytes) -> None:
        try:
            doc = json.loads(data)
            server = doc["server"]["id"]
            found.extend(
                (server, int(c["cid"]))
                for c in (doc.get("data") or {}).get("connections") or []
                if c.get("authorized_user") in usernames
            )
        except (ValueError, KeyError, TypeError):
            return

    if servers:
        for server in servers:
            with contextlib.suppress(Exception):  # that server is down: nothing of it to close
                take((await nc.request(f"$SYS.REQ.SERVER.{server}.CONNZ", query, timeout=2)).data)
        return found
    inbox = nc.new_inbox()

    async def collect(msg: Any) -> None:
        take(msg.data)

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(PING_CONNZ, query, reply=inbox)
        await nc.flush()
        await asyncio.sleep(GATHER_SECONDS)
    finally:
        await sub.unsubscribe()
    return found


async def kick_users(nc: Any, usernames: list[str], servers: list[str] | None = None) -> int:
    """Kick every open connection of `usernames` (on `servers`, or on every server); returns how many."""
    kicked = 0
    for server, cid in await _connections_of(nc, set(usernames), servers):
        try:
            await nc.request(f"$SYS.REQ.SERVER.{server}.KICK", json.dumps({"cid": cid}).encode(), timeout=2)
            kicked += 1
        except Exception:  # noqa: BLE001, S112 - gone already, or that server is down: nothing to close
            continue
    return kicked
