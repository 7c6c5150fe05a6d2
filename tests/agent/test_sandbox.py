"""The sandbox: a workload sees neither the agent's data dir nor other workloads; it writes its scratch."""

from __future__ import annotations

import json
import os
import resource
from dataclasses import replace
from pathlib import Path

import pytest

from aiot.agent.sandbox import (
    MIN_ADDRESS_SPACE,
    Identity,
    address_space_limit,
    bwrap_args,
    chown_tree,
    plan,
    world_reachable,
)
from aiot.agent.supervisor import WorkloadSupervisor
from aiot.agent.uids import UidPool
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
    data = tmp_path / "data"
    covers = [i for i, a in enumerate(args[:-1]) if a == "--tmpfs" and Path(args[i + 1]) in (data, *data.parents)]
    bind = args.index(str(probe.dir))
    assert covers and bind > max(covers)  # binds come after the cover, or they would be hidden
    assert args[args.index("/root") - 1] == "--tmpfs" and args[args.index("/home") - 1] == "--tmpfs"
    assert "--die-with-parent" in args and "--unshare-pid" in args and "--unshare-net" not in args
    launch = plan(probe.spec, use_bwrap=False)
    assert launch.argv[0] == probe.spec.argv[0] and not launch.sandboxed
    assert launch.limits["RLIMIT_NOFILE"] <= resource.getrlimit(resource.RLIMIT_NOFILE)[1] or os.geteuid() == 0


@pytest.mark.skipif(os.path.exists("/usr/bin/bwrap"), reason="only meaningful where bwrap is missing")
def test_requiring_bwrap_without_it_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="bwrap"):
        plan(make_probe(tmp_path / "data").spec, use_bwrap=True)


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="a uid switch needs a root-run agent")
async def test_root_run_agent_workload_is_unprivileged_and_sees_no_host_secrets(data_outside_tmp: Path) -> None:
    """Issue 14 item 4: on main a root-run agent's workload was uid 0 and read /etc/shadow and listed /root."""
    tmp_path = data_outside_tmp
    data, paths = _layout(tmp_path)
    secret_probe = [str(paths["secret"]), str(paths["db"]), "/etc/shadow", "/etc/gshadow"]
    probe = make_probe(
        data, mode="probe", read=secret_probe, write=["/etc/aiot-owned", "/root/x"], list=["/root", "/home", str(data)]
    )
    cfg = json.loads(probe.config_path.read_text())
    cfg["settings"]["read"].append(str(probe.config_path))
    probe.config_path.write_text(json.dumps(cfg))
    probe.config_path.chmod(0o600)
    user = UidPool(salt=str(data)).acquire(probe.workload_id)
    chown_tree(probe.dir, user.uid, user.gid)  # what the agent does: its folder (config.json 0600) is its own
    probe.spec = replace(probe.spec, hidden=(data, tmp_path / "platform"), user=user)
    verdict = await _verdict(probe, use_bwrap=True)

    assert verdict["uids"] == [user.uid] * 3 and verdict["gids"] == [user.gid] * 3 and user.uid != 0
    assert verdict["groups"] in ([], [user.gid])
    status = verdict["status"]
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    for path in secret_probe:
        assert verdict[path].startswith("denied:"), (path, verdict[path])
    assert verdict["ls /root"] == [] or all(n in (".pyenv",) for n in verdict["ls /root"]), verdict["ls /root"]
    assert verdict["ls /home"] == []
    assert verdict["/etc/aiot-owned"].startswith("denied:") and verdict["/root/x"].startswith("denied:")
    assert verdict[str(probe.config_path)].startswith("read:{")  # its own 0600 config is readable by its uid
    assert verdict[f"ls {data}"] == ["workloads"]  # only the way to its own folder; node.json is not there
    assert verdict[str(paths["secret"])] == verdict[str(paths["db"])] == "denied:FileNotFoundError"


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid switch needs a root-run agent")
async def test_unsandboxed_plain_process_still_drops_root(tmp_path: Path) -> None:
    data, paths = _layout(tmp_path)
    probe = make_probe(data, mode="probe", read=["/etc/shadow"], write=[])
    user = UidPool(salt=str(data)).acquire(probe.workload_id)
    chown_tree(probe.dir, user.uid, user.gid)
    probe.spec = replace(probe.spec, user=user)
    if not world_reachable(probe.spec.interpreter):  # e.g. pyenv under /root: only a sandbox can bind it
        with pytest.raises(RuntimeError, match="not readable by workload uids"):
            probe.plan(False)
        return
    verdict = await _verdict(probe, use_bwrap=False)
    assert verdict["uids"] == [user.uid] * 3 and verdict["/etc/shadow"].startswith("denied:")


def test_uid_pool_gives_each_workload_its_own_uid() -> None:
    pool = UidPool(base=2_000_000, count=4, salt="x")
    first = pool.acquire("wl_a")
    assert pool.acquire("wl_a") == first  # a second generation of the same workload shares its uid
    others = {pool.acquire("wl_b").uid, pool.acquire("wl_c").uid}
    assert len(others | {first.uid}) == 3 and pool.build.uid == 2_000_000 not in others | {first.uid}
    with pytest.raises(RuntimeError, match="in use"):
        pool.acquire("wl_d")
    pool.release("wl_b")
    assert pool.acquire("wl_d").uid not in {first.uid, pool.build.uid}
    with pytest.raises(ValueError):
        Identity(0, 0)
