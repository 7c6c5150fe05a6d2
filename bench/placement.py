"""Placement at scale: the deployer's real placement pass over 100, 1,000 and 5,000 simulated nodes.

Simulated agents: node rows as registration and load reports leave them (capacity 16 cores / 64 GiB, a random
observed load, ready), written straight into a fresh database (SQLite by default, `--database-url` for
PostgreSQL), plus a batch of pending workloads (0.25 core / 256 MiB each, replicas of deployments of 5). Then the
real pass (`aiot.deployer.reconcile.place_pending`: node views, score every node, record the decision, assign)
places them, committed like the deployer does. Reported per size: placements per second over the whole pass, the
p50/p99 time of one decision (scoring every node), and the pass's parts.

Peer: Nomad's published C1M/C2M figures (HashiCorp, 2016/2020: about 3,750 placements/s across 5,000 hosts for
C1M, about 1,500/s for C2M's 2 million containers over 6,100 hosts), quoted, not run here (its scheduler is Go
with an optimistic-concurrency plan queue; a fair peer would be Nomad itself on the same machine, which is not
installable offline).

    .venv/bin/python bench/placement.py                      # 100, 1000, 5000 nodes; 2,000 workloads each
    .venv/bin/python bench/placement.py --smoke              # 100 nodes, 200 workloads (CI)
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, emit, machine, parser, pct, sizes

NOMAD_C1M_PER_S = 3750
NOMAD_C2M_PER_S = 1500


def _populate(db: Any, nodes: int, workloads: int, seed: int) -> None:
    from aiot.store.runtime import DesiredState, Node, NodeStatus, Workload, WorkloadKind, WorkloadStatus
    from aiot.timeutil import utcnow

    rng = random.Random(seed)
    now = utcnow()
    with db.session() as session:
        session.add_all(
            Node(
                name=f"sim-{i:05d}",
                address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                labels={"zone": f"z{i % 3}"},
                capacity={"cpu": 16, "memory_mb": 65536},
                token_hash=f"{i:064x}",
                nats_password_bcrypt="simulated",
                status=NodeStatus.ready,
                load={"cpu_percent": rng.uniform(0, 60), "memory_percent": rng.uniform(5, 50), "sandboxed": True},
                last_report_at=now,
                provider="simulated",
            )
            for i in range(nodes)
        )
        session.flush()
        batch = [
            Workload(
                kind=WorkloadKind.model,
                package_id="mdl_bench",
                package_sha256="0" * 64,
                owner_id=None,
                group_id=f"dep_{i // 5:06d}",
                config={},
                resources={"cpu": 0.25, "memory_mb": 256},
                selector={},
                nats_password_bcrypt="simulated",
                desired=DesiredState.running,
            )
            for i in range(workloads)
        ]
        session.add_all(batch)
        session.flush()
        session.add_all(WorkloadStatus(workload_id=w.id) for w in batch)


def measure(database_url: str | None, nodes: int, workloads: int, work: Path) -> dict[str, Any]:
    from aiot.deployer import reconcile
    from aiot.placement.score import Placer
    from aiot.store import migrate
    from aiot.store.engine import Database

    url = database_url or f"sqlite:///{work / f'placement-{nodes}.db'}"
    migrate.upgrade(url)
    db = Database(url)
    try:
        _populate(db, nodes, workloads, seed=nodes)
        decisions: list[float] = []
        real_choose = Placer.choose

        def timed_choose(self: Any, request: Any) -> Any:
            started = time.perf_counter()
            try:
                return real_choose(self, request)
            finally:
                decisions.append(time.perf_counter() - started)

        Placer.choose = timed_choose  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            with db.session() as session:
                views_started = time.perf_counter()
                reconcile.node_views(session)
                views_s = time.perf_counter() - views_started
                result = reconcile.PassResult()
                reconcile.place_pending(session, result)
            total = time.perf_counter() - started
        finally:
            Placer.choose = real_choose  # type: ignore[method-assign]
        placed = len(result.placed)
        return {
            "nodes": nodes,
            "workloads": workloads,
            "placed": placed,
            "unplaceable": len(result.unplaceable),
            "pass_s": round(total, 3),
            "placements_per_s": round(placed / total, 1) if total else None,
            "decision_p50_ms": pct(decisions, 0.50),
            "decision_p99_ms": pct(decisions, 0.99),
            "node_views_s": round(views_s, 3),
            "nodes_used": len(set(result.placed.values())),
        }
    finally:
        if database_url is None:
            db.dispose()
        else:  # a shared PostgreSQL database: leave it empty for the next size
            from sqlalchemy import text

            with db.session() as session:
                for table in ("placement_decisions", "workload_events", "workload_status", "workloads", "nodes"):
                    session.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed table names
            db.dispose()


def main() -> None:
    p = parser(__doc__, "comma-separated node counts (default 100,1000,5000; smoke 100)")
    p.add_argument("--workloads", type=int, default=2000, help="pending workloads placed per size")
    p.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: a fresh SQLite file per size)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    counts = sizes(args.sizes, [100] if args.smoke else [100, 1000, 5000])
    workloads = 200 if args.smoke else args.workloads
    with tempfile.TemporaryDirectory(prefix="aiot-bench-placement-") as tmp:
        points = [measure(args.database_url, n, workloads, Path(tmp)) for n in counts]
    largest = points[-1]
    emit(
        {
            "benchmark": "placement",
            "smoke": args.smoke,
            "machine": machine(),
            "settings": {
                "workloads_per_size": workloads,
                "database": "sqlite" if not args.database_url else args.database_url.split(":", 1)[0],
                "workload": "0.25 core, 256 MiB, groups of 5",
            },
            "peer": {
                "nomad_c1m_placements_per_s": NOMAD_C1M_PER_S,
                "nomad_c2m_placements_per_s": NOMAD_C2M_PER_S,
                "source": "HashiCorp's published C1M (2016) and C2M (2020) figures, quoted, not run here",
            },
            "points": points,
            "ratio_to_nomad_c1m_at_largest": round(largest["placements_per_s"] / NOMAD_C1M_PER_S, 3)
            if largest["placements_per_s"]
            else None,
            "targets_met": {"every_workload_placed": all(p["placed"] == p["workloads"] for p in points)},
            "ok": all(p["placed"] == p["workloads"] for p in points),
        },
        args.output,
    )


if __name__ == "__main__":
    main()
