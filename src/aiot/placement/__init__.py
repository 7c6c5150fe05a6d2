"""Choosing the node for a workload: least loaded by a documented score, honouring capacity and labels."""

from aiot.placement.score import Decision, NodeView, Placer, Request, choose, score_node

__all__ = ["Decision", "NodeView", "Placer", "Request", "choose", "score_node"]
