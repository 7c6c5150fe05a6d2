"""Issue acceptance (apps end to end): the demo's whole path, as `aiot demo` runs it, against a real SMTP server.

`aiot demo` starts the platform with two local nodes, simulators for two locations, the sample models and apps;
intruder-alert and smart-classroom start now, smart-home is scheduled a minute ahead. Then:

* intruder-alert receives a camera frame with a face, calls face-detector and switches the alarm on (seen in the
  alarm controller's reported state history, and in the app's own log);
* smart-classroom turns the fan on when the classroom's temperature rises: the test takes the thermometer over
  (rotating its credential cuts the simulator off) and plays a plain-MQTT thermometer, cool then hot;
* the end user's e-mail with the smart-home address reaches aiosmtpd, and that address serves the page, through
  the control plane's gateway and directly on its node.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform
from tests.support.smtp import MailSink, SmtpServer

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOL = "Green Valley School"


class Demo:
    def __init__(self, plane: RunningPlatform, smtp: SmtpServer) -> None:
        self.plane = plane
        self.smtp = smtp
        self.tokens: dict[str, str] = {}
        self.started = 0.0  # monotonic time the demo said it was ready
        self.launched = 0.0  # monotonic time `aiot demo` was started, on a fresh data dir

    def token(self, user: str) -> str:
        if user not in self.tokens:
            password = "admin-password-1" if user == "admin" else "demo-password"
            response = httpx.post(
                f"{self.plane.url}/api/v1/auth/login", json={"username": user, "password": password}, timeout=30
            )
            assert response.status_code == 200, response.text
            self.tokens[user] = response.json()["token"]
        return self.tokens[user]

    def call(self, method: str, path: str, user: str = "admin", **kwargs: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.plane.url}/api/v1{path}",
            timeout=60,
            headers={"Authorization": f"Bearer {self.token(user)}"},
            **kwargs,
        )
        assert response.status_code in (200, 201), f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def wait(self, what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
        return self.plane.wait(what, probe, timeout, every)

    def device(self, location: str, name: str) -> dict:
        devices = self.call("GET", "/devices", params={"location": location})
        return next(d for d in devices if d["name"] == name)

    def states(self, device_id: str) -> list[dict]:
        return [
            r
            for r in self.call("GET", f"/devices/{device_id}/history", params={"limit": 200})
            if r["channel"] == "state"
        ]

    def instance(self, app: str) -> dict:
        return next(i for i in self.call("GET", "/instances", user="eve") if i["app"].split(":")[0] == app)


@contextmanager
def running_demo(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Demo]:
    """`aiot demo` on a fresh data dir with a real SMTP server, until it says it is ready."""
    smtp = SmtpServer(port=free_port(), sink=MailSink())
    smtp.start()
    data_dir = tmp_path_factory.mktemp(name) / "data"
    launched = time.monotonic()
    try:
        with start_platform(
            data_dir, free_port(), command="demo", AIOT_SMTP_HOST="127.0.0.1", AIOT_SMTP_PORT=str(smtp.port)
        ) as plane:
            demo = Demo(plane, smtp)
            demo.wait(
                "the demo to be ready", lambda: "AIoT demo running" in plane.log() or plane.proc.poll(), timeout=300
            )
            assert plane.proc.poll() is None, plane.log()
            demo.started, demo.launched = time.monotonic(), launched
            yield demo
    finally:
        smtp.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory, "demo") as running:
        log = running.plane.log()
        assert "smart-home is scheduled daily" in log, log[-3000:]  # by the scheduler
        yield running


def test_intruder_alert_sees_a_face_and_sounds_the_alarm(demo: Demo) -> None:
    alarm = demo.device(SCHOOL, "alarm-1")

    def alarm_sounded() -> dict | None:
        return next((s for s in demo.states(alarm["id"]) if s["values"].get("power") is True), None)

    state = demo.wait("the alarm switched on", alarm_sounded, timeout=60)
    assert "face" in state["values"].get("reason", ""), state
    elapsed = time.monotonic() - demo.started
    print(f"alarm on {elapsed:.1f}s after the demo was ready")
    instance = demo.instance("intruder-alert")
    logs = demo.call(
        "GET", "/logs", user="eve", params={"workload_id": instance["workload_id"], "text": "face", "limit": 20}
    )["records"]
    assert any("face(s) seen by camera" in r["message"] for r in logs), logs


def _thermometer(connect: dict, base: float) -> subprocess.Popen[str]:
    """A plain MQTT thermometer (examples/devices/plain_mqtt_sensor.py) with the given mean temperature."""
    return subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "devices" / "plain_mqtt_sensor.py"),
            "--host",
            connect["mqtt_host"],
            "--port",
            str(connect["mqtt_port"]),
            "--username",
            connect["username"],
            "--password",
            connect["password"],
            "--device-id",
            connect["username"],
            "--base",
            str(base),
            "--interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_smart_classroom_turns_the_fan_on_when_the_room_warms(demo: Demo) -> None:
    thermometer = demo.device(SCHOOL, "temperature-1")
    fan = demo.device(SCHOOL, "fan-1")
    demo.wait(
        "smart-classroom running", lambda: demo.instance("smart-classroom")["workload_state"] == "running", timeout=60
    )
    connect = demo.call("POST", f"/devices/{thermometer['id']}/credentials/rotate")
    cool = _thermometer(connect, base=18.0)  # 15..21 °C: the comfort model wants the fan off
    try:

        def fan_power() -> bool | None:
            latest = demo.call("GET", f"/devices/{fan['id']}/latest")["latest"]
            return None if latest is None else latest["values"].get("power")

        demo.wait("the fan off in a cool room", lambda: fan_power() is False, timeout=45)
        cool.terminate()
        cool.wait(10)
        warmed = time.monotonic()
        hot = _thermometer(connect, base=33.0)  # 30..36 °C: fan (and AC) on
        try:
            demo.wait("the fan on in a hot room", lambda: fan_power() is True, timeout=45)
            print(f"fan on {time.monotonic() - warmed:.1f}s after the room warmed")
        finally:
            hot.terminate()
            hot.wait(10)
    finally:
        if cool.poll() is None:
            cool.kill()
    instance = demo.instance("smart-classroom")
    logs = demo.call(
        "GET", "/logs", user="eve", params={"workload_id": instance["workload_id"], "text": "fan -> on", "limit": 20}
    )["records"]
    assert logs, "the app logged no 'fan -> on'"


def test_end_user_gets_the_smart_home_address_by_email_and_it_serves_the_page(demo: Demo) -> None:
    home = demo.instance("smart-home")
    address_suffix = f"/apps/{home['id']}/"

    def mail_with_address() -> Any:
        with demo.smtp.sink.lock:
            for message in demo.smtp.sink.messages:
                body = message.get_body(preferencelist=("plain", "html"))
                text = body.get_content() if body is not None else ""
                if message["To"] and "eve@example.com" in message["To"] and address_suffix in text:
                    return message, text
        return None

    _message, text = demo.wait("the smart-home e-mail", mail_with_address, timeout=150, every=1.0)
    address = next(word for word in text.split() if address_suffix in word).strip("<>.,()")
    assert address.startswith("http"), address
    mine = demo.call("GET", "/outbox", user="eve")  # every message is also kept in the outbox, marked sent
    assert any(m["status"] == "sent" and address in m["body"] for m in mine), mine

    # the platform address checks who asks, then redirects to the apps origin (another host) with a one-time
    # ticket, which becomes that origin's cookie (httpx drops the bearer token on the cross-origin redirect)
    with httpx.Client(
        headers={"Authorization": f"Bearer {demo.token('eve')}"}, follow_redirects=True, timeout=30
    ) as eve:
        page = eve.get(address)
        assert page.status_code == 200, page.text[:500]
        assert urlsplit(str(page.url)).hostname != urlsplit(address).hostname, page.url  # on its own origin
        assert "<h1>" in page.text and "Home" in page.text, page.text[:500]
        assert "href='history'" in page.text  # relative links keep the user inside the app's /<id>/
        history = eve.get(str(page.url) + "history")
        assert history.status_code == 200 and "<h1>" in history.text, history.text[:500]
    others = httpx.get(address, headers={"Authorization": f"Bearer {demo.token('dev')}"}, timeout=30)
    assert others.status_code in (403, 404), others.status_code  # another user's app is not theirs to open

    running = demo.instance("smart-home")  # now running: it has a workload with its node address
    workload = demo.call("GET", f"/workloads/{running['workload_id']}")
    direct = httpx.get(workload["endpoint"], timeout=30)  # directly on its node: only the gateway gets in
    assert direct.status_code == 403 and "<h1>" not in direct.text, direct.text[:300]
    assert workload["endpoint"] not in text  # the mail gives the gateway address only
