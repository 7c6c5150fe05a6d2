"""Send one request to the least busy replica of a model, over pooled connections, and survive replica churn.

Why its own module: the model gateway (`model_gateway.py`) is a hot path whose own cost must stay well under a
millisecond, so it keeps one pooled HTTP client per process (no connection set-up per call), picks the replica
with the fewest requests in flight from this process (least outstanding requests, as Envoy and the KServe
router do; round-robin among ties), and retries elsewhere only where that is safe: a replica that refuses the
connection or closes a reused keep-alive connection under us (the uvicorn keep-alive race the SDK also guards
against, `platform_sdk.models`) - predict calls are pure functions of their inputs. A timeout is not retried:
the replica may still be working on it.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

from aiot.api.replica_http import HttpPool, Refused, ReplicaHttpError, Reply, Stale

KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle pooled connection is kept: far below the replica's keep-alive timeout (serving: 75 s)."""
BAD_REPLICA_SECONDS = 2.0
"""How long a replica that refused a connection is tried last."""


@dataclass(frozen=True)
class Answer:
    """A replica's answer, passed through unchanged."""

    status: int
    content: bytes
    content_type: str
    replica: str


class NoReplicaAnswered(Exception):
    """Every replica refused or dropped the request; `failures` says how, one entry per replica."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures


class ReplicaPool:
    """Per-process balancer: in-flight counts per replica URL, pooled connections, retries on refusal."""

    def __init__(self, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._http = HttpPool(timeout=timeout, keepalive_expiry=KEEPALIVE_EXPIRY)
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._bad_until: dict[str, float] = {}
        self._tie: itertools.count[int] = itertools.count()

    def order(self, replicas: list[str]) -> list[str]:
        """Replicas to try, best first: healthy before recently refusing, then fewest in flight, ties rotated."""
        now = time.monotonic()
        shift = next(self._tie)
        ranked = sorted(
            range(len(replicas)),
            key=lambda i: (
                self._bad_until.get(replicas[i], 0.0) > now,
                self._in_flight[replicas[i]],
                (i - shift) % len(replicas),
            ),
        )
        return [replicas[i] for i in ranked]

    async def send(self, replicas: list[str], path: str, content: bytes, headers: dict[str, str]) -> Answer:
        """POST `content` to `path` on one replica; NoReplicaAnswered when none took it, ReplicaTimeout (not
        retried) when the chosen one did not answer in time."""
        failures: list[str] = []
        for url in self.order(replicas):
            self._in_flight[url] += 1
            try:
                reply = await self._post(url.rstrip("/") + path, content, headers)
            except (Refused, Stale) as exc:  # nothing reached the model, or the retry failed too
                self._bad_until[url] = time.monotonic() + BAD_REPLICA_SECONDS
                failures.append(f"{url}: {exc.kind}")
                continue
            except ReplicaHttpError as exc:
                if exc.kind == "ReadTimeout":
                    raise
                self._bad_until[url] = time.monotonic() + BAD_REPLICA_SECONDS
                failures.append(f"{url}: {exc.kind}")
                continue
            finally:
                self._in_flight[url] -= 1
            if reply.status == 503:  # loading or shutting down: another replica may take it
                failures.append(f"{url}: not ready (503)")
                continue
            return Answer(reply.status, reply.body, reply.content_type, url)
        raise NoReplicaAnswered(failures)

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        try:
            return await self._http.post(url, content, headers)
        except Stale:  # a pooled connection the replica had just closed: once more, on a new connection
            return await self._http.post(url, content, headers, fresh=True)

    async def aclose(self) -> None:
        await self._http.aclose()
