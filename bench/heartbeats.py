"""Node heartbeats at scale: 1,000 simulated nodes reporting to a real control plane at the agents' interval.

Every agent reports its load and its workloads' states with `POST /api/v1/agent/report` every 2 s (that report
is the node's heartbeat: a node silent for `AIOT_NODE_GRACE_SECONDS` is lost). Here the control plane is a real
`aiot up` (no local nodes, embedded NATS, SQLite by default); N node rows are written the way registration
leaves them, each with its own node token; then a load generator (`_heartbeat_gen.py`, its own process, raw
asyncio streams over 64 keep-alive connections) sends every node's report at the normal interval, first
reports spread over one interval, for D seconds; latency counts from when a report was due. Reported: the
control plane's CPU (its whole process tree; % of one core, µs per report, and µs per report above its own idle
CPU measured just before), its peak RSS, report latency p50/p99/max, failed reports, reports per second, and how
many nodes were not `ready` at the end (a report that came too late makes a healthy node `lost`).

Peer (same run, same load generator): a bare HTTP endpoint (uvicorn + Starlette on uvloop, the same route, it
reads the JSON body and answers `{"status": "ready"}`, no database, no auth, no load history): the floor of
receiving the reports over HTTP in Python. The ratio says what the platform's per-report work costs above it.

    .venv/bin/python bench/heartbeats.py                   # 1,000 nodes for 60 s
    .venv/bin/python bench/heartbeats.py --sizes 200,1000  # several sizes
    .venv/bin/python bench/heartbeats.py --smoke           # 50 nodes for 4 s (CI)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _cluster import Cluster
from _common import ROOT, Sampler, emit, free_port, machine, parser, ratio, sizes

REPORT_INTERVAL_S = 2.0  # aiot.agent.agent.AgentConfig.report_interval
CONNECTIONS = 64  # keep-alive connections the generator spreads the nodes' reports over
HERE = Path(__file__).resolve().parent

PEER_APP = textwrap.dedent(
    """
    import sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def report(request):
        await request.json()
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/api/v1/agent/report", report, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, loop="uvloop")
    """
)


def _write_nodes(database_url: str, count: int) -> list[str]:
    """Node rows as registration leaves them (ready, capacity, a fresh report), each with its own token."""
    from aiot.deployer.nodes import NODE_PREFIX
    from aiot.store.engine import Database
    from aiot.store.runtime import Node, NodeStatus
    from aiot.timeutil import utcnow

    db = Database(database_url)
    tokens, now = [], utcnow()
    try:
        with db.session() as session:
            for i in range(count):
                secret = secrets.token_urlsafe(32)
                node = Node(
                    name=f"sim-{i:05d}",
                    address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                    labels={},
                    capacity={"cpu": 4, "memory_mb": 8192},
                    token_hash=hashlib.sha256(secret.encode()).hexdigest(),
                    nats_password_bcrypt="simulated",
                    status=NodeStatus.ready,
                    status_changed_at=now,
                    last_report_at=now,
                    provider="simulated",
                    load={},
                )
                session.add(node)
                session.flush()
                tokens.append(f"{NODE_PREFIX}.{node.id}.{secret}")
    finally:
        db.dispose()
    return tokens


def _drive(url: str, tokens: list[str], seconds: float, work: Path) -> dict[str, Any]:
    """Run `_heartbeat_gen.py` (its own process) against `url` for `seconds`; its JSON line."""
    tokens_file = work / f"tokens-{len(tokens)}-{time.monotonic_ns()}"
    tokens_file.touch(mode=0o600)
    tokens_file.write_text("\n".join(tokens) + "\n")
    try:
        out = subprocess.run(
            [
                sys.executable,
                str(HERE / "_heartbeat_gen.py"),
                f"{url}/api/v1/agent/report",
                str(tokens_file),
                str(REPORT_INTERVAL_S),
                str(seconds),
                str(CONNECTIONS),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 300,
            check=True,
        )
    finally:
        tokens_file.unlink(missing_ok=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measured(sampler: Sampler, run: Any) -> tuple[dict[str, Any], float]:
    """Run `run()` (blocking) while sampling the server's CPU and RSS every 0.5 s; returns (its result, CPU s)."""
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            sampler.sample()

    watcher = threading.Thread(target=sample, daemon=True)
    before = sampler.cpu()
    watcher.start()
    try:
        figures = run()
    finally:
        done.set()
        watcher.join()
    return figures, sampler.cpu() - before


def _cpu_figures(cpu_s: float, seconds: float, reports: int) -> dict[str, Any]:
    return {
        "cpu_s": round(cpu_s, 2),
        "cpu_percent_of_one_core": round(100 * cpu_s / seconds, 1),
        "cpu_us_per_report": round(1e6 * cpu_s / reports, 1) if reports else None,
    }


def measure_ours(work: Path, nodes: int, seconds: float) -> dict[str, Any]:
    cluster = Cluster(work / f"plane-{nodes}", nodes=0, AIOT_NODE_GRACE_SECONDS="8")
    try:
        cluster.wait_ready(0)
        sampler = Sampler(cluster.proc.pid)
        idle_s = min(10.0, seconds)
        _, idle_cpu_s = _measured(sampler, lambda: time.sleep(idle_s))  # its own background work, no nodes
        tokens = _write_nodes(f"sqlite:///{cluster.data_dir / 'aiot.db'}", nodes)
        figures, cpu_s = _measured(sampler, lambda: _drive(cluster.url, tokens, seconds, work))
        listed = cluster.client.get("/nodes").json()
        lost = sum(1 for n in listed if n["status"] != "ready")
        return {
            **figures,
            **_cpu_figures(cpu_s, seconds, figures["reports"]),
            "idle_cpu_percent_of_one_core": round(100 * idle_cpu_s / idle_s, 1),
            "cpu_us_per_report_above_idle": round(1e6 * (cpu_s - idle_cpu_s / idle_s * seconds) / figures["reports"], 1)
            if figures["reports"]
            else None,
            "peak_rss_mb": sampler.rss_mb(),
            "nodes_not_ready_at_end": lost,
        }
    finally:
        cluster.close()


def measure_peer(work: Path, nodes: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", PEER_APP, str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_listening(port, proc)
        tokens = [f"peer-{i}" for i in range(nodes)]
        sampler = Sampler(proc.pid)
        figures, cpu_s = _measured(sampler, lambda: _drive(url, tokens, seconds, work))
        return {**figures, **_cpu_figures(cpu_s, seconds, figures["reports"]), "peak_rss_mb": sampler.rss_mb()}
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the peer server exited with {proc.returncode}")
        try:
            httpx.post(f"http://127.0.0.1:{port}/api/v1/agent/report", json={}, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the peer server did not start")


def main() -> None:
    p = parser(__doc__, "comma-separated node counts (default 1000; smoke 50)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long each size reports (smoke: 4)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    counts = sizes(args.sizes, [50] if args.smoke else [1000])
    seconds = 4.0 if args.smoke else args.seconds
    points = []
    with tempfile.TemporaryDirectory(prefix="aiot-bench-heartbeats-") as tmp:
        for nodes in counts:
            ours = measure_ours(Path(tmp), nodes, seconds)
            peer = measure_peer(Path(tmp), nodes, seconds)
            points.append(
                {
                    "nodes": nodes,
                    "ours": ours,
                    "peer_bare_http": peer,
                    "cpu_ratio_to_peer": ratio(ours["cpu_s"], peer["cpu_s"]),
                }
            )
    ok = all(not pt["ours"]["failed"] and pt["ours"]["nodes_not_ready_at_end"] == 0 for pt in points)
    emit(
        {
            "benchmark": "heartbeats",
            "smoke": args.smoke,
            "machine": machine(),
            "settings": {
                "report_interval_s": REPORT_INTERVAL_S,
                "seconds": seconds,
                "database": "sqlite",
                "control_plane": "aiot up --nodes 0 (every service, embedded NATS)",
            },
            "peer": "bare uvicorn + Starlette endpoint reading the same JSON body (no database, no auth)",
            "points": points,
            "targets_met": {"no_failed_report_and_no_node_lost": ok},
            "ok": ok,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
