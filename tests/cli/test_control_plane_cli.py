"""The control plane as a real process, from the CLI's side: friendly errors and login, a lone service joining a
running platform. (Split from test_control_plane.py so the two halves run on different test workers.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from aiot.bus.embedded import running_nats_servers_using
from tests.conftest import free_port
from tests.support.processes import AIOT, platform_env, run_cli, start_platform

pytestmark = pytest.mark.slow


def test_cli_friendly_errors_and_login(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = platform_env(data_dir, port)
    down = run_cli(["status"], {**env, "AIOT_TOKEN": "aiot.tok_x.y"})
    assert down.returncode == 1 and "cannot reach the control plane" in down.stderr
    assert "Traceback" not in down.stderr
    bad_url = run_cli(["status"], {**env, "AIOT_SERVER": "ftp://nowhere"})
    assert bad_url.returncode == 1 and "bad server URL" in bad_url.stderr
    with start_platform(data_dir, port) as plane:
        plane.wait_healthy()
        wrong = run_cli(["login", "--username", "admin", "--password", "nope-nope"], env)
        assert wrong.returncode == 1 and "wrong username or password" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        not_logged_in = run_cli(["status"], env)
        assert not_logged_in.returncode == 1 and "aiot login" in not_logged_in.stderr
        ok = run_cli(["login", "--username", "admin", "--password", "admin-password-1"], env)
        assert ok.returncode == 0, ok.stderr
        status = run_cli(["status"], env)
        assert status.returncode == 0 and "nats: ok" in status.stdout and "api: ok" in status.stdout
        add = run_cli(["users", "add", "zoe", "--role", "ai_developer", "--password", "zoe-password"], env)
        assert add.returncode == 0, add.stderr
        listed = run_cli(["users", "ls", "--json"], env)
        assert '"zoe"' in listed.stdout
        dup = run_cli(["users", "add", "zoe", "--role", "ai_developer", "--password", "zoe-password"], env)
        assert dup.returncode == 1 and "already exists" in dup.stderr


def test_lone_service_joins_the_running_platform_and_second_up_is_refused(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = platform_env(data_dir, port)
    lone_missing = subprocess.run(
        [str(Path(AIOT)), "service", "run", "ingest"], env=env, capture_output=True, text=True, timeout=60
    )
    assert lone_missing.returncode == 1 and "no running platform owns" in lone_missing.stderr
    with start_platform(data_dir, port) as plane:
        plane.wait_healthy()
        lone_log = tmp_path / "lone.log"
        with lone_log.open("wb") as sink:
            lone = subprocess.Popen(
                [str(Path(AIOT)), "service", "run", "ingest"], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 30  # about 2 s on an idle machine
            while "service ingest started" not in lone_log.read_text() and time.monotonic() < deadline:
                assert lone.poll() is None, lone_log.read_text()
                time.sleep(0.2)
            assert lone.poll() is None, lone_log.read_text()
            assert len(running_nats_servers_using(data_dir / "nats" / "nats.conf")) == 1
        finally:
            lone.terminate()
            lone.wait(timeout=20)
        output = lone_log.read_text()
        assert "service ingest started" in output, output
        second = subprocess.run(
            [str(Path(AIOT)), "up"], env=platform_env(data_dir, free_port()), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1 and "belongs to a running platform process" in second.stderr
        assert "Traceback" not in second.stderr
        assert httpx.get(f"{plane.url}/healthz").json()["nats"] is True  # the first platform is unharmed
