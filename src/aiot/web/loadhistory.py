"""The last N load reports of each node, kept in memory by the web layer for the node charts.

Nodes store only their latest report (the database needs no history for placement); the charts sample it each
time the nodes page (or its live part) is rendered, and skip a sample whose report time did not change. A
restart of the control plane starts the charts afresh, which is acceptable for a live view.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

KEEP = 60


@dataclass
class NodeSeries:
    reported: deque[str] = field(default_factory=lambda: deque(maxlen=KEEP))
    cpu: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))
    memory: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))


class LoadHistory:
    def __init__(self) -> None:
        self._series: dict[str, NodeSeries] = {}
        self._lock = Lock()

    def record(self, node: dict[str, Any]) -> NodeSeries:
        """Add the node's current report (from GET /nodes) unless it was seen already; return its series."""
        with self._lock:
            series = self._series.setdefault(node["id"], NodeSeries())
            at = node.get("last_report_at")
            load = node.get("load") or {}
            if at and (not series.reported or series.reported[-1] != at):
                series.reported.append(at)
                series.cpu.append(float(load.get("cpu_percent", 0.0) or 0.0))
                series.memory.append(float(load.get("memory_percent", 0.0) or 0.0))
            return series


HISTORY = LoadHistory()
