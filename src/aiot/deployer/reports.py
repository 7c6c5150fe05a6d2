"""Agent reports written with group commit: many nodes' heartbeats in one database transaction.

Every agent reports its load and its workloads' states every 2 s; that report is also the node's heartbeat (a
node silent for the grace period is lost and its work moves). One transaction per report meant one commit (an
fsync on SQLite) per report, done on the API's event loop: at 1,000 nodes (500 reports/s) reports queued for
seconds, and nodes whose reports waited past the grace were declared lost although they were fine
(`bench/heartbeats.py` measured 459 of 1,000).

A `ReportWriter` takes the reports of a process as they come and writes whatever has arrived meanwhile in one
transaction, in a worker thread (the event loop never waits on the database). Nothing waits on purpose: under
light load a batch is one report, under heavy load the batch grows by itself (while one batch is written, the
next one gathers). Each caller gets its own node's result. The node token is checked in the same transaction (the
node's row is read there anyway), not in a session of its own before it. A batch that fails as a whole (an
unexpected error in one report) is written again report by report, so one report cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.deployer.nodes import authenticate_node, record_report
from aiot.errors import Unauthorized
from aiot.store.engine import Database
from aiot.store.runtime import Node, Workload, WorkloadStatus

log = logging.getLogger(__name__)

MAX_BATCH = 500  # reports per transaction: a bound on how long one commit holds the write lock


@dataclass(frozen=True)
class PendingReport:
    node_token: str  # checked inside the batch's transaction: the node row is read there anyway
    load: dict[str, object]
    workloads: list[dict[str, object]]


@dataclass(frozen=True)
class RecordedReport:
    """What the report route answers with and hands to the load history."""

    node_id: str
    status: str
    reported_at: datetime | None
    placed: set[str]


class ReportWriter:
    """Group commit of agent reports for one database (see the module docstring)."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self.batches = 0  # transactions written (tests and the benchmark read it)
        self._queue: list[tuple[PendingReport, asyncio.Future[RecordedReport]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, report: PendingReport) -> RecordedReport:
        """Record one node's report; returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordedReport] = loop.create_future()
        self._queue.append((report, future))
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._drain(), name="agent-report-writer")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            reports = [report for report, _ in batch]
            try:
                results = await asyncio.to_thread(self._write, reports)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller learns of it, then we go on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _write(self, reports: list[PendingReport]) -> list[RecordedReport | BaseException]:
        """All reports in one transaction; if that fails, each in its own (so one bad report fails alone)."""
        self.batches += 1
        try:
            with self.db.session() as session:
                ahead = _read_ahead(session, reports)
                return [_record(session, report, ahead.placed) for report in reports]
        except Exception:  # noqa: BLE001 - retried one by one below, where each failure is that report's own
            if len(reports) == 1:
                raise
        results: list[RecordedReport | BaseException] = []
        for report in reports:
            try:
                with self.db.session() as session:
                    results.append(_record(session, report, _read_ahead(session, [report]).placed))
            except Exception as exc:  # noqa: BLE001 - handed to that report's caller
                results.append(exc)
        return results


@dataclass
class _ReadAhead:
    placed: dict[str, list[Workload]]
    """The workloads placed on each reporting node."""
    held: list[object]
    """The nodes and status rows read ahead. The session's identity map holds unchanged objects only weakly: if
    nothing referenced them they would be collected at once and each `session.get` would query again (it did:
    one SELECT of the node per report, found by profiling `bench/heartbeats.py`)."""


def _read_ahead(session: Session, reports: list[PendingReport]) -> _ReadAhead:
    """Read what the batch needs in three queries instead of three per report: the nodes (then `session.get` in
    the token check finds them in the identity map), the workloads placed on them (by node) and those workloads'
    status rows (found by `session.get` in `record_report`)."""
    node_ids = list({parts[1] for r in reports if len(parts := r.node_token.split(".")) == 3})
    if not node_ids:
        return _ReadAhead({}, [])
    held: list[object] = list(session.scalars(select(Node).where(Node.id.in_(node_ids))))
    placed: dict[str, list[Workload]] = {node_id: [] for node_id in node_ids}
    for workload in session.scalars(select(Workload).where(Workload.node_id.in_(node_ids))):
        placed[workload.node_id or ""].append(workload)
    workload_ids = [w.id for ws in placed.values() for w in ws]
    if workload_ids:
        held += session.scalars(select(WorkloadStatus).where(WorkloadStatus.workload_id.in_(workload_ids)))
    return _ReadAhead(placed, held)


def _record(
    session: Session, report: PendingReport, placed: dict[str, list[Workload]]
) -> RecordedReport | Unauthorized:
    """One report inside the batch's transaction. A refused token is that caller's answer and writes nothing, so
    it never fails the batch (nor makes the batch be written again one by one)."""
    try:
        node = authenticate_node(session, report.node_token)
    except Unauthorized as refused:
        return refused
    placed_ids = record_report(session, node, report.load, report.workloads, placed.get(node.id, []))
    return RecordedReport(node.id, node.status.value, node.last_report_at, placed_ids)


_writers: weakref.WeakKeyDictionary[Database, ReportWriter] = weakref.WeakKeyDictionary()


def report_writer(db: Database) -> ReportWriter:
    """The writer of this process for `db` (one per database, so every report of the process shares its batches)."""
    writer = _writers.get(db)
    if writer is None:
        writer = _writers[db] = ReportWriter(db)
    return writer
