"""The node's load report (psutil): what placement and scale-out read from each node.

Keys `cpu_percent` and `memory_percent` are the ones the placement score uses (`aiot.placement.score`).
CPU percentages are measured between two calls (psutil's non-blocking mode), so the sampler keeps its
`psutil.Process` objects from one report to the next; the first sample of a process reads 0.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psutil

MB = 1024 * 1024


def node_capacity() -> dict[str, Any]:
    """What this machine offers: logical cores and total memory in MiB."""
    return {"cpu": float(psutil.cpu_count() or 1), "memory_mb": int(psutil.virtual_memory().total // MB)}


class LoadSampler:
    """Produces the `load` section of the agent's report."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # prime: the next call measures from now
        self._procs: dict[int, psutil.Process] = {}

    def _process(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None or not proc.is_running():
            proc = psutil.Process(pid)
            proc.cpu_percent(interval=None)
            self._procs[pid] = proc
        return proc

    def _usage(self, pid: int) -> dict[str, float]:
        """CPU % and RSS of a workload's process tree (bwrap, the sandbox's init and the program)."""
        cpu, rss = 0.0, 0
        try:
            root = self._process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {"cpu_percent": 0.0, "rss_mb": 0.0}
        for member in members:
            with contextlib.suppress(psutil.Error):
                proc = self._process(member.pid)
                cpu += proc.cpu_percent(interval=None)
                rss += proc.memory_info().rss
        return {"cpu_percent": round(cpu, 1), "rss_mb": round(rss / MB, 1)}

    def sample(self, workload_pids: dict[str, int | None]) -> dict[str, Any]:
        """The load dict: system CPU/memory, process count, and per-workload usage by workload id."""
        mem = psutil.virtual_memory()
        per_workload = {wid: self._usage(pid) for wid, pid in workload_pids.items() if pid}
        live = {p.pid for p in self._procs.values() if p.is_running()}
        self._procs = {pid: p for pid, p in self._procs.items() if pid in live}
        return {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "cpu_count": psutil.cpu_count() or 1,
            "memory_percent": mem.percent,
            "memory_used_mb": int((mem.total - mem.available) // MB),
            "memory_total_mb": int(mem.total // MB),
            "process_count": len(psutil.pids()),
            "workloads": len(workload_pids),
            "per_workload": per_workload,
        }
