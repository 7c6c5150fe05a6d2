"""Adaptive batching in the model replica: concurrent predicts become predict_batch calls, each caller gets
its own answer (in its own order), and a failing batch fails only its own callers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from platform_sdk.config import parse_config
from platform_sdk.serving import ModelServer

MODEL = """
import threading, time

class Echo:
    def __init__(self):
        self.batches = []
        self.lock = threading.Lock()

    def predict(self, inputs):
        raise AssertionError("with batching on, single predicts go through predict_batch")

    def predict_batch(self, items):
        with self.lock:
            self.batches.append(len(items))
        time.sleep(0.02)  # a per-call cost batching amortises
        if any(i["n"] == 13 for i in items):
            raise RuntimeError("unlucky batch")
        return [{"double": i["n"] * 2} for i in items]
"""


def _server(tmp_path: Path, batching: dict | None) -> ModelServer:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "echo.py").write_text(MODEL)
    manifest = {
        "format": 1,
        "name": "echo",
        "version": "1.0.0",
        "framework": "python",
        "entrypoint": "echo:Echo",
        "inputs": {"n": {"type": "integer"}},
        "outputs": {"double": {"type": "integer"}},
    }
    if batching:
        manifest["batching"] = batching
    (package / "model.json").write_text(json.dumps(manifest))
    cfg = parse_config(
        {
            "workload_id": "wl_echo",
            "nats": {"servers": ["nats://127.0.0.1:1"]},
            "package_dir": str(package),
            "serve": {"port": 1, "open": True},
        }
    )
    server = ModelServer(cfg)
    server.load()
    server.state = "ready"
    return server


async def test_concurrent_requests_share_batches_and_each_gets_its_own_result(tmp_path: Path) -> None:
    server = _server(tmp_path, {"max_batch_size": 8, "max_wait_ms": 5})
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        numbers = [n for n in range(40) if n != 13]
        answers = await asyncio.gather(*(client.post("/v1/predict", json={"inputs": {"n": n}}) for n in numbers))
        assert [a.json()["outputs"]["double"] for a in answers] == [n * 2 for n in numbers]
        batches = server.model.batches
        assert sum(batches) == len(numbers) and max(batches) == 8 and len(batches) <= 8, batches

        mixed = await asyncio.gather(*(client.post("/v1/predict", json={"inputs": {"n": n}}) for n in (1, 13)))
        assert [a.status_code for a in mixed] == [500, 500]  # one batch: both of its callers see the failure
        assert "unlucky batch" in mixed[1].json()["error"]
        alone = await client.post("/v1/predict", json={"inputs": {"n": 21}})
        assert alone.status_code == 200 and alone.json()["outputs"] == {"double": 42}
        bad = await client.post("/v1/predict", json={"inputs": {"n": "x"}})
        assert bad.status_code == 422 and bad.json()["field"] == "n"  # validated before it joins a batch
        metrics = (await client.get("/metrics")).text
        assert "aiot_model_batch_size_count" in metrics
    await server.batcher.aclose()


def test_batching_is_opt_in(tmp_path: Path) -> None:
    assert _server(tmp_path, None).batcher is None


@pytest.mark.parametrize(
    ("batching", "field"),
    [({"max_batch_size": 1}, "max_batch_size"), ({"max_wait_ms": -1}, "max_wait_ms"), ({"max_size": 4}, "max_size")],
)
def test_manifest_batching_is_checked(batching: dict, field: str) -> None:
    from pydantic import ValidationError

    from aiot.artifacts.manifests import ModelManifest

    doc = json.loads((Path(__file__).resolve().parents[2] / "examples/models/comfort/model.json").read_text())
    with pytest.raises(ValidationError, match=field):
        ModelManifest.model_validate({**doc, "batching": batching})
    assert ModelManifest.model_validate({**doc, "batching": {"max_batch_size": 4}}).batching.max_wait_ms == 2.0


def _package(tmp_path: Path, module: str, example: dict | None) -> ModelServer:
    name = f"warm_{abs(hash((str(tmp_path), module)))}"  # a module name of its own: imports are cached per process
    package = tmp_path / "warm"
    package.mkdir(parents=True)
    (package / f"{name}.py").write_text(module)
    manifest = {
        "format": 1,
        "name": "warm",
        "version": "1.0.0",
        "framework": "python",
        "entrypoint": f"{name}:Model",
        "inputs": {"n": {"type": "integer"}},
        "outputs": {"double": {"type": "integer"}},
    }
    if example is not None:
        manifest["example"] = example
    (package / "model.json").write_text(json.dumps(manifest))
    return ModelServer(
        parse_config(
            {
                "workload_id": "wl_warm",
                "nats": {"servers": ["nats://127.0.0.1:1"]},
                "package_dir": str(package),
                "serve": {"port": 1, "open": True},
            }
        )
    )


GOOD = (
    "class Model:\n    seen = []\n    def predict(self, inputs):\n        self.seen.append(inputs)\n"
    "        return {'double': inputs['n'] * 2}\n"
)
BROKEN = "class Model:\n    def predict(self, inputs):\n        raise FileNotFoundError('weights.bin')\n"


def test_a_replica_warms_up_on_the_manifest_example_before_it_is_ready(tmp_path: Path) -> None:
    server = _package(tmp_path, GOOD, {"n": 21})
    server.load()
    assert server.model.seen == [{"n": 21}] and server.warmup_s is not None


def test_a_model_that_cannot_predict_its_example_never_becomes_ready(tmp_path: Path) -> None:
    server = _package(tmp_path, BROKEN, {"n": 1})
    with pytest.raises(ValueError, match=r"warm-up prediction on the manifest's example failed: FileNotFoundError"):
        server.load()
    assert server.state == "loading"  # _load_task turns this into `failed` and a restart, never `ready`
    bad_example = _package(tmp_path / "x", GOOD, {"n": "not a number"})
    with pytest.raises(ValueError, match="example"):
        bad_example.load()
