"""MQTT client id = user name, enforced by the platform: who breaks it loses its credential for a while.

Why: MQTT gives a client id one session; a second connection with the same client id takes the session over and
the first is disconnected (MQTT-3.1.4-2). Device ids are visible to users, so any device credential could knock
another device offline, again and again, by connecting with its id. nats-server has no per-user client-id rule
(a user entry has only user, password, permissions, allowed_connection_types, proxy_required), and the only
hook that sees the client id before the session is taken over is auth callout, which would put every
connection through a platform-signed JWT (ed25519 nkeys; see docs/security.md).

So the platform watches: the NATS auth service lists the open MQTT connections (`EmbeddedNats.mqtt_connections`,
the loopback monitor's /connz) every `INTERVAL` seconds. A connection whose client id differs from its user is a
violation: that user is quarantined (left out of the server's user list, so the reload closes its connections
and refuses its logins) for `FIRST_QUARANTINE` seconds, doubling for each repeat up to `MAX_QUARANTINE`. The
device it impersonated is disconnected once (by the server, at the takeover), reconnects, and keeps its session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiot.bus.auth import PLATFORM_USER

log = logging.getLogger(__name__)

INTERVAL = 1.0
FIRST_QUARANTINE = 60.0
MAX_QUARANTINE = 3600.0


@dataclass
class MqttClientIdGuard:
    """Pure bookkeeping (times are monotonic seconds passed in), so it is tested without a server."""

    first: float = FIRST_QUARANTINE
    limit: float = MAX_QUARANTINE
    until: dict[str, float] = field(default_factory=dict)  # user -> end of its quarantine
    strikes: dict[str, int] = field(default_factory=dict)  # user -> violations so far (never forgotten)
    violations: int = 0

    def check(self, connections: list[tuple[str, str]], now: float) -> list[str]:
        """Quarantine the users of `connections` ((client id, user) pairs) whose client id is not their name;
        returns the users newly quarantined (the caller then removes them from the server at once)."""
        newly = []
        for client_id, user in connections:
            if not user or user == PLATFORM_USER or client_id == user or self.until.get(user, 0.0) > now:
                continue
            strikes = self.strikes[user] = self.strikes.get(user, 0) + 1
            seconds = min(self.first * 2 ** (strikes - 1), self.limit)
            self.until[user] = now + seconds
            self.violations += 1
            newly.append(user)
            log.warning("MQTT client id %r used by the credential of %r (client id must equal the user name): "
                        "%r is refused for %.0f s (violation %d)", client_id, user, user, seconds, strikes)
        return newly

    def quarantined(self, now: float) -> set[str]:
        """Users to leave out of the server's user list now (expired quarantines are dropped)."""
        for user in [u for u, end in self.until.items() if end <= now]:
            del self.until[user]
        return set(self.until)
