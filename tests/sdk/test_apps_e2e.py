"""Apps through `python -m platform_sdk.app_runner`: a tiny app for run()/callbacks/heartbeat semantics, and
the three sample apps in examples/apps, unchanged, against real model replicas and fake controllers."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .conftest import Replicas
from .harness import COMFORT_ID, EXAMPLES, FACE_ID, Platform
from .workloads import Proc, binding, bindings, copy_package, free_port, start_app

pytestmark = pytest.mark.slow

TINY_APP = """
import json, time
from platform_sdk import get_logger, on_reading, run

log = get_logger()

@on_reading("temperature")
def on_temperature(reading):
    value = reading.values["temperature"]
    print(json.dumps({"temperature": value, "device": reading.device_id}), flush=True)
    log.info("temperature %s", value)
    if value == 77:
        time.sleep(3600)  # a hung callback

@on_reading("light")
async def on_light(reading):  # async callbacks work too
    print(json.dumps({"light": reading.values["illuminance"]}), flush=True)
    raise RuntimeError("boom")  # logged, the app goes on

def main():
    print(json.dumps({"started": True}), flush=True)
    run()
"""


def _wait(predicate, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s" + (f":\n{proc.output()}" if proc else ""))


def _seq(path: Path) -> int:
    try:
        return json.loads(path.read_text())["seq"]
    except (OSError, ValueError):
        return -1


def test_run_callbacks_logs_and_heartbeat_until_hung(platform: Platform, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "app.py").write_text(TINY_APP)
    manifest = {
        "name": "tiny",
        "version": "1.0.0",
        "kind": "backend",
        "entrypoint": "app:main",
        "context": {"sensors": {"temperature": {"device_type": "temperature"}, "light": {"device_type": "light"}}},
    }
    logs = platform.run(platform.collect("aiot.logs.wl_app"))
    work = tmp_path / "work"
    proc = start_app(
        platform,
        work,
        "wl_app",
        pkg,
        manifest,
        interval=0.2,
        hang_after=1.0,
        sensors=bindings(temperature=["dev_temp01"], light=["dev_light01"]),
    )
    try:
        proc.next_json(20, lambda d: d.get("started"))
        hb = work / "heartbeat"
        first = _seq(hb)
        _wait(lambda: _seq(hb) >= first + 3, 5, "heartbeat file advancing", proc)

        def publish_until(device: str, values: dict, key: str, expected: float) -> None:
            for _ in range(50):
                platform.run(platform.publish_reading(device, values))
                try:
                    proc.next_json(0.2, lambda d: d.get(key) == expected)
                    return
                except AssertionError:
                    continue
            raise AssertionError(f"callback never saw {values}:\n{proc.output()}")

        publish_until("dev_temp01", {"temperature": 21.5}, "temperature", 21.5)
        publish_until("dev_light01", {"illuminance": 300}, "light", 300)
        _wait(lambda: any(b"temperature 21.5" in m.data for m in logs), 5, "app log record", proc)
        _wait(lambda: any(b"boom" in m.data and b"Traceback" in m.data for m in logs), 5, "callback error", proc)
        record = json.loads(next(m.data for m in logs if b"temperature 21.5" in m.data))
        assert record["logger"] == "tiny" and record["app_instance_id"] == "ins_wl_app"

        # A callback that hangs: the heartbeat file must stop advancing (the agent then restarts the app)
        publish_until("dev_temp01", {"temperature": 77}, "temperature", 77)
        hung_at = time.monotonic()
        _wait(lambda: time.time() - hb.stat().st_mtime > 0.8, 8, "heartbeat file going stale", proc)
        assert time.monotonic() - hung_at < 5  # hang_after (1 s) + 3 intervals + slack for a busy machine
        stale_seq = _seq(hb)
        time.sleep(0.5)
        assert _seq(hb) == stale_seq and proc.popen.poll() is None  # alive, but no longer beating
    finally:
        proc.popen.kill()
        proc.popen.wait(5)


def test_smart_classroom_sample(platform: Platform, replicas: Replicas, tmp_path: Path) -> None:
    pkg = copy_package("smart-classroom", "apps", tmp_path)
    manifest = json.loads((pkg / "app.json").read_text())
    platform.run(platform.publish_reading("dev_temp01", {"temperature": 31.0}))
    platform.run(platform.publish_reading("dev_light01", {"illuminance": 120.0}))
    time.sleep(0.3)  # ingest stores the latest values the app starts from
    fans = [platform.controllers[d] for d in ("dev_fan01", "dev_ac01", "dev_lamp01")]
    marks = [len(f.received) for f in fans]
    proc = start_app(
        platform,
        tmp_path / "work",
        "wl_classroom",
        pkg,
        manifest,
        models={"comfort": binding(COMFORT_ID, "comfort")},
        sensors=bindings(temperature=["dev_temp01"], light=["dev_light01"]),
        controllers=bindings(fan=["dev_fan01"], ac=["dev_ac01"], lamp=["dev_lamp01"]),
        settings={"min_interval_s": 0.2},
    )
    try:
        _wait(
            lambda: all(any(r["command"] == "on" for r in f.received[m:]) for f, m in zip(fans, marks, strict=True)),
            20,
            "fan, AC and lamp switched on",
            proc,
        )
        marks = [len(f.received) for f in fans]
        for _ in range(40):  # cool, bright room: everything off
            platform.run(platform.publish_reading("dev_temp01", {"temperature": 20.0}))
            platform.run(platform.publish_reading("dev_light01", {"illuminance": 900.0}))
            if all(any(r["command"] == "off" for r in f.received[m:]) for f, m in zip(fans, marks, strict=True)):
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"controllers not switched off:\n{proc.output()}")
    finally:
        proc.stop()


def test_intruder_alert_sample(platform: Platform, replicas: Replicas, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    pkg = copy_package("intruder-alert", "apps", tmp_path)
    manifest = json.loads((pkg / "app.json").read_text())
    alarm, display = platform.controllers["dev_alarm01"], platform.controllers["dev_display01"]
    mark = len(alarm.received)
    proc = start_app(
        platform,
        tmp_path / "work",
        "wl_intruder",
        pkg,
        manifest,
        models={"detector": binding(FACE_ID, "face-detector")},
        sensors=bindings(camera=["dev_cam01"]),
        controllers=bindings(alarm=["dev_alarm01"], display=["dev_display01"]),
    )
    try:
        for _ in range(60):
            platform.run(platform.publish_frame("dev_cam01", jpeg))
            if any(r["command"] == "on" for r in alarm.received[mark:]):
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"alarm never switched on:\n{proc.output()}")
        _wait(lambda: display.state.get("text") == "Intruder detected", 5, "display message", proc)
        assert alarm.state["power"] is True
    finally:
        proc.stop()


def test_smart_home_sample(platform: Platform, tmp_path: Path) -> None:
    """The sample web app, reached the way the gateway reaches it (with the instance's gateway token); the
    same port refuses every connection without that token, whatever the path (attack: skip the gateway's
    owner check by calling the app's port on its node)."""
    pkg = copy_package("smart-home", "apps", tmp_path)
    manifest = json.loads((pkg / "app.json").read_text())
    port = free_port()
    fan = platform.controllers["dev_fan01"]
    mark = len(fan.received)
    token = "gateway-token-of-ins_wl_home"
    proc = start_app(
        platform,
        tmp_path / "work",
        "wl_home",
        pkg,
        manifest,
        sensors=bindings(temperature=["dev_temp01"], light=["dev_light01"]),
        controllers=bindings(fan=["dev_fan01"], ac=["dev_ac01"], lamp=["dev_lamp01"]),
        settings={"title": "Test home"},
        serve={"host": "127.0.0.1", "port": port, "token": token},
    )
    base = f"http://127.0.0.1:{port}"
    gw = httpx.Client(base_url=base, headers={"X-AIOT-Gateway-Token": token}, timeout=5)
    try:
        _wait(lambda: _get(f"{base}/healthz", gw) == 200, 20, "smart-home serving", proc)
        for _ in range(40):
            platform.run(platform.publish_reading("dev_temp01", {"temperature": 22.75}))
            state = gw.get("/api/state").json()
            if (state["readings"].get("temperature") or {}).get("value") == 22.75:
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"reading never shown:\n{proc.output()}")
        page = gw.get("/")
        assert "Test home" in page.text and "22.75" in page.text
        for path in ("/", "/api/state", "/healthz"):  # no token, a wrong one, or a guessed prefix: refused
            assert httpx.get(base + path, timeout=5).status_code == 403
            assert httpx.get(base + path, headers={"X-AIOT-Gateway-Token": token[:-1]}, timeout=5).status_code == 403
        refused = httpx.post(f"{base}/control", data={"alias": "fan", "command": "off"}, timeout=5)
        assert refused.status_code == 403 and "gateway" in refused.text
        assert len(fan.received) == mark  # the refused POST never reached the app
        resp = gw.post("/control", data={"alias": "fan", "command": "off"})
        assert resp.status_code == 303
        assert fan.received[mark:] and fan.received[-1]["command"] == "off"
        assert gw.get("/api/state").json()["controllers"]["fan"]["power"] is False
        os.kill(proc.popen.pid, signal.SIGTERM)  # graceful stop: run() returns, the process exits
        proc.popen.wait(10)
        assert proc.popen.returncode == 0, proc.output()
    finally:
        gw.close()
        proc.stop()


def test_web_app_without_a_gateway_token_does_not_start(platform: Platform, tmp_path: Path) -> None:
    """A config with a port but no token is a fault, never an open port (`serve.open` is for local runs)."""
    pkg = copy_package("smart-home", "apps", tmp_path)
    manifest = json.loads((pkg / "app.json").read_text())
    proc = start_app(
        platform, tmp_path / "work", "wl_home", pkg, manifest, serve={"host": "127.0.0.1", "port": free_port()}
    )
    try:
        assert proc.popen.wait(30) != 0
        assert "serve.token" in proc.output()
    finally:
        proc.stop()


def _get(url: str, client: httpx.Client | None = None) -> int:
    try:
        return (client.get(url, timeout=1) if client else httpx.get(url, timeout=1)).status_code
    except httpx.HTTPError:
        return 0


assert EXAMPLES.is_dir()


SLOW_APP = """
import json, time
from platform_sdk import delivery_stats, on_reading, run

@on_reading("temperature")
def on_temperature(reading):
    print(json.dumps({"seen": reading.values["temperature"], "stats": delivery_stats()}), flush=True)
    time.sleep(0.3)

def main():
    print(json.dumps({"started": True}), flush=True)
    run()
"""


@pytest.mark.parametrize("policy", ["every", "latest"])
def test_delivery_policy_every_or_latest_from_app_json(platform: Platform, tmp_path: Path, policy: str) -> None:
    """A burst of 10 readings at a callback that takes 0.3 s: "every" sees all 10 in order; "latest" sees at most
    the first and then only the newest, and counts the ones in between as coalesced (delivered by the policy)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "app.py").write_text(SLOW_APP)
    sensor = {"device_type": "temperature", "delivery": policy}
    manifest = {"name": "slow", "version": "1.0.0", "kind": "backend", "entrypoint": "app:main",
                "context": {"sensors": {"temperature": sensor}}}  # fmt: skip
    proc = start_app(platform, tmp_path / "work", "wl_app", pkg, manifest, sensors=bindings(temperature=["dev_temp01"]))
    try:
        proc.next_json(20, lambda d: d.get("started"))
        for _ in range(50):  # the subscription is up once a reading comes through
            platform.run(platform.publish_reading("dev_temp01", {"temperature": 0}))
            try:
                proc.next_json(0.3, lambda d: d.get("seen") == 0)
                break
            except AssertionError:
                continue
        time.sleep(0.5)
        for value in range(1, 11):
            platform.run(platform.publish_reading("dev_temp01", {"temperature": value}))
        last = proc.next_json(15, lambda d: d.get("seen") == 10)
        time.sleep(0.5)
        printed = [json.loads(line) for line in proc.lines if line.startswith("{")]
        seen = [d["seen"] for d in printed if d.get("seen")]
        if policy == "every":
            assert seen == list(range(1, 11)) and last["stats"]["coalesced"] == 0
        else:
            # the newest always arrives; what came while a callback ran waited as one (the first of the burst
            # may itself have been coalesced when a warm-up reading was still being handled)
            assert seen[-1] == 10 and len(seen) <= 2, seen
            assert last["stats"]["coalesced"] >= 10 - len(seen) and last["stats"]["dropped"] == 0
    finally:
        proc.popen.kill()
        proc.popen.wait(5)
