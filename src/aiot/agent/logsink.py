"""Workload stdout/stderr -> the log stream, or a local file when offline.

Lines go out on `aiot.node.<node id>.logs.<workload id>`, the node's own log subjects; the platform's log relay
(`aiot.logs.relay`) checks that the workload runs on this node and puts them on `aiot.logs.<workload id>`.

The supervisor calls `LogSink.line` synchronously for every line; lines are queued and published by one task,
so a slow or absent NATS never blocks the supervisor (the queue is bounded; overflow drops the oldest
records and counts them). Without a connected bus, lines are appended to `<workload dir>/output.log`
(rotated at 10 MB). The last `keep` lines of each workload are always kept in memory (`recent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiot.logs.records import node_log_subject

if TYPE_CHECKING:
    from aiot.bus.client import Bus

log = logging.getLogger(__name__)

LEVELS = {"stdout": "INFO", "stderr": "WARNING"}
MAX_FILE_BYTES = 10 * 1024 * 1024


class LogSink:
    def __init__(self, keep: int = 500, queue_size: int = 10000) -> None:
        self.bus: Bus | None = None
        self.node_id = ""  # set with the bus, once the node has its identity
        self.keep = keep
        self.recent: dict[str, deque[dict[str, str]]] = {}
        self.files: dict[str, Path] = {}
        """workload id -> its output.log (where lines go while NATS is unavailable)."""
        self.published = 0
        self.written = 0
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, str]] = asyncio.Queue(maxsize=queue_size)

    def line(self, workload_id: str, stream: str, text: str) -> None:
        record = {
            "ts": datetime.now(UTC).isoformat(),
            "level": LEVELS.get(stream, "INFO"),
            "service": "workload",
            "workload_id": workload_id,
            "stream": stream,
            "message": text,
        }
        self.recent.setdefault(workload_id, deque(maxlen=self.keep)).append(record)
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(record)

    async def run(self) -> None:
        """Publish queued records for ever (cancel to stop)."""
        while True:
            record = await self._queue.get()
            await self._deliver(record)

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._deliver(self._queue.get_nowait())

    async def _deliver(self, record: dict[str, str]) -> None:
        bus = self.bus
        if bus is not None and bus.is_connected:
            try:
                await bus.publish(node_log_subject(self.node_id, record["workload_id"]), json.dumps(record).encode())
                self.published += 1
                return
            except Exception as exc:  # noqa: BLE001 - fall back to the file, never lose the line silently
                log.debug("log publish failed (%s); writing to output.log", exc)
        self._append(record)

    def _append(self, record: dict[str, str]) -> None:
        path = self.files.get(record["workload_id"])
        if path is None:
            self.dropped += 1
            return
        try:
            if path.exists() and path.stat().st_size > MAX_FILE_BYTES:
                path.replace(path.with_suffix(".log.1"))
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            self.written += 1
        except OSError as exc:
            self.dropped += 1
            log.debug("cannot append to %s: %s", path, exc)
