"""Load: 50 concurrent API clients (httpx async, each its own connection pool and a real token) for 1 minute
(AIOT_LOAD_SECONDS to change it: the published figures in docs/reliability.md are 120 s runs) against a real,
populated `aiot up`, while the scale benchmark's smaller fleet
(100 thermometers at 1 Hz, bench/scale.py) publishes readings, each device over its own NATS connection and
credentials. Every reading sent must reach the history stream. The mix is what people do: browse models, apps,
devices, locations; end users read their instances and schedules and preview schedules; admins read status and
the users list; some read the log stream and a device's history (NATS-backed). Error rate must be 0 (every
answer 200); p50/p95/p99 are printed.

Latency is reported, not asserted (the machine is shared with other test runs); only a generous ceiling on p99
guards against a server that stalls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiot.devices.simulators.links import Connection
from aiot.devices.simulators.runner import SimDevice, run_simulators

from .conftest import ROLE_USER, Deployment, start_populated, wait_for

pytestmark = pytest.mark.slow
CLIENTS = 50
SECONDS = float(os.environ.get("AIOT_LOAD_SECONDS", "30"))  # 30 s in the suite (its CPU slows every neighbour)
DEVICES = 100  # bench/scale.py's smaller size: thermometers at 1 Hz


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from start_populated(tmp_path_factory.mktemp("load"), devices=DEVICES)


class Fleet:
    """The thermometers, simulated in a thread of their own (own event loop), so the API clients' loop does not
    delay them and their publishing does not inflate the measured API latency."""

    def __init__(self, dep: Deployment) -> None:
        state = json.loads((dep.data_dir / "nats" / "state.json").read_text())
        url = f"nats://127.0.0.1:{state['client_port']}"
        self.sims = [
            SimDevice(
                device_id=made["id"],
                model="temperature",
                options={"rate": 1.0},
                connection=Connection(
                    nats_url=url, username=made["connect"]["username"], password=made["connect"]["password"]
                ),
            )
            for name, made in dep.pop.devices.items()
            if name.startswith("temperature-")
        ]
        self.sent = 0
        self.errors = 0
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        def run() -> None:
            runner = asyncio.run(run_simulators(self.sims, duration=seconds))
            self.sent, self.errors = sum(runner.sent.values()), runner.errors

        self._thread = threading.Thread(target=run, name="fleet", daemon=True)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=SECONDS + 120)


def _stored_readings(dep: Deployment, fleet: Fleet) -> int:
    return sum(len(dep.api.get(f"/devices/{sim.device_id}/history?limit=1000")) for sim in fleet.sims)


def _mix(dep: Deployment) -> dict[str, list[tuple[str, str, dict | None]]]:
    """Per role: (method, path, json body) requests, cycled by each client of that role."""
    ids, device = dep.pop.ids, dep.pop.devices["temperature-0"]["id"]
    preview = {
        "spec": {
            "timezone": "Asia/Kolkata",
            "start_date": "2030-01-01",
            "end_date": "2030-01-31",
            "times": ["09:00", "15:00"],
            "duration_minutes": 30,
        },
        "count": 5,
    }
    browse = [
        ("GET", "/models", None),
        ("GET", "/apps", None),
        ("GET", "/device-types", None),
        ("GET", "/locations", None),
        ("GET", "/auth/me", None),
    ]
    return {
        "end_user": browse
        + [
            ("GET", "/instances", None),
            ("GET", f"/instances/{ids['instance']}", None),
            ("GET", "/schedules", None),
            ("POST", "/schedules/preview", preview),
            ("GET", f"/devices/{device}/latest", None),
        ],
        "app_developer": browse
        + [
            ("GET", "/apps/smart-classroom", None),
            ("GET", "/devices", None),
            ("GET", f"/devices/{device}/history?limit=50", None),
        ],
        "ai_developer": browse
        + [("GET", "/models/comfort", None), ("GET", "/deployments", None), ("GET", "/logs?limit=50", None)],
        "admin": browse
        + [("GET", "/status", None), ("GET", "/users", None), ("GET", "/nodes", None), ("GET", "/logs?limit=50", None)],
    }


async def _client(
    url: str,
    token: str,
    requests: list[tuple[str, str, dict | None]],
    until: float,
    latencies: list[float],
    failures: Counter[str],
    offset: int,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", headers=headers, timeout=30) as client:
        for method, path, body in itertools.islice(itertools.cycle(requests), offset, None):
            if time.monotonic() >= until:
                return
            started = time.monotonic()
            try:
                response = await client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                failures[f"{method} {path}: {type(exc).__name__}"] += 1
                continue
            latencies.append(time.monotonic() - started)
            if response.status_code != 200:
                failures[f"{method} {path}: {response.status_code} {response.text[:120]}"] += 1


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def test_fifty_concurrent_clients_no_errors(dep: Deployment, tmp_path: Path) -> None:
    mix = _mix(dep)
    roles = list(mix)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    fleet = Fleet(dep)
    assert len(fleet.sims) == DEVICES
    stored_before = _stored_readings(dep, fleet)

    async def run() -> float:
        started = time.monotonic()
        until = started + SECONDS
        await asyncio.gather(
            *(
                _client(
                    dep.plane.url,
                    dep.api.tokens[ROLE_USER[roles[i % 4]]],
                    mix[roles[i % 4]],
                    until,
                    latencies,
                    failures,
                    offset=i,
                )
                for i in range(CLIENTS)
            )
        )
        return time.monotonic() - started

    fleet.start(SECONDS)
    elapsed = asyncio.run(run())
    fleet.join()
    # A backlog is late, not lost: wait while the stored count still moves.
    stored = wait_for(
        "every reading in the history",
        lambda: (n := _stored_readings(dep, fleet) - stored_before) >= fleet.sent and n,
        60,
        every=2.0,
    )
    summary = {
        "clients": CLIENTS,
        "seconds": round(elapsed, 1),
        "requests": len(latencies) + sum(failures.values()),
        "errors": sum(failures.values()),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_pct(latencies, 50) * 1000, 1),
        "p95_ms": round(_pct(latencies, 95) * 1000, 1),
        "p99_ms": round(_pct(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "devices": DEVICES,
        "readings_sent": fleet.sent,
        "readings_stored": stored,
        "publish_errors": fleet.errors,
    }
    print("\nload: " + json.dumps(summary))
    (tmp_path / "load-summary.json").write_text(json.dumps(summary))
    assert not failures, failures.most_common(10)
    assert fleet.errors == 0 and fleet.sent >= DEVICES * SECONDS * 0.8, summary
    assert len(latencies) >= CLIENTS * 5
    # A ceiling against a stalled server, not a performance target: in the suite this shares 2 cores with four other
    # test files (p99 14 s seen there; 3-7 s alone, docs/reliability.md); a stall shows as errors above.
    assert summary["p99_ms"] < 30_000
    assert dep.api.call("GET", "/status").status_code == 200
