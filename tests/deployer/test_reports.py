"""Agent reports are written with group commit: reports that arrive together share one transaction, each caller
gets its own node's answer, and a refused token fails only its own report.

Before, each report was its own transaction on the API's event loop: at 1,000 nodes reports queued for seconds
and healthy nodes were declared lost (`bench/heartbeats.py`: 459 of 1,000 in 60 s).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event

from aiot.deployer import nodes as node_rules
from aiot.deployer.reports import PendingReport, RecordedReport, ReportWriter
from aiot.errors import Unauthorized
from aiot.store import migrate
from aiot.store.engine import Database
from aiot.store.runtime import Node, NodeStatus

CAPACITY = {"cpu": 4, "memory_mb": 8192}


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'aiot.db'}"
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def _nodes(db: Database, count: int) -> list[str]:
    tokens = []
    with db.session() as session:
        for i in range(count):
            _node, token = node_rules.register_node(
                session, b"s" * 32, name=f"n{i}", address="127.0.0.1", labels={}, capacity=CAPACITY
            )
            tokens.append(token)
    return tokens


async def test_concurrent_reports_share_transactions_and_each_gets_its_own_answer(db: Database) -> None:
    tokens = _nodes(db, 40)
    with db.session() as session:  # one node was lost: its report brings it back
        lost = session.get(Node, tokens[3].split(".")[1])
        assert lost is not None
        lost.status = NodeStatus.lost
    writer = ReportWriter(db)
    results = await asyncio.gather(
        *(writer.submit(PendingReport(t, {"cpu_percent": i}, [])) for i, t in enumerate(tokens))
    )
    assert all(isinstance(r, RecordedReport) and r.status == "ready" for r in results)
    assert [r.node_id for r in results] == [t.split(".")[1] for t in tokens]
    assert writer.batches < len(tokens) / 4, writer.batches  # grouped, not one transaction per report
    with db.session() as session:
        rows = {n.id: n for n in session.query(Node)}
        assert all(rows[t.split(".")[1]].load == {"cpu_percent": i} for i, t in enumerate(tokens))
        assert rows[tokens[3].split(".")[1]].status == NodeStatus.ready


async def test_a_refused_token_fails_only_its_own_report(db: Database) -> None:
    tokens = _nodes(db, 5)
    forged = tokens[0].rsplit(".", 1)[0] + ".not-the-secret"
    writer = ReportWriter(db)
    results = await asyncio.gather(
        *(writer.submit(PendingReport(t, {"cpu_percent": 1.0}, [])) for t in [*tokens, forged]),
        return_exceptions=True,
    )
    assert all(isinstance(r, RecordedReport) for r in results[:-1]), results
    assert isinstance(results[-1], Unauthorized)
    assert writer.batches <= 2  # the refusal did not make the batch be written again one by one


def test_a_batch_reads_its_nodes_once_not_once_per_report(db: Database) -> None:
    """The read-ahead's rows stay referenced for the batch: the identity map holds them only weakly, and when
    they were collected every report's token check queried its node again (11 SELECTs for 10 reports)."""
    tokens = _nodes(db, 10)
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        results = ReportWriter(db)._write([PendingReport(t, {"cpu_percent": 1.0}, []) for t in tokens])
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert all(isinstance(r, RecordedReport) for r in results)
    node_reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FROM nodes" in s]
    assert len(node_reads) == 1, node_reads
