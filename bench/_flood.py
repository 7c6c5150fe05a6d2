"""Load generator for ingest at tens of thousands of readings a second (run as its own process by bench/ingest.py).

The platform's device simulators send each reading from its own timer, which is what real devices look like but
costs more CPU than ingest itself above a few thousand readings a second. This process instead sends the same
wire format (a JSON reading with its timestamp, on `aiot.dev.<id>.data`) for many devices from one loop: every
`TICK` seconds it sends what is due, round-robin over the devices, and flushes once. Each reading's `ts` is its
scheduled instant (unique per device, so ingest's de-duplication keeps every one), which is also what the
latency probe in bench/ingest.py subtracts.

    BENCH_NATS_URL=... BENCH_NATS_USER=... BENCH_NATS_PASSWORD=... python bench/_flood.py DEVICES_FILE RATE DURATION
prints one JSON line: {"sent": N, "elapsed_s": S, "behind_max_s": B} (B: how far it ever fell behind schedule).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats

TICK = 0.005  # seconds between bursts; each burst is one socket write


def _stamp(base: datetime, offset_s: float) -> str:
    return (base + timedelta(seconds=offset_s)).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def flood(url: str, user: str, password: str, devices: list[str], rate: float, duration: float) -> dict:
    """Send `rate` readings a second spread over `devices` for `duration` seconds (see the module docstring)."""
    nc = await nats.connect(url, user=user, password=password, pending_size=64 * 1024 * 1024)
    subjects = [f"aiot.dev.{d}.data" for d in devices]
    total = int(rate * duration)
    base_wall = datetime.now(UTC)
    base = time.perf_counter()
    sent, behind_max = 0, 0.0
    while sent < total:
        now = time.perf_counter() - base
        due = min(total, int(now * rate) + 1)
        behind_max = max(behind_max, (due - sent) / rate - TICK)
        while sent < due:
            scheduled = sent / rate
            value = 20.0 + (sent % 100) / 10
            body = f'{{"ts":"{_stamp(base_wall, scheduled)}","temperature":{value}}}'.encode()
            await nc.publish(subjects[sent % len(subjects)], body)
            sent += 1
        await nc.flush()
        await asyncio.sleep(TICK)
    elapsed = time.perf_counter() - base
    await nc.drain()
    return {"sent": sent, "elapsed_s": round(elapsed, 3), "behind_max_s": round(max(behind_max, 0.0), 3)}


def main() -> None:
    devices_file, rate, duration = sys.argv[1:4]
    devices = Path(devices_file).read_text().split()
    env = os.environ
    url, user, password = env["BENCH_NATS_URL"], env["BENCH_NATS_USER"], env["BENCH_NATS_PASSWORD"]
    print(json.dumps(asyncio.run(flood(url, user, password, devices, float(rate), float(duration)))), flush=True)


if __name__ == "__main__":
    main()
