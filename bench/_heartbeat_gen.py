"""Paced node reports: N simulated nodes, each POSTing its report every INTERVAL s with its own token.

Run as its own process (its own GIL, so the measured server never shares one with it):

    python bench/_heartbeat_gen.py URL TOKENS_FILE INTERVAL SECONDS CONNECTIONS

TOKENS_FILE holds one node token per line (a file, never the command line). Requests go over CONNECTIONS
keep-alive connections on raw asyncio streams (`_loadgen`'s request and response code: a Python HTTP client's
own cost would cap the rate before the server does). Each node's first report is at a random point of the first
interval; a report is due INTERVAL s after the previous one was due, and is sent as soon as a connection is free.
Prints one JSON line: reports, failures by kind, reports/s, and the latency from when a report was due to its
answer (so a server that falls behind shows it as latency, not as a lower rate alone).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from _loadgen import _read_response


def _request(url: str, token: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run(url: str, tokens: list[str], interval: float, seconds: float, connections: int) -> dict:
    parts = urlsplit(url)
    rng = random.Random(7)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(parts.hostname, parts.port))

    def fail(kind: str) -> None:
        failures[kind] = failures.get(kind, 0) + 1

    async def node(token: str) -> None:
        due = start + rng.uniform(0, interval)
        while due < end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            body = json.dumps(
                {"load": {"cpu_percent": round(rng.uniform(0, 80), 1), "memory_percent": round(rng.uniform(5, 60), 1)}}
            ).encode()
            reader, writer = await pool.get()
            try:
                writer.write(_request(url, token, body))
                status = await asyncio.wait_for(_read_response(reader), timeout=60)
                if status == 200:
                    latencies.append(loop.time() - due)
                else:
                    fail(f"http {status}")
                pool.put_nowait((reader, writer))
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                fail(type(exc).__name__)
                writer.close()
                pool.put_nowait(await asyncio.open_connection(parts.hostname, parts.port))
            due += interval

    await asyncio.gather(*(node(t) for t in tokens))
    elapsed = loop.time() - start
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float | None:
        return round(1000 * latencies[min(n - 1, int(p * n))], 3) if n else None

    sent = n + sum(failures.values())
    return {
        "reports": sent,
        "failed": failures,
        "reports_per_s": round(sent / elapsed, 1),
        "expected_per_s": round(len(tokens) / interval, 1),
        "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
    }


def main() -> None:
    url, tokens_file = sys.argv[1], Path(sys.argv[2])
    interval, seconds, connections = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tokens = [line for line in tokens_file.read_text().splitlines() if line]
    started = time.process_time()
    result = asyncio.run(run(url, tokens, interval, seconds, connections))
    result["generator_cpu_s"] = round(time.process_time() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
