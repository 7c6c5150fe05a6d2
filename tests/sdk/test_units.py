"""Fast checks of the SDK's pieces that need no server: config errors, input validation, liveness rules,
model-call input mapping, and that the SDK never imports the platform."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from platform_sdk.config import load_config, merged_settings
from platform_sdk.errors import ConfigError, NotOnPlatform, UnknownAlias
from platform_sdk.heartbeat import HeartbeatWriter, Liveness
from platform_sdk.models import build_inputs
from platform_sdk.validation import InputError, InputValidator

SDK = Path(__file__).resolve().parents[2] / "src" / "platform_sdk"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = {"workload_id": "wl_1", "nats": {"servers": ["nats://127.0.0.1:1"]}}


def test_missing_config_says_not_on_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOT_WORKLOAD_CONFIG", raising=False)
    with pytest.raises(NotOnPlatform, match="not running under the platform"):
        load_config()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"nats": {"servers": ["nats://x"]}}, "workload_id"),
        ({"workload_id": "wl_1"}, "nats"),
        ({"workload_id": "wl_1", "nats": {"servers": []}}, "nats.servers"),
        ({**GOOD, "heartbeat": {"interval": "1"}}, "heartbeat.interval"),
        ({**GOOD, "sensors": {"cam": [{"device_type": {}}]}}, "sensors.cam[0].device_id"),
        ({**GOOD, "models": {"m": {"name": "x"}}}, "models.m.model_id"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, doc: dict, field: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and repr(field) in str(info.value)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_settings_merge_manifest_defaults() -> None:
    manifest = json.loads((EXAMPLES / "apps/intruder-alert/app.json").read_text())
    cfg = load_config({**GOOD, "package": {"manifest": manifest}, "settings": {"min_score": 0.9}})
    assert merged_settings(cfg) == {"min_score": 0.9, "quiet_seconds": 30, "message": "Intruder detected"}


def test_unknown_alias_message() -> None:
    err = UnknownAlias("sensor", "cam", ["camera", "door"])
    assert "camera, door" in str(err) and "'cam'" in str(err)


# ------------------------------------------------------------------------------------------ validation

FACE = json.loads((EXAMPLES / "models/face-detector/model.json").read_text())["inputs"]
COMFORT = json.loads((EXAMPLES / "models/comfort/model.json").read_text())["inputs"]
JPEG = (EXAMPLES / "models/face-detector/example.jpg").read_bytes()


def test_validator_accepts_named_positional_and_base64() -> None:
    comfort = InputValidator(COMFORT)
    assert comfort({"temperature": 20, "light": 5.5}) == {"temperature": 20, "light": 5.5}
    assert comfort([20, 5.5]) == {"temperature": 20, "light": 5.5}
    face = InputValidator(FACE)
    b64 = base64.b64encode(JPEG).decode()
    assert face({"image": b64})["image"] == JPEG
    assert face({"image": {"b64": b64}, "min_size": 40.0}) == {"image": JPEG, "min_size": 40}
    assert face([JPEG]) == {"image": JPEG}


@pytest.mark.parametrize(
    ("spec", "inputs", "field", "words"),
    [
        (COMFORT, {"temperature": 20}, "light", "missing"),
        (COMFORT, {"temperature": "20", "light": 1}, "temperature", "number"),
        (COMFORT, {"temperature": True, "light": 1}, "temperature", "number"),
        (COMFORT, {"temperature": -41, "light": 1}, "temperature", "minimum"),
        (COMFORT, {"temperature": 1, "light": 1, "humidity": 3}, "humidity", "unknown"),
        (COMFORT, [1, 2, 3], "inputs", "positional"),
        (COMFORT, "hot", "inputs", "object"),
        (FACE, {"image": "not base64!"}, "image", "base64"),
        (FACE, {"image": base64.b64encode(b"GIF89a....").decode()}, "image", "jpeg or png"),
        (FACE, {"image": JPEG, "min_size": 2.5}, "min_size", "integer"),
        (FACE, {"image": JPEG, "min_neighbors": 50}, "min_neighbors", "maximum"),
    ],
)
def test_validator_errors_name_the_field(spec: dict, inputs: object, field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        InputValidator(spec)(inputs)
    assert info.value.field == field and words in info.value.message


def test_validator_prefix_for_batches() -> None:
    with pytest.raises(InputError) as info:
        InputValidator(COMFORT)({"temperature": 1}, "instances[3].")
    assert info.value.field == "instances[3].light"


def test_model_call_inputs_mapping() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    body = build_inputs([b"\xff\xd8\xff", rgb, np.float32(1.5), np.arange(3)])
    assert body[0] == {"b64": base64.b64encode(b"\xff\xd8\xff").decode()}
    assert base64.b64decode(body[1]["b64"]).startswith(b"\x89PNG")
    assert body[2] == 1.5 and body[3] == [0, 1, 2]
    assert build_inputs({"t": np.int64(3)}) == {"t": 3} and build_inputs(7) == [7]
    json.dumps(body)


# ------------------------------------------------------------------------------------------ heartbeat


def test_liveness_rules() -> None:
    live = Liveness(hang_after=5.0, startup_grace=60.0)
    t0 = live.started
    assert live.alive(t0 + 30)  # start-up grace
    assert not live.alive(t0 + 61)  # grace over and no check-in ever
    live.checkin()
    assert live.alive(live.last[next(iter(live.last))] + 4.9)
    live.run_thread = 12345  # run() active in another thread: only that thread's check-ins count
    assert not live.alive(t0 + 1)
    live.last[12345] = t0 + 100
    assert live.alive(t0 + 104) and not live.alive(t0 + 106)
    live.waits[12345] = t0 + 200  # blocked in an SDK call with a deadline: still progress
    assert live.alive(t0 + 150) and not live.alive(t0 + 201)


def test_heartbeat_file_is_replaced_atomically(tmp_path: Path) -> None:
    sent: list[bytes] = []
    hb = HeartbeatWriter("wl_1", str(tmp_path / "hb"), sent.append)
    hb.beat()
    hb.beat()
    doc = json.loads((tmp_path / "hb").read_text())
    assert doc["seq"] == 2 and doc["ts"].endswith("Z")
    assert [json.loads(s)["seq"] for s in sent] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hb"]  # no temp file left behind


# ------------------------------------------------------------------------------------------ isolation


def test_sdk_never_imports_the_platform() -> None:
    for path in SDK.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import aiot", "from aiot")), f"{path}: {line}"
    code = (
        "import sys, platform_sdk, platform_sdk.serving, platform_sdk.app_runner, platform_sdk.validation;"
        "print([m for m in sys.modules if m == 'aiot' or m.startswith('aiot.')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_requirements_file_is_small_and_pinned_by_range() -> None:
    lines = [line.split("#")[0].strip() for line in (SDK / "requirements.txt").read_text().splitlines()]
    names = {line.split(">")[0].split("<")[0].split(";")[0].strip() for line in lines if line}
    assert {"nats-py", "httpx", "numpy", "starlette", "uvicorn", "prometheus-client"} <= names
    assert len(names) <= 10


def test_endpoint_header_names_agree_with_the_control_plane() -> None:
    """The SDK keeps its own copy (it may not import aiot); the gateway and the replicas must use the same."""
    from aiot.deployer import endpoint_tokens
    from platform_sdk import endpoint_auth

    assert endpoint_auth.MODEL_TOKEN_HEADER == endpoint_tokens.MODEL_TOKEN_HEADER
    assert endpoint_auth.GATEWAY_TOKEN_HEADER == endpoint_tokens.GATEWAY_TOKEN_HEADER


def test_gateway_guard_strips_every_copy_of_the_token() -> None:
    from platform_sdk.web_guard import strip_token

    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-AIOT-Gateway-Token: a\r\nx-aiot-gateway-token:  b \r\nAccept: */*\r\n\r\n"
    given, rest = strip_token(head)
    assert given == b"b" and rest == b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    assert strip_token(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] is None


def test_replica_config_without_a_token_is_refused() -> None:
    """A replica the platform started always has `serve.token`; a config without one is a fault, not an open
    endpoint (only an explicit `serve.open` serves without a check)."""
    from platform_sdk.config import parse_config
    from platform_sdk.serving import guarded

    app = object()
    with pytest.raises(ValueError, match="serve.token"):
        guarded(app, parse_config({**GOOD, "serve": {"port": 1}}))
    assert guarded(app, parse_config({**GOOD, "serve": {"port": 1, "open": True}})) is app
    assert guarded(app, parse_config({**GOOD, "serve": {"port": 1, "token": "t"}})).app is app


def test_mailbox_every_keeps_all_in_order_and_counts_what_a_full_buffer_drops() -> None:
    from platform_sdk.mailbox import Mailbox

    box = Mailbox(maxlen=3)
    for i in range(5):
        box.put(i)
    assert [box.get(0)[1] for _ in range(3)] == [2, 3, 4] and box.dropped == 2 and box.coalesced == 0
    assert box.get(0) == (False, None)


def test_mailbox_latest_replaces_a_waiting_reading_of_the_same_device_in_its_place() -> None:
    from platform_sdk.mailbox import Mailbox

    box = Mailbox()
    box.put("cam1-a", key="cam1")
    box.put("thermo-1")  # an "every" sensor in between keeps its place and its readings
    box.put("cam2-a", key="cam2")
    box.put("cam1-b", key="cam1")
    box.put("thermo-2")
    box.put("cam1-c", key="cam1")
    assert [box.get(0)[1] for _ in range(4)] == ["cam1-c", "thermo-1", "cam2-a", "thermo-2"]
    assert box.coalesced == 2 and box.dropped == 0
    box.put("cam1-d", key="cam1")  # taken: a new one queues again
    assert box.get(0) == (True, "cam1-d") and len(box) == 0


def test_mailbox_bounds_waiting_camera_frames_by_bytes() -> None:
    from platform_sdk.mailbox import Mailbox
    from platform_sdk.wire import Reading

    box = Mailbox(maxlen=1000, max_bytes=250_000)
    frames = [Reading(device_id="cam", ts=datetime.now(UTC), frame_bytes=bytes(100_000)) for _ in range(4)]
    for frame in frames:
        box.put(frame)
    assert len(box) == 2 and box.dropped == 2 and box.bytes == 200_000
    assert box.get(0)[1] is frames[2]
    box.put(frames[0], key="cam")  # a coalescing slot tracks the bytes of what it holds now
    box.put(Reading(device_id="cam", ts=datetime.now(UTC), frame_bytes=bytes(10)), key="cam")
    assert box.bytes == 100_010 and box.coalesced == 1
