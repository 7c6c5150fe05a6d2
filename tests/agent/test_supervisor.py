"""WorkloadSupervisor with real processes (bwrap where installed): restarts, hangs, back-off, stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psutil
import pytest

from aiot.agent.supervisor import WorkloadSupervisor, backoff_delay
from tests.agent.conftest import make_probe, needs_bwrap, wait_until

MODES = [pytest.param(True, marks=needs_bwrap, id="bwrap"), pytest.param(False, id="plain")]


def _supervisor(probe, use_bwrap: bool, lines: list | None = None, **kw) -> WorkloadSupervisor:  # type: ignore[no-untyped-def]
    def on_output(wid: str, stream: str, line: str) -> None:
        if lines is not None:
            lines.append((wid, stream, line))

    return WorkloadSupervisor(
        probe.workload_id,
        probe.plan(use_bwrap),
        heartbeat_file=probe.heartbeat,
        heartbeat_interval=probe_interval(probe),
        on_output=on_output,
        **kw,
    )


def probe_interval(probe) -> float:  # type: ignore[no-untyped-def]
    import json

    return float(json.loads(probe.config_path.read_text())["heartbeat"]["interval"])


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _workload_pid(sup: WorkloadSupervisor) -> int | None:
    """Host pid of the probe itself (inside bwrap it is a grandchild of the supervised pid)."""
    if sup.pid is None:
        return None
    try:
        procs = [psutil.Process(sup.pid), *psutil.Process(sup.pid).children(recursive=True)]
        return next(p.pid for p in procs if "probe_workload.py" in " ".join(p.cmdline()))
    except (psutil.Error, StopIteration):
        return None


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_sigkill_restarts_within_two_seconds_and_output_is_captured(tmp_path: Path, use_bwrap: bool) -> None:
    probe = make_probe(tmp_path / "data", interval=0.5)
    lines: list = []
    sup = _supervisor(probe, use_bwrap, lines)
    sup.start()
    try:
        await wait_until(lambda: sup.state == "running", 15)
        first = _workload_pid(sup)
        assert first is not None
        assert any(s == "stderr" and line == "probe stderr line" for _, s, line in lines)
        assert any(s == "stdout" and line.startswith("probe started") for _, s, line in lines)
        killed_at = time.monotonic()
        psutil.Process(first).kill()
        await wait_until(lambda: sup.restarts == 1, 3)
        await wait_until(lambda: sup.state == "running" and _workload_pid(sup) not in (None, first), 5)
        took = time.monotonic() - killed_at
        print(f"SIGKILL -> running again in {took:.3f}s ({'bwrap' if use_bwrap else 'plain'})")
        assert took < 2.0
        assert "SIGKILL" in " ".join(reason for _, _, reason in sup.history)
    finally:
        await sup.stop()
    assert sup.state == "stopped" and sup.pid is None


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_hung_workload_is_restarted_within_three_intervals_plus_one_second(
    tmp_path: Path, use_bwrap: bool
) -> None:
    interval = 1.0
    probe = make_probe(tmp_path / "data", interval=interval)
    sup = _supervisor(probe, use_bwrap)
    sup.start()
    try:
        await wait_until(lambda: sup.state == "running", 15)
        first = _workload_pid(sup)
        (probe.run_dir / "hang").touch()  # the probe stops heartbeating but stays alive
        last_beat = probe.heartbeat.stat().st_mtime
        while sup.restarts == 0:  # the last heartbeat written before the hang
            with contextlib.suppress(FileNotFoundError):
                last_beat = max(last_beat, probe.heartbeat.stat().st_mtime)
            if sup.state == "running":  # alive while hung: only the heartbeat file says it is stuck
                assert psutil.pid_exists(first)
            await asyncio.sleep(0.02)
        await wait_until(lambda: sup.state == "running" and _workload_pid(sup) not in (None, first), 10)
        took = time.time() - last_beat
        print(f"heartbeat stopped -> running again in {took:.2f}s (limit {3 * interval + 1:g}s)")
        assert took <= 3 * interval + 1.0
        await wait_until(lambda: not _alive(psutil.Process(first)) if psutil.pid_exists(first) else True, 2)
        assert any(state == "unhealthy" and "hung" in reason for _, state, reason in sup.history)
    finally:
        await sup.stop()


def test_backoff_schedule() -> None:
    assert [backoff_delay(n) for n in range(1, 10)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]


async def test_crash_loop_backs_off(tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "data", mode="crash")
    sup = _supervisor(probe, use_bwrap=False)
    sup.start()
    try:
        await wait_until(lambda: sup.restarts >= 4, 10)
    finally:
        await sup.stop()
    starts = [t for t, state, _ in sup.history if state == "starting"]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) >= 3
    # 0 s, then 0.5 s, then 1 s (plus the time to start and crash each time): the gaps grow.
    assert gaps[1] > gaps[0] + 0.3 and gaps[2] > gaps[1] + 0.3, gaps
    reasons = [r for _, s, r in sup.history if s == "restarting"]
    assert "exited with code 3" in reasons[0] and reasons[1].endswith("in 0.5s") and reasons[2].endswith("in 1s")


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_stop_kills_the_whole_process_tree(tmp_path: Path, use_bwrap: bool) -> None:
    probe = make_probe(tmp_path / "data", mode="child")
    sup = _supervisor(probe, use_bwrap, stop_timeout=1.0)
    sup.start()
    await wait_until(lambda: sup.state == "running", 15)
    root = psutil.Process(sup.pid)
    await wait_until(lambda: len(root.children(recursive=True)) >= (3 if use_bwrap else 1), 5)
    tree = [root, *root.children(recursive=True)]
    started = time.monotonic()
    await sup.stop()
    assert time.monotonic() - started < 5
    await wait_until(lambda: not [p for p in tree if _alive(p)], 2)  # exiting processes take a moment
    assert sup.state == "stopped"


async def test_no_restart_while_heartbeats_flow(tmp_path: Path) -> None:
    """Heartbeats every 0.2 s for 3 s: not one restart, never unhealthy (only local signals count)."""
    probe = make_probe(tmp_path / "data", interval=0.2)
    sup = _supervisor(probe, use_bwrap=False)
    sup.start()
    try:
        await wait_until(lambda: sup.state == "running", 15)
        await asyncio.sleep(3)
        assert sup.restarts == 0 and sup.state == "running"
        assert not any(state in ("unhealthy", "restarting") for _, state, _ in sup.history)
    finally:
        await sup.stop()


async def test_missing_program_is_failed_with_reason(tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "data")
    launch = probe.plan(False)
    launch.argv = [str(tmp_path / "no-such-python"), "x.py"]
    sup = WorkloadSupervisor("wl_x", launch, heartbeat_file=probe.heartbeat)
    sup.start()
    try:
        await wait_until(lambda: sup.state == "failed", 5)
        assert "no-such-python" in sup.reason
    finally:
        await sup.stop()


def test_a_restart_reason_names_the_exception_not_the_traceback() -> None:
    from aiot.agent.supervisor import error_summary

    assert (
        error_summary("platform_sdk.errors.ModelUnavailable: no replica answered")
        == "ModelUnavailable: no replica answered"
    )
    assert error_summary("RuntimeError: cannot start: missing setting") == "RuntimeError: cannot start: missing setting"
    for line in (
        '  File "main.py", line 3, in <module>',
        "Traceback (most recent call last):",
        "INFO:app:ok",
        "    raise ValueError('x')",
    ):
        assert error_summary(line) is None, line


async def test_failing_callbacks_show_degraded_with_the_error_line_and_recover_without_a_restart(
    tmp_path: Path,
) -> None:
    probe = make_probe(tmp_path / "data", interval=0.2, mode="failing")
    sup = _supervisor(probe, False, degraded_after=4)
    sup.start()
    try:
        await wait_until(lambda: sup.state == "degraded", 15)
        assert "callbacks in a row failed" in sup.reason, sup.reason
        assert sup.reason.endswith("last: ConnectionError: model comfort: no replica answered"), sup.reason
        (probe.heartbeat.parent / "recover").write_text("")
        await wait_until(lambda: sup.state == "running", 5)
        assert sup.restarts == 0  # a failing callback is reported, never "fixed" by a restart
    finally:
        await sup.stop()
