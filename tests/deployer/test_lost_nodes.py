"""A node silent for the grace period is lost; the database picks the silent nodes (the pass runs every second
and no longer reads every node to compare in Python). On SQLite and PostgreSQL: the comparison runs in SQL."""

from __future__ import annotations

from datetime import timedelta

from aiot.deployer import nodes as node_rules
from aiot.deployer.reconcile import PassResult, mark_lost_nodes
from aiot.store import migrate
from aiot.store.engine import Database
from aiot.store.runtime import Node, NodeStatus
from aiot.timeutil import utcnow

CAPACITY = {"cpu": 4, "memory_mb": 8192}


def test_only_nodes_silent_past_the_grace_are_lost(db_url: str) -> None:
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        with db.session() as session:
            ids = {}
            for name in ("fresh", "silent", "never", "drained"):
                node, _token = node_rules.register_node(
                    session, b"s" * 32, name=name, address="127.0.0.1", labels={}, capacity=CAPACITY
                )
                ids[name] = node.id
            session.flush()
            now = utcnow()
            for name, age in (("fresh", 1.0), ("silent", 9.0), ("drained", 30.0)):
                session.get(Node, ids[name]).last_report_at = now - timedelta(seconds=age)  # type: ignore[union-attr]
            session.get(Node, ids["never"]).last_report_at = None  # type: ignore[union-attr]
            session.get(Node, ids["drained"]).status = NodeStatus.removed  # type: ignore[union-attr]
        with db.session() as session:
            result = PassResult()
            mark_lost_nodes(session, b"s" * 32, 8.0, result)
        assert sorted(result.lost_nodes) == sorted([ids["silent"], ids["never"]])
        with db.session() as session:
            status = {name: session.get(Node, node_id).status for name, node_id in ids.items()}  # type: ignore[union-attr]
        assert status == {
            "fresh": NodeStatus.ready,
            "silent": NodeStatus.lost,
            "never": NodeStatus.lost,
            "drained": NodeStatus.removed,
        }
    finally:
        db.dispose()
