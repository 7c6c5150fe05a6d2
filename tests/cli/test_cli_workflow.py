"""The admin/developer CLI against a running platform: push folders, register devices, run simulators."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support.processes import platform_env, run_cli, start_platform

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _ok(args: list[str], env: dict[str, str]) -> str:
    result = run_cli(args, env)
    assert result.returncode == 0, f"aiot {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_cli_push_register_and_simulate(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = platform_env(data_dir, port)
    with start_platform(data_dir, port) as plane:
        plane.wait_healthy()
        _ok(["login", "--username", "admin", "--password", "admin-password-1"], env)
        for path in sorted((EXAMPLES / "device-types").glob("*.json")):
            _ok(["device-type", "add", str(path)], env)
        out = _ok(["model", "push", str(EXAMPLES / "models" / "comfort")], env)
        assert "comfort" in out and "stored as mdl_" in out
        again = _ok(["model", "push", str(EXAMPLES / "models" / "comfort")], env)  # idempotent
        assert "stored as mdl_" in again
        _ok(["model", "push", str(EXAMPLES / "models" / "face-detector")], env)
        _ok(["app", "push", str(EXAMPLES / "apps" / "smart-classroom")], env)
        models = json.loads(_ok(["model", "ls", "--json"], env))
        assert {m["name"] for m in models} == {"comfort", "face-detector"}
        download = tmp_path / "comfort.zip"
        _ok(["model", "download", "comfort", "-o", str(download)], env)
        assert download.stat().st_size > 1000

        bad = run_cli(["app", "push", str(EXAMPLES / "apps" / "no-such-app")], env)
        assert bad.returncode == 1 and "does not exist" in bad.stderr

        _ok(["location", "add", "Room 101", "--kind", "school", "--tz", "Asia/Kolkata"], env)
        bad_tz = run_cli(["location", "add", "Mars", "--tz", "Mars/Olympus"], env)
        assert bad_tz.returncode == 1 and "unknown time zone" in bad_tz.stderr
        added = _ok(["device", "add", "thermo", "--type", "temperature", "--location", "Room 101"], env)
        assert "password:" in added and "aiot/dev/dev_" in added
        _ok(["device", "add", "fan", "--type", "fan", "--location", "Room 101"], env)
        devices = json.loads(_ok(["device", "ls", "--json"], env))
        thermo = next(d["id"] for d in devices if d["name"] == "thermo")
        fan = next(d["id"] for d in devices if d["name"] == "fan")

        sim = run_cli(["sim", "run", "--location", "Room 101", "--duration", "4"], env)
        assert sim.returncode == 0, sim.stderr
        assert "simulating 2 devices" in sim.stdout
        latest = json.loads(_ok(["device", "latest", thermo], env))
        assert isinstance(latest["latest"]["values"]["temperature"], float)
        assert latest["presence"]["status"] in ("online", "offline")
        history = json.loads(_ok(["device", "history", thermo, "--limit", "50", "-o", "json"], env))
        assert len(history) >= 2
        refused = run_cli(["device", "send", fan, "on"], env)  # simulator stopped: nobody acknowledges
        assert refused.returncode == 1 and "did not acknowledge" in refused.stderr

        # Location grants: the end user sees Room 101's devices only once the admin granted it.
        _ok(["users", "add", "eve", "--role", "end_user", "--password", "eve-password-1"], env)
        assert "eve may now see" in _ok(["location", "grant", "Room 101", "eve"], env)
        grants = json.loads(_ok(["location", "grants", "--user", "eve", "--json"], env))
        assert [(g["location"], g["user"]) for g in grants] == [("Room 101", "eve")]
        assert "no longer sees" in _ok(["location", "revoke", "Room 101", "eve"], env)
        assert json.loads(_ok(["location", "grants", "Room 101", "--json"], env)) == []

        # The running platform's data dir is private (it was created under the test's umask, usually 022).
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        private = [data_dir / n for n in ("aiot.db", "aiot.db-wal", "aiot.db-shm", "secret.key")] + [
            data_dir / "nats" / "platform-credentials.json"
        ]
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in private if p.exists()}
        assert {"aiot.db", "aiot.db-wal", "platform-credentials.json"} <= set(modes), modes
        assert set(modes.values()) == {"0o600"}, modes
        # Nodes: a two-use join token, a node joins with it, an admin revokes the node, its token is refused.
        token = _ok(["node", "token", "--uses", "2", "--ttl-minutes", "5"], env).strip()
        assert token.startswith("aiotjoin.")
        joined = httpx.post(
            f"{plane.url}/api/v1/agent/register",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "cli-node", "capacity": {"cpu": 1, "memory_mb": 512}},
            timeout=30,
        )
        assert joined.status_code == 200, joined.text
        assert "revoked" in _ok(["node", "revoke", "cli-node"], env)
        node_auth = {"Authorization": f"Bearer {joined.json()['node_token']}"}
        assert httpx.get(f"{plane.url}/api/v1/agent/assignments", headers=node_auth, timeout=30).status_code == 401
