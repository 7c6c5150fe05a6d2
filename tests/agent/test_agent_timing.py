"""How soon an agent tells and asks the control plane: a workload's change of state is reported at once, not at the
next periodic report, and a failed poll is retried after 0.5 s, not after seconds (a replica moved off a lost node
counts as running elsewhere as soon as it runs; the multi-host test's 15 s budget depends on both)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiot.agent.agent import MAX_BACKOFF, REPORT_SPACING, AgentConfig, NodeAgent, _backoff
from aiot.agent.workload import ManagedWorkload


def _agent(tmp_path: Path, report_interval: float) -> NodeAgent:
    config = AgentConfig(server="http://127.0.0.1:9", data_dir=tmp_path, report_interval=report_interval)
    return NodeAgent(config)


def _workload(tmp_path: Path) -> ManagedWorkload:
    return ManagedWorkload({"workload_id": "w1", "generation": 1, "kind": "model"}, tmp_path)


async def test_a_state_change_ends_the_wait_for_the_next_report(tmp_path: Path) -> None:
    agent = _agent(tmp_path, report_interval=30.0)
    managed = _workload(tmp_path)
    agent.workloads["w1"] = managed
    reported = agent._phases()

    async def becomes_running() -> None:
        await asyncio.sleep(0.5)
        managed.state, managed.endpoint = "running", "http://10.0.0.7:4711"

    started = time.monotonic()
    await asyncio.gather(agent._until_next_report(reported), becomes_running())
    assert time.monotonic() - started < 1.5  # not the 30 s interval


async def test_no_change_waits_the_whole_interval_and_a_change_waits_the_spacing(tmp_path: Path) -> None:
    agent = _agent(tmp_path, report_interval=1.0)
    agent.workloads["w1"] = _workload(tmp_path)
    started = time.monotonic()
    await agent._until_next_report(agent._phases())
    assert time.monotonic() - started >= 1.0

    reported = agent._phases()
    agent.workloads["w1"].state = "failed"  # changed before the wait: still no report closer than the spacing
    started = time.monotonic()
    await agent._until_next_report(reported)
    assert REPORT_SPACING <= time.monotonic() - started < 0.9


def test_a_failed_poll_is_retried_soon_then_less_and_less_often() -> None:
    assert [_backoff(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, MAX_BACKOFF, MAX_BACKOFF]
