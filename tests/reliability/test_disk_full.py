"""Disk full on the data directory: a clear error, no corruption, recovery when space returns.

The data directory is a small tmpfs (root mounts it; the test skips, saying why, where mounting is not allowed).
`aiot up` runs on it with small JetStream limits (`AIOT_HISTORY_MAX_MB`, `AIOT_LOG_STREAM_MAX_MB`); the defaults
reserve 2 GiB for the readings history, and the first test checks that such a start-up fails with one line
naming the setting to lower, not a traceback.

Then: acknowledged work (users, a model upload, a device type, a location, a device), a filler file until the
disk is full, writes that must answer a clear JSON error (507) while reads keep working and the process stays
up, the filler deleted and the same writes succeeding without a restart, and finally a restart on the same
data directory: SQLite's `integrity_check` is ok and everything acknowledged is there, byte for byte.

The control plane's own output goes to a file outside the tmpfs (as it would to a journal), so that a full
data disk does not also swallow the log the test reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from tests.conftest import free_port
from tests.support.processes import AIOT, RunningPlatform, platform_env

from .conftest import ADMIN_PASSWORD, EXAMPLES, USER_PASSWORD, Api, wait_for, zipped

pytestmark = pytest.mark.slow

DISK_MB = 80
SMALL_LIMITS = {"AIOT_HISTORY_MAX_MB": "8", "AIOT_LOG_STREAM_MAX_MB": "8", "AIOT_MAX_UPLOAD_MB": "8"}
ZIP = {"Content-Type": "application/zip"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A DISK_MB tmpfs mounted on a fresh directory; unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a small tmpfs, which needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}); the disk-full test needs it")
    try:
        yield mount_point
    finally:
        for log in mount_point.glob("*/nats/nats.log"):  # kept for a failure's post-mortem
            with contextlib.suppress(OSError):
                shutil.copy(log, tmp_path / "nats.log")
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@contextlib.contextmanager
def _platform(data_dir: Path, log_path: Path, port: int, **env: str) -> Iterator[RunningPlatform]:
    """`aiot up` on `data_dir` with its output in `log_path` (off the small disk); SIGTERM when the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            ["nice", "-n", "5", AIOT, "up"],
            env=platform_env(data_dir, port, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield RunningPlatform(proc, port, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _fill(path: Path) -> int:
    """Write `path` until the disk refuses (ENOSPC); bytes written."""
    block = os.urandom(1 << 20)
    written = 0
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        with contextlib.suppress(OSError):  # the last few KiB
            while True:
                written += out.write(block[:4096])
    return written


def _second_model(work: Path) -> bytes:
    """The comfort sample under another version: a different archive, so the upload must be stored anew."""
    folder = work / "comfort"
    shutil.copytree(EXAMPLES / "models" / "comfort", folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["version"] = "1.0.1"
    (folder / "model.json").write_text(json.dumps(manifest))
    return zipped(folder, work)


def _disk_full_error(response: httpx.Response, what: str) -> dict:
    assert response.status_code == 507, f"{what} on a full disk: {response.status_code} {response.text[:500]}"
    body = response.json()["error"]
    assert body["code"] == "insufficient_storage", body
    assert "disk" in body["message"] and "full" in body["message"], body
    return body


def test_a_disk_too_small_for_the_stream_limits_fails_with_one_line_naming_the_setting(
    small_disk: Path, tmp_path: Path
) -> None:
    data_dir = small_disk / "data"
    data_dir.mkdir()
    started = time.monotonic()
    done = subprocess.run(
        ["nice", "-n", "5", AIOT, "up"],
        env=platform_env(data_dir, free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    print(
        f"\n[disk full] default limits on a {DISK_MB} MiB disk: exit {done.returncode} after "
        f"{time.monotonic() - started:.1f}s: {errors}"
    )
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    assert len(errors) == 1, output
    assert "AIOT_HISTORY_MAX_MB" in errors[0] and "2048" in errors[0], errors[0]


def test_disk_full_clear_errors_no_corruption_and_recovery(small_disk: Path, tmp_path: Path) -> None:
    data_dir = small_disk / "data"
    log_path = tmp_path / "aiot-up.log"
    port = free_port()
    api = Api(f"http://127.0.0.1:{port}")
    comfort = zipped(EXAMPLES / "models" / "comfort", tmp_path)
    comfort_2 = _second_model(tmp_path)
    t0 = time.monotonic()
    with _platform(data_dir, log_path, port, **SMALL_LIMITS) as plane:
        plane.wait_healthy(60)
        # ---- acknowledged work
        api.login("admin", ADMIN_PASSWORD)
        api.call("POST", "/users", json={"username": "ada", "password": USER_PASSWORD, "role": "ai_developer"})
        api.login("ada", USER_PASSWORD)
        model_id = api.call("POST", "/models", "ada", content=comfort, headers=ZIP).json()["id"]
        api.call("POST", "/device-types", content=(EXAMPLES / "device-types" / "temperature.json").read_bytes())
        api.call("POST", "/locations", json={"name": "Lab", "kind": "school", "timezone": "UTC"})
        device = api.call(
            "POST", "/devices", json={"name": "t-0", "device_type": "temperature", "location": "Lab"}
        ).json()
        api.get("/users")
        api.get("/models", "ada")  # every token used once: its first-use stamp is written while there is room
        _publish(data_dir, device, range(20))
        history_before_fill = wait_for("20 readings in the history", lambda: _history(api, device, 20), 30)

        # ---- the disk fills up
        filler = small_disk / "filler"
        filled = _fill(filler)
        free = shutil.disk_usage(small_disk).free
        print(
            f"\n[disk full] filler {filled / 2**20:.1f} MiB, {free} bytes left "
            f"({time.monotonic() - t0:.1f}s since start)"
        )
        assert free < 64 * 1024

        started = time.monotonic()
        upload = api.call("POST", "/models", "ada", ok=(), timeout=30, content=comfort_2, headers=ZIP)
        body = _disk_full_error(upload, "a model upload")
        user = api.call(
            "POST", "/users", ok=(), timeout=30, json={"username": "bob", "password": USER_PASSWORD, "role": "end_user"}
        )
        user_body = _disk_full_error(user, "a user creation")
        print(
            f"[disk full] upload -> {upload.status_code} {body['message']!r}; user -> {user.status_code} "
            f"{user_body['message']!r} ({time.monotonic() - started:.1f}s for both)"
        )
        # reads keep working, with the tokens issued before
        assert {m["id"] for m in api.get("/models", "ada")} == {model_id}
        assert "bob" not in {u["username"] for u in api.get("/users")}
        assert api.call("GET", f"/models/{model_id}/download", "ada").content == comfort
        assert api.get(f"/devices/{device['id']}")["name"] == "t-0"
        _publish(data_dir, device, range(20, 40))  # ingest's stores into the history stream hit the full disk
        time.sleep(1)
        assert _history(api, device, 0)[:20] == history_before_fill
        assert httpx.get(f"{plane.url}/healthz", timeout=5).status_code == 200
        assert plane.proc.poll() is None, plane.log()

        # ---- space returns: the same writes succeed, no restart
        filler.unlink()
        recovered = time.monotonic()
        model_2 = wait_for(
            "the upload to succeed once space returned", lambda: _retry_upload(api, comfort_2), timeout=30, every=0.5
        )
        print(f"[disk full] upload accepted again {time.monotonic() - recovered:.1f}s after the filler went")
        api.call("POST", "/users", json={"username": "bob", "password": USER_PASSWORD, "role": "end_user"})
        api.login("bob", USER_PASSWORD)
        api.login("ada", USER_PASSWORD)
        assert api.call("GET", f"/models/{model_2}/download", "ada").content == comfort_2
        # The platform restarts its nats-server once space is back (a stream whose write failed takes nothing
        # more until then); devices publish at most once, so a reading sent during that restart may be lost.
        value = iter(range(40, 1000))

        def reading_stored() -> bool:
            sent = next(value)
            _publish(data_dir, device, range(sent, sent + 1))
            time.sleep(0.5)
            return sent in _values(_history(api, device, 0) or [])

        wait_for("a new reading to reach the history", reading_stored, timeout=30, every=0.5)
        history = _history(api, device, 0)
        assert history[:20] == history_before_fill
        assert plane.proc.poll() is None, plane.log()

    # ---- stopped: the database is sound; started again on the same data directory: everything is there
    with sqlite3.connect(data_dir / "aiot.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert {"ada", "bob"} <= {row[0] for row in db.execute("SELECT username FROM users")}
    db.close()
    with _platform(data_dir, log_path, port, **SMALL_LIMITS) as plane:
        plane.wait_healthy(60)
        api.tokens.clear()
        api.login("admin", ADMIN_PASSWORD)
        api.login("ada", USER_PASSWORD)
        api.login("bob", USER_PASSWORD)
        assert {m["id"] for m in api.get("/models", "ada")} == {model_id, model_2}
        for ref, archive in ((model_id, comfort), (model_2, comfort_2)):
            got = api.call("GET", f"/models/{ref}/download", "ada").content
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(archive).hexdigest()
        assert api.get(f"/devices/{device['id']}")["name"] == "t-0"
        # The NATS store: every stored reading, unchanged and in order. A reading whose write failed (the disk full,
        # or the server restarting once space returned) is written again by ingest for up to 30 s, so it may have
        # landed after `history` was read (seen in CI, for readings sent while the disk was full): more is allowed,
        # but only readings this test sent after the disk filled, each once.
        final = _history(api, device, 0)
        assert [r for r in final if r in history] == history
        extra = [r for r in final if r not in history]
        assert _values(extra) <= set(range(20, 1000)), extra
        assert len(_values(final)) == len(final), final  # none stored twice
    print(f"[disk full] whole run {time.monotonic() - t0:.1f}s")


def _retry_upload(api: Api, archive: bytes) -> str | None:
    response = api.call("POST", "/models", "ada", ok=(), timeout=30, content=archive, headers=ZIP)
    if response.status_code == 201:
        return response.json()["id"]
    # 507 until the space is seen, 503 while the platform restarts its nats-server
    assert response.status_code in (503, 507), f"{response.status_code} {response.text[:300]}"
    return None


def _publish(data_dir: Path, device: dict, values: range) -> None:
    """Publish temperature readings as the device itself (its own NATS credentials)."""
    connect = device["connect"]

    async def run() -> None:
        state = json.loads((data_dir / "nats" / "state.json").read_text())
        nc = await nats.connect(
            f"nats://127.0.0.1:{state['client_port']}",
            user=connect["username"],
            password=connect["password"],
            connect_timeout=5,
            max_reconnect_attempts=3,
        )
        try:
            for value in values:
                await nc.publish(
                    connect["subjects"]["data"], json.dumps({"ts": time.time(), "temperature": value}).encode()
                )
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(run())


def _history(api: Api, device: dict, at_least: int) -> list[dict] | None:
    """The device's stored readings, oldest first (None while fewer than `at_least`, or while the bus restarts)."""
    response = api.call("GET", f"/devices/{device['id']}/history?limit=1000", ok=())
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    records = response.json()
    return records if len(records) >= at_least else None


def _values(records: list[dict]) -> set[int]:
    return {r["values"]["temperature"] for r in records}
