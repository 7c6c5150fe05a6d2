"""The placement score: spread, load, capacity, labels and anti-affinity, as documented in placement/score.py."""

from __future__ import annotations

from collections import Counter

from aiot.placement import NodeView, Request, choose


def _nodes(**loads: float) -> list[NodeView]:
    return [
        NodeView(
            node_id=f"nod_{name}",
            name=name,
            labels={"zone": "a" if name != "c" else "b"},
            capacity_cpu=4,
            capacity_memory_mb=8192,
            observed_cpu_percent=cpu,
        )
        for name, cpu in loads.items()
    ]


def _place(nodes: list[NodeView], count: int, group: str = "g", **request: object) -> Counter[str]:
    spread: Counter[str] = Counter()
    for i in range(count):
        req = Request(
            workload_id=f"wl_{i}",
            cpu=float(request.get("cpu", 0.25)),
            memory_mb=int(request.get("memory_mb", 256)),
            group_id=f"{group}{i}" if group else "g",
            selector=dict(request.get("selector", {})),
        )  # type: ignore[arg-type]
        decision = choose(nodes, req)
        assert decision.node_id is not None, decision.reason
        chosen = next(n for n in nodes if n.node_id == decision.node_id)
        chosen.reserve(req)
        spread[chosen.name] += 1
    return spread


def test_three_idle_nodes_ten_workloads_spread_evenly() -> None:
    spread = _place(_nodes(a=0, b=0, c=0), 10)
    assert sorted(spread.values()) == [3, 3, 4]


def test_busy_node_gets_less_work() -> None:
    # Node a reports 60 % CPU: its cpu term stays 0.6 until reservations pass that, so b and c fill first.
    spread = _place(_nodes(a=60, b=0, c=0), 10)
    assert spread["a"] < spread["b"] and spread["a"] < spread["c"]
    assert spread["a"] <= 2


def test_replicas_of_one_group_spread_across_nodes() -> None:
    nodes = _nodes(a=0, b=0, c=0)
    nodes[0].reserve(Request("wl_x", 0.1, 64, "other"))  # a already has more work of another group
    spread = _place(nodes, 3, group="")  # same group for all three replicas
    assert sorted(spread) == ["a", "b", "c"]


def test_capacity_and_labels_exclude_nodes_with_reasons() -> None:
    nodes = _nodes(a=0, b=0, c=0)
    decision = choose(nodes, Request("wl_big", cpu=8, memory_mb=100, group_id="g"))
    assert decision.node_id is None and "not enough CPU" in decision.reason
    decision = choose(nodes, Request("wl_z", cpu=0.5, memory_mb=100, group_id="g", selector={"zone": "b"}))
    assert decision.node_id == "nod_c"
    assert "labels do not match" in decision.scores["a"]["why"]
    assert decision.scores["c"]["score"] == decision.score


def test_memory_capacity_fills_up() -> None:
    nodes = [NodeView("nod_a", "a", {}, capacity_cpu=16, capacity_memory_mb=1024)]
    assert _place(nodes, 4, memory_mb=256) == {"a": 4}
    decision = choose(nodes, Request("wl_5", cpu=0.1, memory_mb=256, group_id="g"))
    assert decision.node_id is None and "not enough memory" in decision.reason


def test_large_clusters_record_the_best_nodes_and_count_the_rest() -> None:
    """Above DETAIL_NODES nodes a decision keeps the best ones and a count, not 5,000 explanations; the choice is
    the one full scoring would make."""
    import random

    from aiot.placement.score import DETAIL_NODES, NodeView, Request, _fast_score, choose, score_node

    rng = random.Random(7)
    nodes = [
        NodeView(
            node_id=f"nod_{i}",
            name=f"n{i:04d}",
            labels={"zone": "a" if i % 4 else "b"},
            capacity_cpu=4,
            capacity_memory_mb=8192,
            observed_cpu_percent=rng.uniform(0, 90),
            reserved_cpu=rng.choice([0, 1, 3.9]),
            workloads=rng.randint(0, 10),
        )
        for i in range(500)
    ]
    request = Request(workload_id="wl_x", cpu=0.5, memory_mb=256, group_id="dep_1", selector={"zone": "a"})
    assert all(_fast_score(n, request) == score_node(n, request)[0] for n in nodes)
    decision = choose(nodes, request)
    full = min((score_node(n, request)[0], n.workloads, n.name) for n in nodes if score_node(n, request)[0] is not None)
    assert decision.node_id == f"nod_{int(full[2][1:])}" and decision.score == full[0]
    assert len(decision.scores) == DETAIL_NODES + 1 and "(others)" in decision.scores
    shown = [s["score"] for name, s in decision.scores.items() if name != "(others)"]
    assert shown == sorted(shown) and shown[0] == decision.score
    assert "480 more nodes not listed" in decision.scores["(others)"]["why"]


def test_the_vectorised_placer_chooses_what_the_full_scoring_chooses() -> None:
    """A pass over many nodes uses `Placer` (numpy); it must pick the node `choose` picks, decision after
    decision, while reservations accumulate."""
    import copy
    import random

    from aiot.placement.score import NodeView, Placer, Request, choose

    rng = random.Random(11)
    nodes = [
        NodeView(
            node_id=f"nod_{i}",
            name=f"n{rng.randint(0, 99999):05d}-{i}",
            labels={"zone": rng.choice("abc"), "gpu": rng.choice(["yes", "no"])},
            capacity_cpu=rng.choice([2, 4, 8]),
            capacity_memory_mb=rng.choice([2048, 8192]),
            observed_cpu_percent=rng.uniform(0, 95),
            observed_memory_percent=rng.uniform(0, 95),
            reserved_cpu=rng.choice([0, 0.5, 1]),
            workloads=rng.randint(0, 5),
            groups={"dep_a": rng.randint(0, 1)},
        )
        for i in range(300)
    ]
    reference = copy.deepcopy(nodes)
    placer = Placer(nodes)
    for step in range(200):
        request = Request(
            workload_id=f"wl_{step}",
            cpu=rng.choice([0.25, 0.5, 1.0]),
            memory_mb=rng.choice([128, 512, 1024]),
            group_id=rng.choice(["dep_a", "dep_b", "dep_c"]),
            selector=rng.choice([{}, {"zone": "a"}, {"gpu": "yes", "zone": "b"}]),
        )
        fast, full = placer.choose(request), choose(reference, request)
        assert (fast.node_id, fast.score) == (full.node_id, full.score), step
        if fast.node_id is not None:
            placer.reserve(fast.node_id, request)
            next(n for n in reference if n.node_id == full.node_id).reserve(request)
