"""Sensors, controllers and logs end to end: readings go device -> ingest -> `aiot.readings.<id>` -> the
SDK in a separate workload process; commands go SDK -> fake controller -> state ack -> SDK."""

from __future__ import annotations

import io
import json
import time

import pytest

from .harness import Platform
from .workloads import Driver

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def _read_while_publishing(driver: Driver, platform: Platform, alias: str, publish) -> dict:
    """Ask for the next reading, publishing until it arrives (the subscription starts with the first read)."""
    driver.send("read", alias=alias, timeout=15.0)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        platform.run(publish())
        try:
            return driver.next_json(0.3, lambda d: "ok" in d)
        except AssertionError:
            continue
    raise AssertionError(f"no reading of {alias} reached the workload:\n{driver.output()}")


def test_latest_and_read_json_sensor(driver: Driver, platform: Platform) -> None:
    platform.run(platform.publish_reading("dev_temp01", {"temperature": 23.5}))
    _wait(lambda: platform.ingest.accepted >= 1, what="ingest stored the reading")
    latest = driver.ask("latest", alias="temperature")
    assert latest["ok"], latest
    assert latest["result"]["device_id"] == "dev_temp01" and latest["result"]["values"] == {"temperature": 23.5}
    assert driver.ask("latest", alias="spare")["result"] is None  # nothing stored yet
    answer = _read_while_publishing(
        driver,
        platform,
        "temperature",
        lambda: platform.publish_reading("dev_temp01", {"temperature": 30.25}),
    )
    assert answer["ok"], answer
    assert answer["result"]["values"] == {"temperature": 30.25} and not answer["result"]["is_frame"]


def test_camera_frame_is_decoded_to_numpy(driver: Driver, platform: Platform) -> None:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=85)
    jpeg = buf.getvalue()
    answer = _read_while_publishing(driver, platform, "camera", lambda: platform.publish_frame("dev_cam01", jpeg))
    assert answer["ok"], answer
    assert answer["result"]["is_frame"] and answer["result"]["shape"] == [512, 512, 3]


def test_controller_send_returns_acknowledged_state(driver: Driver, platform: Platform) -> None:
    fan = platform.controllers["dev_fan01"]
    answer = driver.ask("send", alias="fan", command="on")
    assert answer == {"ok": True, "result": {"power": True, "speed": 1}}
    answer = driver.ask("send", alias="fan", command="set_speed", args={"speed": 3})
    assert answer["result"] == {"power": True, "speed": 3}
    assert [r["command"] for r in fan.received[-2:]] == ["on", "set_speed"]
    assert fan.received[-1]["args"] == {"speed": 3} and fan.received[-1]["cmd_id"].startswith("cmd_")
    both = driver.ask("send", alias="pair", command="on")  # an alias bound to two devices
    assert both["result"] == {"dev_ac01": {"power": True, "target": 24}, "dev_lamp01": {"power": True}}


def test_controller_refusals_and_timeouts(driver: Driver, platform: Platform) -> None:
    fan = platform.controllers["dev_fan01"]
    fan.refuse["off"] = "motor is jammed"
    try:
        refused = driver.ask("send", alias="fan", command="off")
    finally:
        fan.refuse.clear()
    assert refused["error"] == "CommandRefused" and "motor is jammed" in refused["message"]
    sent = len(fan.received)
    local = driver.ask("send", alias="fan", command="explode")
    assert local["error"] == "CommandRefused" and "unknown command" in local["message"]
    too_fast = driver.ask("send", alias="fan", command="set_speed", args={"speed": 9})
    assert too_fast["error"] == "CommandRefused" and "maximum" in too_fast["message"]
    assert len(fan.received) == sent  # invalid commands never leave the workload
    started = time.monotonic()
    silent = driver.ask("send", alias="dead", command="on", cmd_timeout=0.5)
    assert silent["error"] == "CommandTimeout" and time.monotonic() - started < 5


def test_one_way_commands_are_sent_in_order_without_waiting_and_report_each_outcome(
    driver: Driver, platform: Platform
) -> None:
    fan = platform.controllers["dev_fan01"]
    sent = len(fan.received)
    speeds = [{"speed": 1 + i % 3} for i in range(20)]
    answer = driver.ask("send_nowait", alias="fan", command="set_speed", each=speeds)
    assert answer["ok"], answer
    assert [r["args"] for r in fan.received[sent:]] == speeds  # every one, in the order given
    assert answer["result"]["outcomes"] == [{"power": True, "speed": s["speed"]} for s in speeds]
    assert answer["result"]["queued_in"] < 0.5  # 20 round trips were not waited for one by one

    fan.refuse["set_speed"] = "motor is jammed"
    try:
        refused = driver.ask("send_nowait", alias="fan", command="set_speed", each=[{"speed": 2}])
    finally:
        fan.refuse.clear()
    assert refused["result"]["outcomes"] == ["CommandRefused"]
    local = driver.ask("send_nowait", alias="fan", command="set_speed", each=[{"speed": 9}])
    assert local["error"] == "CommandRefused" and "maximum" in local["message"]  # checked before queueing
    silent = driver.ask("send_nowait", alias="dead", command="on", cmd_timeout=0.5, each=[{}])
    assert silent["result"]["outcomes"] == ["CommandTimeout"]
    deadline = time.monotonic() + 5  # logged by the SDK's thread when the failure is known (to stderr: the logs)
    while "one-way command to 'dead' failed" not in driver.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "one-way command to 'dead' failed: " in driver.output()

    # A controller that is gone fails every command: one log line a second, counting the rest.
    time.sleep(1.1)
    logged_before = driver.output().count("one-way command to 'dead' failed")
    burst = driver.ask("send_nowait", alias="dead", command="on", cmd_timeout=0.5, each=[{}] * 30)
    assert burst["result"]["outcomes"] == ["CommandTimeout"] * 30
    time.sleep(0.3)  # the SDK's thread logs as each failure becomes known, maybe just after the answer
    assert driver.output().count("one-way command to 'dead' failed") - logged_before == 1
    time.sleep(1.1)
    driver.ask("send_nowait", alias="dead", command="on", cmd_timeout=0.5, each=[{}])
    deadline = time.monotonic() + 5
    while "(and 29 more since the last such line)" not in driver.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "(and 29 more since the last such line)" in driver.output()


def test_logger_records_reach_the_log_subject(driver: Driver, platform: Platform) -> None:
    got = platform.run(platform.collect("aiot.logs.wl_driver"))
    assert driver.ask("log", message="door opened", logger="door")["ok"]
    _wait(lambda: any(b"door opened" in m.data for m in got), what="log record")
    record = json.loads(next(m.data for m in got if b"door opened" in m.data))
    assert record["level"] == "WARNING" and record["logger"] == "door" and record["service"] == "workload"
    assert record["workload_id"] == "wl_driver" and record["app_instance_id"] == "ins_driver"
    assert isinstance(record["ts"], float) and record["message"] == "door opened"


def test_heartbeats_are_published(driver: Driver, platform: Platform) -> None:
    got = platform.run(platform.collect("aiot.hb.wl_driver"))
    _wait(lambda: len(got) >= 3, 5, "three heartbeats")
    beats = [json.loads(m.data) for m in got[:3]]
    assert [b["workload_id"] for b in beats] == ["wl_driver"] * 3
    assert beats[0]["seq"] < beats[1]["seq"] < beats[2]["seq"]


def test_device_calls_imported_nothing_on_the_sdk_thread(driver: Driver) -> None:
    """After this module's readings and commands (it runs last): an import on the SDK's thread stalls the
    heartbeat (see test_model_calls_import_nothing_on_the_sdk_thread)."""
    imported = driver.ask("io_thread_imports")["result"]
    assert imported == [], f"{len(imported)} modules imported on the SDK thread: {imported}"
