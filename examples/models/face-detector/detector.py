"""Face detector model: OpenCV's frontal-face Haar cascade, which ships inside opencv-python-headless.

Nothing is downloaded: the cascade XML file comes with the OpenCV wheel (`cv2.data.haarcascades`).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"


class FaceDetector:
    """`load()` once, then `predict({"image": <jpeg/png bytes>})` per request."""

    def __init__(self) -> None:
        self.cascade: cv2.CascadeClassifier | None = None

    def load(self) -> None:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if cascade.empty():
            raise RuntimeError(f"OpenCV could not load {CASCADE} from {cv2.data.haarcascades}")
        self.cascade = cascade

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self.cascade is None:
            self.load()
        assert self.cascade is not None
        gray = _to_gray(inputs["image"])
        min_size = int(inputs.get("min_size", 30))
        min_neighbors = int(inputs.get("min_neighbors", 5))
        gray = cv2.equalizeHist(gray)
        rects, _levels, weights = self.cascade.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=min_neighbors,
            minSize=(min_size, min_size),
            outputRejectLevels=True,
        )
        faces = []
        for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            # The cascade's final-stage weight is unbounded (clear frontal faces score ~3-10);
            # squash it to 0..1 so apps can use one threshold.
            score = 1.0 / (1.0 + math.exp(-float(weight)))
            faces.append({"x": int(x), "y": int(y), "w": int(w), "h": int(h), "score": round(score, 4)})
        faces.sort(key=lambda f: f["score"], reverse=True)
        height, width = gray.shape[:2]
        return {"faces": faces, "count": len(faces), "width": int(width), "height": int(height)}


def _to_gray(image: Any) -> np.ndarray:
    """Accept encoded bytes (what the model server passes) or an already decoded numpy image."""
    if isinstance(image, bytes | bytearray | memoryview):
        buf = np.frombuffer(bytes(image), dtype=np.uint8)
        decoded = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if decoded is None:
            raise ValueError("image: not a decodable JPEG or PNG")
        return decoded
    arr = np.asarray(image)
    if arr.ndim == 3:
        return cv2.cvtColor(arr.astype(np.uint8), cv2.COLOR_BGR2GRAY)
    if arr.ndim == 2:
        return arr.astype(np.uint8)
    raise ValueError(f"image: expected bytes or an HxW / HxWx3 array, got shape {arr.shape}")
