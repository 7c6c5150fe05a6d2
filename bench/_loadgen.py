"""HTTP/1.1 keep-alive load generator: N connections, each sending the same request back to back.

Run as its own process (one per measurement) so it never shares a GIL with the server it measures:

    python bench/_loadgen.py URL BODY_FILE CONCURRENCY SECONDS [WARMUP_S]

Extra request headers (e.g. the model's `Authorization`) come as a JSON object in the environment variable
LOADGEN_HEADERS, never on the command line (a token there is readable by every local user in `ps`).
Prints one JSON line: requests, errors, rps, p50/p90/p99/max latency in ms. Written on raw asyncio streams
(uvloop when importable) rather than httpx because a Python HTTP client's own cost caps what it can measure;
this one does one write and two reads per request, so both servers are measured with the same small cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def request_bytes(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def run(
    url: str, body: bytes, concurrency: int, seconds: float, warmup: float, headers: dict[str, str] | None = None
) -> dict:
    host, port, request = request_bytes(url, body, headers)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                writer.write(request)
                status = await _read_response(reader)
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    if status != 200:
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return round(1000 * latencies[min(n - 1, int(p * n))], 3) if n else 0.0

    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": n,
        "errors": errors,
        "rps": round(n / seconds, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * latencies[-1], 3) if n else 0.0,
    }


def main() -> None:
    url, body_file, concurrency, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    warmup = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    headers = json.loads(os.environ.get("LOADGEN_HEADERS") or "{}")
    print(json.dumps(asyncio.run(run(url, Path(body_file).read_bytes(), concurrency, seconds, warmup, headers))))


if __name__ == "__main__":
    main()
