"""Close the open connections of given NATS users on every server of a deployment (system account API).

Why: with auth callout the server asks the platform only when a client connects, so revoking a device, node or
workload would leave its open connection working until it reconnected. Every server answers
`$SYS.REQ.SERVER.PING.CONNZ` (filtered by user); `$SYS.REQ.SERVER.<id>.KICK` closes one connection there. The
client reconnects, which goes through the callout again: a revoked user is refused, a rotated one gets its new
permissions. Needs a connection as a system-account user.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

PING_CONNZ = "$SYS.REQ.SERVER.PING.CONNZ"
GATHER_SECONDS = 0.5


async def _connections_of(nc: Any, username: str) -> list[tuple[str, int]]:
    """(server id, connection id) of `username`'s open connections, from every server that answers in time."""
    inbox = nc.new_inbox()
    found: list[tuple[str, int]] = []

    async def collect(msg: Any) -> None:
        try:
            doc = json.loads(msg.data)
            server = doc["server"]["id"]
            found.extend((server, int(c["cid"])) for c in (doc.get("data") or {}).get("connections") or [])
        except (ValueError, KeyError, TypeError):
            return

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(PING_CONNZ, json.dumps({"user": username, "limit": 1024}).encode(), reply=inbox)
        await nc.flush()
        await asyncio.sleep(GATHER_SECONDS)
    finally:
        await sub.unsubscribe()
    return found


async def kick_users(nc: Any, usernames: list[str]) -> int:
    """Kick every open connection of `usernames`; returns how many were closed."""
    kicked = 0
    for username in usernames:
        for server, cid in await _connections_of(nc, username):
            try:
                await nc.request(f"$SYS.REQ.SERVER.{server}.KICK", json.dumps({"cid": cid}).encode(), timeout=2)
                kicked += 1
            except Exception:  # noqa: BLE001, S112 - gone already, or that server is down: nothing to close
                continue
    return kicked
