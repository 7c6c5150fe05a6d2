"""A small pooled HTTP/1.1 client for the gateway's calls to model replicas.

Why not httpx, which the rest of the platform uses: on the gateway's hot path its pure-Python HTTP/1.1 machinery
(h11, httpcore's pool and locks) cost more than every other part of a forwarded call together (bench/gateway.py:
the gateway's p50 overhead over a direct call went from 1.05 ms to under 1 ms without it). The peers here are
our own replicas (uvicorn), so the client needs little: POST with a body, responses with `Content-Length` or
chunked, keep-alive, and errors sorted by what the caller may do about them:

- `Refused`: no connection could be made (nothing was sent): another replica may take the request;
- `Stale`: a reused idle connection failed before an answer began (the replica had just closed it): the same
  replica may take it again on a new connection (predict calls are idempotent);
- `Dropped`: a fresh connection failed mid-exchange: try another replica;
- `ReplicaTimeout`: no complete answer in time: not retried, the replica may still be working on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


class ReplicaHttpError(Exception):
    """Base of the failures below; `kind` is the name the gateway reports."""

    kind = "Error"


class Refused(ReplicaHttpError):
    kind = "ConnectError"


class Stale(ReplicaHttpError):
    kind = "ReadError"


class Dropped(ReplicaHttpError):
    kind = "RemoteProtocolError"


class ReplicaTimeout(ReplicaHttpError):
    kind = "ReadTimeout"


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class HttpPool:
    """Idle keep-alive connections per (host, port), forgotten after `keepalive_expiry` seconds idle."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        keepalive_expiry: float = 4.0,
        max_idle_per_host: int = 128,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, int, str]] = {}

    def _target(self, url: str) -> tuple[str, int, str]:
        hit = self._targets.get(url)
        if hit is None:
            parts = urlsplit(url)
            hit = (parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/")
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = hit
        return hit

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self.keepalive_expiry and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def _give(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle_per_host:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, fresh: bool = False) -> Reply:
        """POST `body`; `fresh` never reuses an idle connection."""
        host, port, path = self._target(url)
        key = (host, port)
        conn = None if fresh else self._take(key)
        reused = conn is not None
        if conn is None:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise Refused(f"{type(exc).__name__}: {exc}") from None
            conn = _Connection(reader, writer)
        head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        started = False
        try:
            conn.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await conn.writer.drain()
            async with asyncio.timeout(self.timeout):
                status_head = await conn.reader.readuntil(b"\r\n\r\n")
                started = True
                reply, keep = await self._read_reply(conn.reader, status_head)
        except TimeoutError:
            conn.close()
            raise ReplicaTimeout(f"no answer within {self.timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            error = Stale if reused and not started else Dropped
            raise error(f"{type(exc).__name__}: {exc}") from None
        if keep:
            self._give(key, conn)
        else:
            conn.close()
        return reply

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader, head: bytes) -> tuple[Reply, bool]:
        if len(head) > MAX_HEAD:
            raise ValueError("response head too large")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await reader.read()
            fields["connection"] = "close"
        keep = fields.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        return Reply(status, fields.get("content-type", "application/json"), body), keep

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
