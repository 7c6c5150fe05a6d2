"""The sandbox: a workload sees neither the agent's data dir nor other workloads; it writes its scratch."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from aiot.agent.sandbox import MIN_ADDRESS_SPACE, address_space_limit, bwrap_args, plan
from aiot.agent.supervisor import WorkloadSupervisor
from tests.agent.conftest import make_probe, needs_bwrap, wait_until


async def _verdict(probe, use_bwrap: bool) -> dict:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    sup = WorkloadSupervisor(
        probe.workload_id,
        probe.plan(use_bwrap),
        heartbeat_file=probe.heartbeat,
        on_output=lambda _w, _s, line: lines.append(line),
    )
    sup.start()
    try:
        await wait_until(lambda: any(line.startswith("VERDICT ") for line in lines), 15)
    finally:
        await sup.stop()
    return json.loads(next(line for line in lines if line.startswith("VERDICT "))[len("VERDICT ") :])


def _layout(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    data = tmp_path / "data"
    secret = data / "node.json"
    other = data / "workloads" / "wl_other" / "config.json"
    platform_db = tmp_path / "platform" / "aiot.db"
    for path, text in (
        (secret, "agent-secret"),
        (other, "other-workload-secret"),
        (platform_db, "SQLite db"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return data, {"secret": secret, "other": other, "db": platform_db}


@needs_bwrap
async def test_workload_cannot_read_agent_data_or_other_workloads(tmp_path: Path) -> None:
    data, paths = _layout(tmp_path)
    os.environ["AIOT_TEST_AGENT_ONLY"] = "must-not-leak"
    try:
        probe = make_probe(
            data, mode="probe", read=[str(paths["secret"]), str(paths["other"]), str(paths["db"])], write=[]
        )
        probe_paths = {
            "own_config": probe.config_path,
            "scratch": probe.run_dir / "out.txt",
            "package": probe.dir / "package" / "evil.py",
        }
        cfg = json.loads(probe.config_path.read_text())
        cfg["settings"]["read"].append(str(probe_paths["own_config"]))
        cfg["settings"]["write"] = [str(probe_paths["scratch"]), str(probe_paths["package"])]
        probe.config_path.write_text(json.dumps(cfg))
        spec = probe.spec.__class__(**{**probe.spec.__dict__, "hidden": (data, tmp_path / "platform")})
        probe.spec = spec
        verdict = await _verdict(probe, use_bwrap=True)
    finally:
        del os.environ["AIOT_TEST_AGENT_ONLY"]
    assert verdict[str(paths["secret"])].startswith("denied:FileNotFound")  # the data dir is an empty tmpfs
    assert verdict[str(paths["other"])].startswith("denied:FileNotFound")
    assert verdict[str(paths["db"])].startswith("denied:FileNotFound")
    assert verdict[str(probe_paths["own_config"])].startswith("read:{")  # its own config is visible
    assert verdict[str(probe_paths["scratch"])] == "written"
    assert (probe.run_dir / "out.txt").read_text() == "x"  # the scratch dir is the real one
    assert verdict[str(probe_paths["package"])].startswith("denied:")  # package is read-only
    assert not (probe.dir / "package" / "evil.py").exists()
    assert "AIOT_TEST_AGENT_ONLY" not in verdict["env"]
    assert "AIOT_WORKLOAD_CONFIG" in verdict["env"] and "PYTHONUNBUFFERED" in verdict["env"]
    assert verdict["rlimit_as"] == address_space_limit(256) == MIN_ADDRESS_SPACE


async def test_plain_process_gets_limits_and_a_clean_environment(tmp_path: Path) -> None:
    data, paths = _layout(tmp_path)
    probe = make_probe(data, mode="probe", read=[str(paths["secret"])], write=[str(data / "x")])
    verdict = await _verdict(probe, use_bwrap=False)
    assert verdict[str(paths["secret"])] == "read:agent-secret"  # no sandbox: only the limits and env apply
    assert set(verdict["env"]) <= {
        "AIOT_WORKLOAD_CONFIG",
        "PYTHONUNBUFFERED",
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "VIRTUAL_ENV",
        "LC_CTYPE",
    }
    assert verdict["rlimit_as"] == MIN_ADDRESS_SPACE


def test_limits_and_mount_order(tmp_path: Path) -> None:
    assert address_space_limit(4096) == 4096 * 4 * 1024 * 1024
    assert address_space_limit(None) == MIN_ADDRESS_SPACE
    probe = make_probe(tmp_path / "data")
    args = bwrap_args(probe.spec, "/usr/bin/bwrap")
    hide = args.index(str(tmp_path / "data"))
    bind = args.index(str(probe.dir))
    assert args[hide - 1] == "--tmpfs" and bind > hide  # binds come after the cover, or they would be hidden
    assert "--die-with-parent" in args and "--unshare-pid" in args and "--unshare-net" not in args
    launch = plan(probe.spec, use_bwrap=False)
    assert launch.argv[0] == probe.spec.argv[0] and not launch.sandboxed
    assert (
        launch.limits["RLIMIT_NOFILE"] <= resource.getrlimit(resource.RLIMIT_NOFILE)[1] or os.geteuid() == 0
    )


@pytest.mark.skipif(os.path.exists("/usr/bin/bwrap"), reason="only meaningful where bwrap is missing")
def test_requiring_bwrap_without_it_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="bwrap"):
        plan(make_probe(tmp_path / "data").spec, use_bwrap=True)
