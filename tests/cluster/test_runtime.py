"""Issue acceptance (runtime): placement spread, crash and hang restarts, model replicas through the SDK,
agent loss and rescheduling, with real agents, real processes and a real sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from aiot.deployer.endpoint_tokens import model_token
from tests.support.processes import serving_pid
from tests.support.tokens import platform_secret_of

from .conftest import Cluster, agent_pids

pytestmark = pytest.mark.slow


def test_local_agents_joined_without_a_join_token_on_their_command_line(cluster: Cluster) -> None:
    """`aiot up --nodes N` hands each agent its own single-use token in its environment: `ps` shows none."""
    pids = agent_pids(cluster.data_dir)
    assert len(pids) == 3
    for pid in pids.values():
        assert "aiotjoin" not in " ".join(psutil.Process(pid).cmdline())
    tokens = {psutil.Process(pid).environ().get("AIOT_JOIN_TOKEN") for pid in pids.values()}
    assert len(tokens) == 3 and all(t and t.startswith("aiotjoin.") for t in tokens)  # one each, single-use


def test_ten_replicas_spread_by_the_documented_score(cluster: Cluster) -> None:
    cluster.push_model("comfort")
    cluster.post("/models/comfort/deploy", json={"replicas": 10})
    replicas = cluster.running_replicas("comfort", 10)
    spread = Counter(r["node_id"] for r in replicas)
    assert sorted(spread.values()) == [3, 3, 4], spread
    for replica in replicas:  # each decision picked the least score among the eligible nodes, recorded
        detail = cluster.get(f"/workloads/{replica['id']}")
        decision = detail["placements"][-1]
        eligible = [s["score"] for s in decision["scores"].values() if s["score"] is not None]
        assert decision["score"] == min(eligible)
        assert decision["node_id"] == replica["node_id"]
    cluster.post("/models/comfort/deploy", json={"replicas": 2})
    cluster.running_replicas("comfort", 2)


def _client_script(cluster: Cluster, tmp: Path, model_id: str, seconds: float) -> subprocess.Popen[str]:
    nats = cluster.nats()
    config = {
        "workload_id": "test-client",
        "kind": "app",
        "nats": {"servers": [nats["url"]], "user": nats["user"], "password": nats["password"]},
        "heartbeat": {"file": str(tmp / "hb"), "interval": 1.0, "subject": "aiot.hb.test-client"},
        "log_subject": "aiot.logs.test-client",
        "models": {
            "comfort": {
                "model_id": model_id,
                "name": "comfort",
                "version": "1.0.0",
                "token": model_token(platform_secret_of(cluster.data_dir), model_id),
            }
        },
    }
    (tmp / "config.json").write_text(json.dumps(config))
    script = textwrap.dedent(f"""
        import json, sys, time
        import platform_sdk
        platform_sdk.configure({str(tmp / "config.json")!r})
        from platform_sdk import model_call
        ok, failures, answers, end = 0, [], set(), time.monotonic() + {seconds}
        while time.monotonic() < end:
            try:
                out = model_call("comfort", [31.5, 120], timeout=5)
                ok += 1
                answers.add(json.dumps(out, sort_keys=True))
                if ok == 20:
                    print("warm", flush=True)
            except Exception as exc:
                failures.append(f"{{time.monotonic():.2f}} {{type(exc).__name__}}: {{exc}}")
            time.sleep(0.02)
        print(json.dumps({{"ok": ok, "failures": failures[:2] + failures[-2:], "failed": len(failures),
                          "answers": list(answers)}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_model_answers_through_sdk_across_replicas_while_one_is_killed(cluster: Cluster, tmp_path: Path) -> None:
    replicas = cluster.running_replicas("comfort", 2)
    model_id = cluster.get("/deployments/comfort")["model_id"]
    client = _client_script(cluster, tmp_path, model_id, seconds=12)
    assert client.stdout is not None and client.stdout.readline().strip() == "warm", client.stderr.read()
    victim = serving_pid(replicas[0]["id"])
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    out, err = client.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failed"] == 0, (
        "\n".join(result["failures"]) + err[-2000:] + json.dumps(cluster.get("/deployments/comfort"), indent=1)
    )
    assert result["ok"] > 50
    assert len(result["answers"]) == 1  # every replica gives the same (deterministic) answer


def _wait_new_running(cluster: Cluster, workload_id: str, old_pid: int, started: float, limit: float) -> float:
    def probe() -> float | None:
        pid = serving_pid(workload_id)
        detail = cluster.get(f"/workloads/{workload_id}")
        if pid and pid != old_pid and detail["state"] == "running":
            return time.monotonic() - started
        return None

    return cluster.wait(f"{workload_id} running again", probe, timeout=limit + 20, every=0.05)


def test_sigkill_workload_is_running_again_in_under_2s(cluster: Cluster) -> None:
    replica = cluster.running_replicas("comfort", 2)[0]
    pid = serving_pid(replica["id"])
    assert pid is not None
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    # The process is back at once; "running" needs its first heartbeat and /healthz after the model loads.
    def respawned() -> float | None:
        new = serving_pid(replica["id"])
        return time.monotonic() - started if new and new != pid else None

    assert cluster.wait("a new process", respawned, timeout=5, every=0.02) < 2.0
    elapsed = _wait_new_running(cluster, replica["id"], pid, started, 2.0)
    restarts = cluster.get(f"/workloads/{replica['id']}")["restarts"]
    assert restarts >= 1
    print(f"crash -> process back and reported running in {elapsed:.2f}s")


def test_hung_workload_is_restarted_within_three_intervals_plus_1s(cluster: Cluster) -> None:
    replica = cluster.running_replicas("comfort", 2)[1]
    pid = serving_pid(replica["id"])
    assert pid is not None
    started = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # alive but silent: its heartbeat file stops advancing

    def respawned() -> float | None:
        new = serving_pid(replica["id"])
        return time.monotonic() - started if new and new != pid else None

    elapsed = cluster.wait("the hung replica replaced", respawned, timeout=10, every=0.05)
    assert elapsed <= 3 * 1.0 + 1.0, elapsed
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_lost_agent_workloads_move_and_never_run_twice(cluster: Cluster) -> None:
    replicas = cluster.running_replicas("comfort", 2)
    nodes = {n["id"]: n["name"] for n in cluster.get("/nodes")}
    victim_node = replicas[0]["node_id"]
    pids = agent_pids(cluster.data_dir)
    victim_pid = pids[nodes[victim_node]]
    moved = [r["id"] for r in replicas if r["node_id"] == victim_node]
    started = time.monotonic()
    os.kill(victim_pid, signal.SIGKILL)

    def moved_and_running() -> float | None:
        workloads = cluster.get("/deployments/comfort")["workloads"]
        ok = all(
            w["node_id"] not in (None, victim_node) and w["state"] == "running" for w in workloads if w["id"] in moved
        )
        return time.monotonic() - started if ok else None

    elapsed = cluster.wait("workloads rescheduled", moved_and_running, timeout=30, every=0.2)
    assert elapsed < 15.0, elapsed
    print(f"agent SIGKILL -> workloads running elsewhere in {elapsed:.1f}s")
    # Its workload processes died with it (parent-death signal), so nothing runs twice now ...
    serving = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "platform_sdk.serving" in " ".join(p.info["cmdline"] or []) and "bwrap" not in (p.info["cmdline"] or [""])[0]
    ]
    per_workload = Counter(w for p in serving for w in moved if w in p.environ().get("AIOT_WORKLOAD_CONFIG", ""))
    assert all(count == 1 for count in per_workload.values()), per_workload
    # ... and when the node comes back (same identity), it gets nothing of what moved.
    node_dir = cluster.data_dir / "nodes" / nodes[victim_node]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
    env["AIOT_DATA_DIR"] = str(cluster.data_dir)
    back = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "aiot"),
            "node",
            "join",
            "--server",
            cluster.plane.url,
            "--data-dir",
            str(node_dir),
            "--name",
            nodes[victim_node],
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cluster.wait(
            "the node back",
            lambda: {n["id"]: n["status"] for n in cluster.get("/nodes")}.get(victim_node) == "ready",
            timeout=30,
        )
        time.sleep(4)  # a few of its reconcile passes
        serving = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "platform_sdk.serving" in " ".join(p.info["cmdline"] or [])
            and "bwrap" not in (p.info["cmdline"] or [""])[0]
        ]
        per_workload = Counter(w for p in serving for w in moved if w in p.environ().get("AIOT_WORKLOAD_CONFIG", ""))
        assert per_workload and all(count == 1 for count in per_workload.values()), per_workload
        assert all(w["node_id"] != victim_node for w in cluster.get("/deployments/comfort")["workloads"])
    finally:
        back.terminate()
        back.wait(20)
