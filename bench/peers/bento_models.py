"""The peer for bench/serving.py: the same two sample models served by BentoML.

Each service loads the model files from `examples/models/<name>` exactly as our serving wrapper does (same
class, same `load()`), so the two servers differ only in the serving layer. Inputs are JSON like ours: the
comfort model's two numbers, and the face detector's image as a base64 string (our wrapper accepts the same).
Workers: `BENCH_WORKERS` (default 1, the same as one replica of our wrapper). Access logging is off, as in
our wrapper, so neither pays for a log line per request.

    bentoml serve bento_models:Comfort --port 3000        # from this folder
    bentoml serve bento_models:FaceDetector --port 3001
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

import bentoml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))


def _import(package: str, module: str) -> Any:
    path = str(EXAMPLES / package)
    if path not in sys.path:
        sys.path.insert(0, path)
    return __import__(module)


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class Comfort:
    def __init__(self) -> None:
        self.model = _import("comfort", "comfort").ComfortModel()
        self.model.load()

    @bentoml.api
    def predict(self, temperature: float, light: float) -> dict[str, str]:
        return self.model.predict({"temperature": temperature, "light": light})


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class FaceDetector:
    def __init__(self) -> None:
        self.model = _import("face-detector", "detector").FaceDetector()
        self.model.load()

    @bentoml.api
    def predict(self, image_b64: str, min_size: int = 30) -> dict[str, Any]:
        return self.model.predict({"image": base64.b64decode(image_b64), "min_size": min_size})


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class FaceDetectorBatched:
    """The face detector behind BentoML's adaptive batcher: each request carries one image (a list of one), the
    batcher merges concurrent requests into one call of up to 16, as our `model.json` `batching` does."""

    def __init__(self) -> None:
        self.model = _import("face-detector", "detector").FaceDetector()
        self.model.load()

    @bentoml.api(batchable=True, max_batch_size=16)  # max_latency_ms: its default (60 s)
    def predict(self, images: list[str]) -> list[dict[str, Any]]:
        return [self.model.predict({"image": base64.b64decode(b64), "min_size": 30}) for b64 in images]
