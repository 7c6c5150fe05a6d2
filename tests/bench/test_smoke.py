"""Smoke runs of every benchmark in `bench/` (`--smoke`), so none of them rots.

Each script runs as a subprocess, exactly as a person runs it; the test checks the JSON summary has the keys
the README's table is built from, and that the figures are sane (work was done, nothing failed outright).
Targets are not asserted: a benchmark's target is data, and a smoke run is far too short to judge it.

The scripts start together (in one module fixture) and run concurrently: each spends most of its time
waiting on processes it started, and run one after another they would take about two minutes on a 2-core
machine; together they take well under 90 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = [
    "ingest",
    "serving",
    "telemetry",
    "deployment",
    "recovery",
    "scheduler",
    "scale",
    "gateway",
    "placement",
    "keepalive",
    "heartbeats",
]  # docker_runtime has its own file (test_smoke_docker.py): its image builds would crowd this group's 240 s
TIMEOUT = 240

pytestmark = pytest.mark.slow


class Runs:
    """All smoke runs, started at once; `result(name)` waits for one and parses its JSON."""

    def __init__(self, tmp: Path) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.started = time.monotonic()
        self.done: dict[str, dict[str, Any]] = {}
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in BENCHES:
            out = (tmp / f"{name}.out").open("wb")
            err = (tmp / f"{name}.err").open("wb")
            self.procs[name] = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        self.tmp = tmp

    def result(self, name: str) -> dict[str, Any]:
        if name not in self.done:
            proc = self.procs[name]
            try:
                proc.wait(max(1.0, TIMEOUT - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(30)
                pytest.fail(f"bench/{name}.py --smoke took over {TIMEOUT} s")
            out = (self.tmp / f"{name}.out").read_text()
            err = (self.tmp / f"{name}.err").read_text()[-3000:]
            assert out.strip(), f"bench/{name}.py --smoke printed nothing (exit {proc.returncode}):\n{err}"
            try:
                doc = json.loads(out)
            except ValueError:
                pytest.fail(f"bench/{name}.py --smoke printed no JSON (exit {proc.returncode}):\n{out[-2000:]}\n{err}")
            # ingest exits 1 when a reading was lost; the others exit 0 whatever their targets say
            assert proc.returncode == 0, f"bench/{name}.py exited {proc.returncode}:\n{err}"
            self.done[name] = doc
        return self.done[name]

    def close(self) -> None:
        for proc in self.procs.values():  # SIGTERM first: the scripts then stop what they started
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    r = Runs(tmp_path_factory.mktemp("bench-smoke"))
    try:
        yield r
    finally:
        r.close()


def _machine(doc: dict[str, Any]) -> None:
    assert doc["machine"]["cpus"] >= 1
    assert "python" in doc["machine"]


def _common(doc: dict[str, Any], name: str) -> None:
    assert doc["benchmark"] == name
    _machine(doc)
    assert doc["smoke"] is True
    assert isinstance(doc["targets_met"], dict) and doc["targets_met"]
    assert "ok" in doc


def test_ingest(runs: Runs) -> None:
    doc = runs.result("ingest")
    assert doc["benchmark"] == "ingest"
    _machine(doc)
    run = doc["runs"][0]
    assert run["sent"] > 0 and run["lost"] == 0
    assert run["peer_received"] == run["sent"]
    assert run["ingest_cpu_s"] > 0 and run["cpu_ratio_ingest_over_peer"] > 0
    flood = doc["flood"]  # the load generator's path: every reading stored, latency sampled
    assert flood["sent"] == 2000 and flood["lost"] == 0 and flood["peer_received"] == 2000
    assert flood["latency_ms"]["samples"] >= 100 and flood["latency_ms"]["p50"] > 0


def test_serving(runs: Runs) -> None:
    doc = runs.result("serving")
    _common(doc, "serving")
    comfort = doc["models"]["comfort"]
    assert comfort["in_process"]["calls"] > 0 and comfort["in_process"]["p50_ms"] > 0
    ours = comfort["ours"]
    assert "error" not in ours, ours
    assert [r["concurrency"] for r in ours["runs"]] == doc["settings"]["concurrency"]
    for run in ours["runs"]:
        assert run["requests"] > 0 and run["errors"] == 0
        assert 0 < run["p50_ms"] <= run["p99_ms"]
    comparison = comfort["comparison"]
    assert comparison["p50_overhead_over_in_process_c1_ms"] is not None
    assert len(comparison["rows"]) == len(ours["runs"])
    assert set(doc["targets_met"]) == {"throughput_at_least_bentoml", "comfort_p50_overhead_c1_under_2ms"}


def test_telemetry(runs: Runs) -> None:
    doc = runs.result("telemetry")
    _common(doc, "telemetry")
    for side in ("ours", "peer_raw_nats"):
        run = doc[side]["runs"][0]
        assert run["sent"] > 0, side
        assert run["acknowledged"] >= 0.9 * run["sent"], (side, run)
        assert 0 < run["p50_ms"] <= run["p99_ms"], (side, run)
    row = doc["comparison"][0]
    assert row["p50_ratio"] is not None and row["p50_ratio"] > 0
    assert "highest_rate_no_loss" in doc


def test_deployment(runs: Runs) -> None:
    doc = runs.result("deployment")
    _common(doc, "deployment")
    app = doc["runs"][0]["apps"]["smart-home"]
    assert 0 < app["warm_median_s"] <= app["cold_s"] * 2
    assert app["envs_in_cache"] >= 1
    assert set(doc["targets_met"]) == {"warm_under_2s", "cold_under_20s"}


def test_recovery(runs: Runs) -> None:
    doc = runs.result("recovery")
    _common(doc, "recovery")
    crash = doc["crash"][0]
    assert crash["port"]["failed"] == 0 and crash["port"]["median_s"] > 0
    assert doc["hang"]["process"]["failed"] == 0
    assert doc["hang"]["detected"]["failed"] == 0 and doc["hang"]["detected"]["median_s"] > 0
    assert doc["node_loss"]["rescheduled"]["failed"] == 0
    assert doc["supervisord"]["port"]["failed"] == 0 and doc["supervisord"]["port"]["median_s"] > 0
    assert doc["ratios"]["crash_port_first_ours_over_supervisord"] is not None


def test_scheduler(runs: Runs) -> None:
    doc = runs.result("scheduler")
    _common(doc, "scheduler")
    run = doc["runs"][0]
    assert run["schedules"] > 0 and run["occurrences_due_in_day"] == run["schedules"]
    assert run["due_but_not_started"] == 0
    assert run["firing_error_s"]["p99"] is not None and run["firing_error_s"]["p50"] >= 0
    assert doc["idle"]["cpu_s"] >= 0 and doc["idle"]["peak_rss_mb"] > 0


def test_scale(runs: Runs) -> None:
    doc = runs.result("scale")
    _common(doc, "scale")
    run = doc["runs"][0]
    assert run["sent"] > 0 and run["lost_in_ingest"] == 0
    assert run["acknowledged_by_displays"] >= 0.9 * run["sent"]
    assert run["e2e_latency_ms"]["p50"] > 0
    assert {"control_plane", "nats_server", "node_agent", "app_workloads"} <= set(run["processes"])


def test_gateway(runs: Runs) -> None:
    doc = runs.result("gateway")
    point = doc["points"]["1"]
    for side in ("direct", "gateway"):
        assert point[side]["requests"] > 0 and point[side]["errors"] == 0, (side, point[side])
    assert point["p50_overhead_ms"] is not None


def test_placement(runs: Runs) -> None:
    doc = runs.result("placement")
    (point,) = doc["points"]
    assert point["nodes"] == 100 and point["placed"] == point["workloads"] == 200
    assert point["placements_per_s"] > 0 and 0 < point["decision_p50_ms"] <= point["decision_p99_ms"]
    assert doc["peer"]["nomad_c1m_placements_per_s"] == 3750


def test_keepalive(runs: Runs) -> None:
    doc = runs.result("keepalive")
    sdk, naive = doc["callers"]["sdk"], doc["callers"]["naive"]
    assert sdk["calls"] > 20 and naive["calls"] > 20
    assert sdk["failed"] == 0, sdk["failure_samples"]  # the SDK retries a connection the replica just closed


def test_heartbeats(runs: Runs) -> None:
    doc = runs.result("heartbeats")
    (point,) = doc["points"]
    ours, peer = point["ours"], point["peer_bare_http"]
    assert point["nodes"] == 50 and ours["reports"] >= 50 and peer["reports"] >= 50
    assert ours["failed"] == {} and ours["nodes_not_ready_at_end"] == 0, ours
    assert ours["cpu_s"] > 0 and ours["latency_ms"]["p50"] is not None
