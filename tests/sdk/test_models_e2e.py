"""model_call end to end: two real comfort replicas and a face-detector replica (subprocesses of the serving
wrapper), the registry service, and a separate workload process that uses only platform_sdk."""

from __future__ import annotations

import io
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from .conftest import Replicas
from .harness import COMFORT_ID, EXAMPLES, FACE_ID, Platform
from .workloads import Driver, model_auth, model_token

pytestmark = pytest.mark.slow


def predict_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=model_auth(COMFORT_ID), timeout=2).text
    m = re.search(r'^aiot_model_requests_total\{endpoint="predict",status="200"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_seed_form_balances_over_both_replicas(driver: Driver, replicas: Replicas) -> None:
    urls = [replicas.urls["wl_comfort_a"], replicas.urls["wl_comfort_b"]]
    before = [predict_count(u) for u in urls]
    for params, expected in (
        ([31.5, 120], {"fan": "on", "ac": "on", "lamp": "on"}),
        ([20.0, 800], {"fan": "off", "ac": "off", "lamp": "off"}),
    ):
        for _ in range(5):
            answer = driver.ask("model_call", alias="comfort", params=params)
            assert answer["ok"], answer
            assert answer["result"] == expected
    named = driver.ask("model_call", alias="comfort", params={"temperature": 26.0, "light": 1000})
    assert named["result"] == {"fan": "on", "ac": "off", "lamp": "off"}
    by_id = driver.ask("model_call", alias=COMFORT_ID, params=[26.0, 100])
    assert by_id["ok"] and by_id["result"]["lamp"] == "on"
    after = [predict_count(u) for u in urls]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 12 and min(served) >= 4, served  # round-robin: both replicas got traffic


def test_bad_input_is_model_error_naming_the_field(driver: Driver) -> None:
    answer = driver.ask("model_call", alias="comfort", params={"temperature": 300, "light": 10})
    assert not answer["ok"] and answer["error"] == "ModelError"
    assert answer["status"] == 422 and answer["field"] == "temperature"
    assert "maximum" in answer["message"]
    missing = driver.ask("model_call", alias="comfort", params={"temperature": 20})
    assert missing["field"] == "light" and missing["status"] == 422
    unknown = driver.ask("model_call", alias="nope", params=[1, 2])
    assert unknown["error"] == "UnknownAlias" and "comfort" in unknown["message"]


def test_batch(driver: Driver, replicas: Replicas) -> None:
    answer = driver.ask(
        "batch",
        alias="comfort",
        instances=[{"temperature": 31, "light": 50}, [20, 900], {"temperature": 26, "light": 400}],
    )
    assert answer["ok"], answer
    assert [o["ac"] for o in answer["result"]] == ["on", "off", "off"]
    assert [o["fan"] for o in answer["result"]] == ["on", "off", "on"]
    bad = httpx.post(
        f"{replicas.urls['wl_comfort_a']}/v1/predict/batch",
        json={"instances": [{"temperature": 20, "light": 1}, {"temperature": "hot", "light": 1}]},
        headers=model_auth(COMFORT_ID),
    )
    assert bad.status_code == 422 and bad.json()["field"] == "instances[1].temperature"


def test_face_detector_finds_the_astronaut(driver: Driver, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    path = tmp_path / "astronaut.jpg"
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    answer = driver.ask("model_call", alias="detector", image_file=str(path))
    assert answer["ok"], answer
    assert answer["result"]["count"] >= 1 and answer["result"]["width"] == 512
    face = answer["result"]["faces"][0]
    assert 0 < face["w"] < 512 and 0.5 < face["score"] <= 1
    as_array = driver.ask("model_call_array", alias="detector", image_file=str(path))  # numpy RGB -> PNG
    assert as_array["ok"] and as_array["result"]["count"] >= 1
    bad = driver.ask("model_call", alias="detector", params={"image": "bm90IGFuIGltYWdl"})  # base64 of text
    assert bad["status"] == 422 and bad["field"] == "image"


def test_http_api_of_a_replica(replicas: Replicas) -> None:
    url = replicas.urls["wl_face_a"]
    api = httpx.Client(base_url=url, headers=model_auth(FACE_ID), timeout=10)
    meta = api.get("/v1/metadata").json()
    assert meta["name"] == "face-detector" and "image" in meta["inputs"]
    jpeg = (Path(__file__).resolve().parents[2] / "examples/models/face-detector/example.jpg").read_bytes()
    multi = api.post(
        "/v1/predict",
        files={"image": ("x.jpg", jpeg, "image/jpeg")},
        data={"inputs": '{"min_size": 30}'},
    )
    assert multi.status_code == 200, multi.text
    assert multi.json()["outputs"]["count"] >= 1 and multi.json()["model"]["name"] == "face-detector"
    assert api.post("/v1/predict", content=b"{not json").status_code == 422
    wrong = api.post("/v1/predict", json={"inputs": {"image": {"b64": "!!"}}})
    assert wrong.status_code == 422 and wrong.json()["field"] == "image"
    extra = api.post("/v1/predict", json={"inputs": {"img": "x"}})
    assert extra.status_code == 422 and extra.json()["field"] == "img"
    assert "aiot_model_request_seconds" in api.get("/metrics").text
    api.close()


def test_replica_refuses_callers_without_the_model_token(replicas: Replicas) -> None:
    """Attack: call a replica's address directly (it is on the node's network) and skip every owner check.
    Only the model's own token opens it; another model's token, a prefix or no token is a 401 before the
    model runs. /healthz (the agent's probe) stays open and runs nothing."""
    url = replicas.urls["wl_comfort_a"]
    before = predict_count(url)
    body = {"inputs": {"temperature": 30, "light": 100}}
    for headers in (
        {},
        {"Authorization": "Bearer x"},
        {"Authorization": f"Bearer {model_token(FACE_ID)}"},
        {"Authorization": f"Bearer {model_token(COMFORT_ID)[:-1]}"},
        {"Authorization": model_token(COMFORT_ID)},
    ):
        for path in ("/v1/predict", "/v1/predict/batch"):
            refused = httpx.post(url + path, json=body, headers=headers, timeout=5)
            assert refused.status_code == 401, (path, headers, refused.text)
        assert httpx.get(f"{url}/v1/metadata", headers=headers, timeout=5).status_code == 401
        assert httpx.get(f"{url}/metrics", headers=headers, timeout=5).status_code == 401
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert predict_count(url) == before  # nothing refused reached the model
    ok = httpx.post(f"{url}/v1/predict", json=body, headers=model_auth(COMFORT_ID), timeout=5)
    assert ok.status_code == 200 and ok.json()["outputs"]["fan"] == "on"


def test_keeps_answering_while_a_replica_is_killed(driver: Driver, replicas: Replicas, platform: Platform) -> None:
    replicas.add_healthy(platform, replicas.root, "wl_comfort_c", COMFORT_ID, "comfort")  # the one to kill
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(platform.registry.live(COMFORT_ID)) != 3:
        time.sleep(0.1)
    assert len(platform.registry.live(COMFORT_ID)) == 3
    driver.send("call_loop", alias="comfort", params=[27.0, 200], seconds=3.0, mark=20)
    driver.next_json(20, lambda d: "progress" in d)
    victim = replicas.procs["wl_comfort_c"]
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(5)
    result = driver.next_json(30, lambda d: "ok" in d)
    assert result["ok"], result
    assert result["result"]["failures"] == [] and result["result"]["ok"] > 20, result
    # the dead replica stays in the registry until its entry expires (TTL), then disappears by itself
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(platform.registry.live(COMFORT_ID)) != 2:
        time.sleep(0.2)
    assert [e["workload_id"] for e in platform.registry.live(COMFORT_ID)] == ["wl_comfort_a", "wl_comfort_b"]


def test_sigterm_withdraws_the_replica_at_once(replicas: Replicas, platform: Platform) -> None:
    """uvicorn re-raises the SIGTERM once the lifespan has ended, so a withdraw only queued for the SDK thread
    died with the process and the stopped replica's dead URL stayed in the registry until the TTL."""
    replicas.add_healthy(platform, replicas.root, "wl_comfort_d", COMFORT_ID, "comfort")
    proc = replicas.procs["wl_comfort_d"]

    def listed() -> bool:
        return "wl_comfort_d" in [e["workload_id"] for e in platform.registry.live(COMFORT_ID)]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not listed():
        time.sleep(0.05)
    assert listed()
    proc.popen.send_signal(signal.SIGTERM)
    proc.popen.wait(10)
    deadline = time.monotonic() + 1.0  # the TTL (5 s here) would take up to 5 s
    while time.monotonic() < deadline and listed():
        time.sleep(0.05)
    assert not listed(), proc.output()[-2000:]


def test_settings_and_no_platform_imports(driver: Driver) -> None:
    assert driver.ask("settings")["result"] == {"threshold": 28.0, "mode": "auto"}
    assert driver.ask("modules")["result"] == []


def test_model_calls_import_nothing_on_the_sdk_thread(driver: Driver, replicas: Replicas, tmp_path: Path) -> None:
    """The SDK's I/O thread also beats the heartbeat: a module imported there on the first model call (the
    HTTP client, numpy for inputs) stalls the beats for as long as the import takes, which on a loaded machine
    was long enough for the agent to call the app hung. Since the driver started, none may have been."""
    assert driver.ask("model_call", alias="comfort", params=[31.5, 120])["ok"]
    image = tmp_path / "face.jpg"
    image.write_bytes((EXAMPLES / "models/face-detector/example.jpg").read_bytes())
    assert driver.ask("model_call", alias="detector", image_file=str(image), timeout=30.0)["ok"]
    imported = driver.ask("io_thread_imports")["result"]
    assert imported == [], f"{len(imported)} modules imported on the SDK thread: {imported}"
