"""Fixtures for SDK tests: one platform (nats-server, registry, ingest, fake controllers) per session, model
replicas started as real subprocesses, and a driver workload that uses only platform_sdk."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import COMFORT_ID, FACE_ID, Platform, workload_user
from .workloads import Driver, Proc, base_config, binding, bindings, start_model, wait_healthy, write_config

DRIVER = Path(__file__).with_name("driver.py")

CONTROLLERS = ["dev_fan01", "dev_ac01", "dev_lamp01", "dev_alarm01", "dev_display01", "dev_fandead"]
SENSORS = ["dev_temp01", "dev_light01", "dev_cam01", "dev_spare01"]

WORKLOADS = {
    "wl_comfort_a": {"model_id": COMFORT_ID},
    "wl_comfort_b": {"model_id": COMFORT_ID},
    "wl_comfort_c": {"model_id": COMFORT_ID},
    "wl_comfort_d": {"model_id": COMFORT_ID},
    "wl_face_a": {"model_id": FACE_ID},
    "wl_driver": {"models": [COMFORT_ID, FACE_ID], "sensors": SENSORS, "controllers": CONTROLLERS},
    "wl_app": {"sensors": SENSORS},
    "wl_classroom": {
        "models": [COMFORT_ID],
        "sensors": ["dev_temp01", "dev_light01"],
        "controllers": ["dev_fan01", "dev_ac01", "dev_lamp01"],
    },
    "wl_intruder": {
        "models": [FACE_ID],
        "sensors": ["dev_cam01"],
        "controllers": ["dev_alarm01", "dev_display01"],
    },
    "wl_home": {
        "sensors": ["dev_temp01", "dev_light01"],
        "controllers": ["dev_fan01", "dev_ac01", "dev_lamp01"],
    },
}


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("platform"))
    users = []
    for wid, perms in WORKLOADS.items():
        p.passwords[wid] = secrets.token_urlsafe(16)
        users.append(workload_user(wid, p.passwords[wid], **perms))
    try:
        p.run(p.start(users), 60)
        yield p
    finally:
        p.close()


class Replicas:
    def __init__(self) -> None:
        self.procs: dict[str, Proc] = {}
        self.urls: dict[str, str] = {}
        self.root = Path()

    def add(self, platform: Platform, root: Path, wid: str, model_id: str, package: str) -> None:
        self.procs[wid], self.urls[wid] = start_model(platform, root / wid, wid, model_id, package)

    def add_healthy(self, platform: Platform, root: Path, wid: str, model_id: str, package: str) -> None:
        """`add`, then wait until it answers. The port is picked free and bound by the replica a moment later;
        when another process took it meanwhile (five test files run at once), start again on another port."""
        for attempt in range(3):
            self.add(platform, root, wid, model_id, package)
            try:
                wait_healthy(self.procs[wid], self.urls[wid], 60)
                return
            except AssertionError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.procs[wid].stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture(scope="session")
def replicas(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two comfort replicas and one face-detector replica, healthy and registered."""
    root = tmp_path_factory.mktemp("replicas")
    r = Replicas()
    r.root = root
    try:
        for wid, model_id, package in (
            ("wl_comfort_a", COMFORT_ID, "comfort"),
            ("wl_comfort_b", COMFORT_ID, "comfort"),
            ("wl_face_a", FACE_ID, "face-detector"),
        ):
            r.add_healthy(platform, root, wid, model_id, package)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if len(platform.registry.live(COMFORT_ID)) == 2 and len(platform.registry.live(FACE_ID)) == 1:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"replicas not registered: {platform.registry.endpoints}")
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def driver(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    work = tmp_path_factory.mktemp("driver")
    cfg = base_config(
        "wl_driver",
        "app",
        platform.nats.url,
        platform.passwords["wl_driver"],
        work,
        models={
            "comfort": binding(COMFORT_ID, "comfort"),
            "detector": binding(FACE_ID, "face-detector"),
        },
        sensors=bindings(
            temperature=["dev_temp01"], light=["dev_light01"], camera=["dev_cam01"], spare=["dev_spare01"]
        ),
        controllers=bindings(
            fan=["dev_fan01"], lamp=["dev_lamp01"], dead=["dev_fandead"], pair=["dev_ac01", "dev_lamp01"]
        ),
        settings={"threshold": 28.0},
        app_instance_id="ins_driver",
        package={
            "id": "app_drv",
            "name": "driver",
            "version": "1.0.0",
            "manifest": {
                "name": "driver",
                "version": "1.0.0",
                "kind": "backend",
                "entrypoint": "driver.py",
                "context": {
                    "settings": {
                        "threshold": {"type": "number", "default": 25.0},
                        "mode": {"type": "string", "default": "auto"},
                    }
                },
            },
        },
    )
    d = Driver([sys.executable, str(DRIVER)], write_config(work / "config.json", cfg), work, stdin=True)
    d.next_json(30, lambda doc: doc.get("ready"))
    yield d
    d.stop()
