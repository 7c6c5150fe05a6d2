"""Smoke run of bench/docker_runtime.py (`--smoke`), so it never rots.

Apart from the other smoke runs (test_smoke.py starts those together): it builds container images, and inside
that group's time budget a loaded machine made it the last to finish, past the budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiot.agent.docker_runtime import DockerUnavailable, docker_client

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300

pytestmark = pytest.mark.slow


def test_docker_runtime_smoke(tmp_path: Path) -> None:
    try:
        docker_client()
    except DockerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "docker_runtime.py"), "--smoke"],
            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"bench/docker_runtime.py --smoke took over {TIMEOUT} s")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["benchmark"] == "docker_runtime" and doc["smoke"] is True and doc["machine"]["cpus"] >= 1
    assert doc["targets_met"] == {"no_serving_errors": True} and doc["ok"] is True
    for runtime in ("process", "docker"):
        side = doc["result"][runtime]
        assert side["node_labels"]["runtime"] == runtime
        assert side["app_warm_median_s"] > 0 and side["app_cold_s"] > 0 and side["model_cold_deploy_s"] > 0
        assert side["serving_c8"]["rps_median"] > 0 and side["serving_c8"]["errors"] == 0
    assert doc["result"]["docker"]["images_built"]  # the environments became images
