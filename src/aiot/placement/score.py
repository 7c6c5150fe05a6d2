"""The placement score (lower is better), documented here and in `README.md` beside this file.

For a workload asking `cpu` cores and `memory_mb` MiB, each ready node that matches the workload's label
selector and still has room (reserved + asked <= capacity, for CPU and memory) gets

    score = 0.4 * cpu_frac + 0.4 * mem_frac + 0.2 * count_frac + 0.5 * same_group

    cpu_frac   = max(observed CPU %, (reserved cpu + asked cpu) / capacity cpu)        in [0, 1]
    mem_frac   = max(observed memory %, (reserved MiB + asked MiB) / capacity MiB)      in [0, 1]
    count_frac = (workloads on the node + 1) / max_workloads (capacity, default 50)
    same_group = replicas of the same deployment / app instance already on the node

`reserved` counts what the node's assigned workloads asked for, including those not started yet, so a burst of
placements spreads out before any load report shows it. The observed load is the node's last report, so a node
busy with work we did not place still looks busy. `same_group` spreads replicas across nodes (anti-affinity),
so losing one node never takes every replica. Ties go to the node with fewer workloads, then by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

W_CPU, W_MEM, W_COUNT, W_SAME_GROUP = 0.4, 0.4, 0.2, 0.5
DEFAULT_MAX_WORKLOADS = 50


@dataclass
class Request:
    workload_id: str
    cpu: float
    memory_mb: int
    group_id: str
    selector: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeView:
    node_id: str
    name: str
    labels: dict[str, str]
    capacity_cpu: float
    capacity_memory_mb: int
    observed_cpu_percent: float = 0.0
    observed_memory_percent: float = 0.0
    reserved_cpu: float = 0.0
    reserved_memory_mb: int = 0
    workloads: int = 0
    groups: dict[str, int] = field(default_factory=dict)
    max_workloads: int = DEFAULT_MAX_WORKLOADS

    def reserve(self, request: Request) -> None:
        """Account for a workload just placed here (so the next choice in the same pass sees it)."""
        self.reserved_cpu += request.cpu
        self.reserved_memory_mb += request.memory_mb
        self.workloads += 1
        self.groups[request.group_id] = self.groups.get(request.group_id, 0) + 1


@dataclass
class Decision:
    node_id: str | None
    reason: str
    score: float | None
    scores: dict[str, Any]


def score_node(node: NodeView, request: Request) -> tuple[float | None, str]:
    """(score, explanation); score None when the node cannot take the workload, with the reason."""
    missing = {k: v for k, v in request.selector.items() if node.labels.get(k) != v}
    if missing:
        return None, f"labels do not match {missing}"
    if node.reserved_cpu + request.cpu > node.capacity_cpu + 1e-9:
        return None, (f"not enough CPU: {node.reserved_cpu:g} of {node.capacity_cpu:g} reserved, {request.cpu:g} asked")
    if node.reserved_memory_mb + request.memory_mb > node.capacity_memory_mb:
        return None, (
            f"not enough memory: {node.reserved_memory_mb} of {node.capacity_memory_mb} MiB reserved, "
            f"{request.memory_mb} asked"
        )
    if node.workloads + 1 > node.max_workloads:
        return None, f"already runs {node.workloads} workloads (max {node.max_workloads})"
    cpu_frac = max(node.observed_cpu_percent / 100, (node.reserved_cpu + request.cpu) / node.capacity_cpu)
    mem_frac = max(
        node.observed_memory_percent / 100, (node.reserved_memory_mb + request.memory_mb) / node.capacity_memory_mb
    )
    count_frac = (node.workloads + 1) / node.max_workloads
    same = node.groups.get(request.group_id, 0)
    score = W_CPU * min(cpu_frac, 1) + W_MEM * min(mem_frac, 1) + W_COUNT * count_frac + W_SAME_GROUP * same
    why = f"cpu {cpu_frac:.2f}, mem {mem_frac:.2f}, count {count_frac:.2f}, same-group {same}"
    return round(score, 6), why


DETAIL_NODES = 20
"""Up to this many ready nodes every node's score or exclusion is recorded with a decision; above it, the best
`DETAIL_NODES` eligible ones plus a count of the others (as Nomad keeps the top scores and filter counts): writing
5,000 explanations per placement cost more than the decision itself (bench/placement.py)."""


def _fast_score(node: NodeView, request: Request) -> float | None:
    """`score_node`'s number without its explanation (the hot loop over every node)."""
    if request.selector and any(node.labels.get(k) != v for k, v in request.selector.items()):
        return None
    cpu, memory = node.reserved_cpu + request.cpu, node.reserved_memory_mb + request.memory_mb
    if cpu > node.capacity_cpu + 1e-9 or memory > node.capacity_memory_mb or node.workloads + 1 > node.max_workloads:
        return None
    cpu_frac = max(node.observed_cpu_percent / 100, cpu / node.capacity_cpu)
    mem_frac = max(node.observed_memory_percent / 100, memory / node.capacity_memory_mb)
    score = (
        W_CPU * min(cpu_frac, 1)
        + W_MEM * min(mem_frac, 1)
        + W_COUNT * (node.workloads + 1) / node.max_workloads
        + W_SAME_GROUP * node.groups.get(request.group_id, 0)
    )
    return round(score, 6)


def choose(nodes: list[NodeView], request: Request) -> Decision:
    """The least-scored eligible node, with the nodes' scores or exclusion reasons (recorded for the API): all of
    them up to DETAIL_NODES nodes, else the best DETAIL_NODES and a count of the rest."""
    ranked: list[tuple[float, int, str, NodeView]] = []
    excluded: list[NodeView] = []
    for node in nodes:
        value = _fast_score(node, request)
        if value is None:
            excluded.append(node)
        else:
            ranked.append((value, node.workloads, node.name, node))
    ranked.sort(key=lambda item: item[:3])
    shown = ranked if len(nodes) <= DETAIL_NODES else ranked[:DETAIL_NODES]
    scores: dict[str, Any] = {}
    for _, _, _, node in shown:
        value, why = score_node(node, request)
        scores[node.name] = {"node_id": node.node_id, "score": value, "why": why}
    if len(nodes) <= DETAIL_NODES or not ranked:
        for node in excluded[:DETAIL_NODES]:
            scores[node.name] = {"node_id": node.node_id, "score": None, "why": score_node(node, request)[1]}
    hidden = len(nodes) - len(scores)
    if hidden:
        scores["(others)"] = {
            "node_id": None,
            "score": None,
            "why": f"{hidden} more nodes not listed: "
            f"{len(ranked) - len(shown)} eligible with higher scores, "
            f"{len(excluded) - sum(1 for s in scores.values() if s['score'] is None)} excluded",
        }
    if not ranked:
        return Decision(
            None,
            "no node can take it: " + "; ".join(f"{n}: {s['why']}" for n, s in scores.items())
            if scores
            else "no ready node",
            None,
            scores,
        )
    best = ranked[0]
    node = best[3]
    return Decision(
        node.node_id, f"least score {best[0]:.3f} on {node.name} ({scores[node.name]['why']})", best[0], scores
    )


class Placer:
    """`choose` for a whole placement pass over many nodes, vectorised with numpy: the same score, eligibility
    and ties (score, then fewer workloads, then name), a few microseconds per decision instead of a Python loop
    over every node (7 ms at 5,000 nodes; bench/placement.py). `reserve` keeps it and the node views in step."""

    def __init__(self, nodes: list[NodeView]) -> None:
        import numpy as np

        self._np = np
        self.nodes = nodes
        self.index = {node.node_id: i for i, node in enumerate(nodes)}
        self.name_rank = np.argsort(np.argsort(np.array([n.name for n in nodes], dtype=object)))
        self.capacity_cpu = np.array([n.capacity_cpu for n in nodes], dtype=float)
        self.capacity_mem = np.array([n.capacity_memory_mb for n in nodes], dtype=float)
        self.observed_cpu = np.array([n.observed_cpu_percent / 100 for n in nodes], dtype=float)
        self.observed_mem = np.array([n.observed_memory_percent / 100 for n in nodes], dtype=float)
        self.reserved_cpu = np.array([n.reserved_cpu for n in nodes], dtype=float)
        self.reserved_mem = np.array([n.reserved_memory_mb for n in nodes], dtype=float)
        self.count = np.array([n.workloads for n in nodes], dtype=float)
        self.max_workloads = np.array([n.max_workloads for n in nodes], dtype=float)
        self._groups: dict[str, Any] = {}
        self._masks: dict[tuple[tuple[str, str], ...], Any] = {}

    def _same_group(self, group_id: str) -> Any:
        found = self._groups.get(group_id)
        if found is None:
            found = self._np.array([n.groups.get(group_id, 0) for n in self.nodes], dtype=float)
            self._groups[group_id] = found
        return found

    def _mask(self, selector: dict[str, str]) -> Any:
        key = tuple(sorted(selector.items()))
        found = self._masks.get(key)
        if found is None:
            found = self._np.array([all(n.labels.get(k) == v for k, v in key) for n in self.nodes], dtype=bool)
            self._masks[key] = found
        return found

    def choose(self, request: Request) -> Decision:
        np = self._np
        if len(self.nodes) <= DETAIL_NODES:
            return choose(self.nodes, request)
        cpu = self.reserved_cpu + request.cpu
        mem = self.reserved_mem + request.memory_mb
        eligible = (
            self._mask(request.selector)
            & (cpu <= self.capacity_cpu + 1e-9)
            & (mem <= self.capacity_mem)
            & (self.count + 1 <= self.max_workloads)
        )
        if not eligible.any():
            return choose(self.nodes, request)  # every node's reason, as the full scoring gives them
        score = (
            W_CPU * np.minimum(np.maximum(self.observed_cpu, cpu / self.capacity_cpu), 1)
            + W_MEM * np.minimum(np.maximum(self.observed_mem, mem / self.capacity_mem), 1)
            + W_COUNT * (self.count + 1) / self.max_workloads
            + W_SAME_GROUP * self._same_group(request.group_id)
        )
        score = np.round(score, 6)
        candidates = np.flatnonzero(eligible)
        if len(candidates) > DETAIL_NODES:  # the best DETAIL_NODES by score only, then ordered exactly
            cut = np.argpartition(score[candidates], DETAIL_NODES - 1)[:DETAIL_NODES]
            threshold = score[candidates[cut]].max()
            candidates = candidates[score[candidates] <= threshold]  # ties at the cut stay in
        order = candidates[np.lexsort((self.name_rank[candidates], self.count[candidates], score[candidates]))]
        shown = [self.nodes[i] for i in order[:DETAIL_NODES]]
        scores: dict[str, Any] = {}
        for node in shown:
            value, why = score_node(node, request)
            scores[node.name] = {"node_id": node.node_id, "score": value, "why": why}
        eligible_count = int(eligible.sum())
        scores["(others)"] = {
            "node_id": None,
            "score": None,
            "why": f"{len(self.nodes) - len(shown)} more nodes not listed: "
            f"{eligible_count - len(shown)} eligible with higher scores, "
            f"{len(self.nodes) - eligible_count} excluded",
        }
        best = shown[0]
        value = scores[best.name]["score"]
        return Decision(
            best.node_id, f"least score {value:.3f} on {best.name} ({scores[best.name]['why']})", value, scores
        )

    def reserve(self, node_id: str, request: Request) -> None:
        """A workload was placed on `node_id`: account for it here and in its node view."""
        i = self.index[node_id]
        self.nodes[i].reserve(request)
        self.reserved_cpu[i] += request.cpu
        self.reserved_mem[i] += request.memory_mb
        self.count[i] += 1
        if request.group_id in self._groups:
            self._groups[request.group_id][i] += 1
