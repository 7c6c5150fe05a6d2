"""The scale-out decision over time (pure): busy for the window adds, idle for the idle window removes."""

from __future__ import annotations

from aiot.deployer.autoscale import AutoscalePolicy


def _policy() -> AutoscalePolicy:
    return AutoscalePolicy(high_cpu=80, low_cpu=10, window_s=60, idle_window_s=300, min_nodes=1, max_nodes=3)


def test_busy_for_the_window_adds_one_node() -> None:
    policy = _policy()
    assert [policy.decide(t, 90, 1) for t in (0, 30, 59)] == ["hold"] * 3
    assert policy.decide(60, 90, 1) == "add"
    assert policy.decide(61, 90, 2) == "hold"  # the window starts again after an action


def test_a_dip_resets_the_window() -> None:
    policy = _policy()
    policy.decide(0, 90, 1)
    policy.decide(40, 50, 1)
    assert policy.decide(70, 90, 1) == "hold"
    assert policy.decide(130, 90, 1) == "add"


def test_idle_removes_but_never_below_min_or_above_max() -> None:
    policy = _policy()
    assert policy.decide(0, 5, 2) == "hold"
    assert policy.decide(300, 5, 2) == "remove"
    assert policy.decide(0, 5, 1) == "hold" and policy.decide(1000, 5, 1) == "hold"
    busy = _policy()
    busy.decide(0, 99, 3)
    assert busy.decide(100, 99, 3) == "hold"  # at max_nodes


def test_below_min_nodes_adds_at_once() -> None:
    assert _policy().decide(0, None, 0) == "add"
