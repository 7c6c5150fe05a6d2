"""The front door of a web app's port: only connections that open with the gateway's token get through.

Why a proxy in front of the app and not a check inside it: a web app is any HTTP server the app's own code
starts on `PORT` (http.server, uvicorn, Flask...), so the SDK cannot put a check into its request handling.
`app_runner` therefore binds the port the platform advertises (`serve.host:serve.port`) itself and gives the
app a private loopback port in `PORT`/`HOST`. Each new connection's first request head must carry
`X-AIOT-Gateway-Token: <serve.token>` (compared in constant time); the header is removed and the connection
is spliced to the app byte for byte (keep-alive, streaming and upgrades work unchanged). A connection without
it gets a 403 and is closed, whatever path it asks for. Later requests on an admitted connection are not
checked again: only the gateway, which checks its user on every request, ever opens one.

Limit: the app's private port is on the node's loopback, so a process on the same node (not across the
network) can still reach it directly; a per-workload network namespace would close that (see
docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from platform_sdk.endpoint_auth import GATEWAY_TOKEN_HEADER, token_matches

HEAD_LIMIT = 65_536
"""Largest request head accepted (bytes)."""
HEAD_TIMEOUT = 30.0
"""Seconds a new connection has to send its first request head."""
_HEADER = GATEWAY_TOKEN_HEADER.encode("latin-1")


def _plain(status: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


_FORBIDDEN = _plain("403 Forbidden", "this app is reached through the platform's gateway only\n")
_BAD_GATEWAY = _plain("502 Bad Gateway", "the app is not listening on its port yet\n")


def strip_token(head: bytes) -> tuple[bytes | None, bytes]:
    """(the token header's value or None, the head without it). Every copy of the header is removed."""
    lines = head.split(b"\r\n")
    given, kept = None, [lines[0]]
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == _HEADER:
            given = value.strip()
            continue
        kept.append(line)
    return given, b"\r\n".join(kept)


def private_port() -> int:
    """A free loopback port for the app itself (the advertised one belongs to the guard)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayGuard:
    """Listens on `host:port`, admits connections that present `token`, splices them to `127.0.0.1:upstream`."""

    def __init__(self, host: str, port: int, token: str, upstream: int) -> None:
        self.host, self.port, self.upstream = host, port, upstream
        self.expected = token.encode("latin-1")
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # now, in the caller: a taken port fails here, not in a thread
        self.sock.listen(128)
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Serve on a daemon thread with its own event loop (the app owns the main thread)."""
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            server = self.loop.run_until_complete(asyncio.start_server(self._handle, sock=self.sock, limit=HEAD_LIMIT))
            ready.set()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(server.serve_forever())

        threading.Thread(target=run, name="aiot-gateway-guard", daemon=True).start()
        ready.wait(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        given, head = strip_token(head)
        if not token_matches(given, self.expected):
            await _answer(writer, _FORBIDDEN)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            await _answer(writer, _BAD_GATEWAY)
            return
        up_writer.write(head)
        try:
            await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
        finally:
            up_writer.close()
            writer.close()


async def _answer(writer: asyncio.StreamWriter, response: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(response)
        await writer.drain()
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close (the other direction may still be talking); on a reset, close both
    sides so the other direction does not wait for an idle peer."""
    try:
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
        other.close()
