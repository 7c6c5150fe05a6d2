"""The sample models really work: the face detector finds the astronaut's face and no face in a gradient;
the comfort model retrains to identical predictions and follows its rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.artifacts.conftest import EXAMPLES

cv2 = pytest.importorskip("cv2")


def load_module(path: Path, name: str) -> ModuleType:
    """Import a sample's module from its file (as the model server would), under a private name."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def detector():
    module = load_module(EXAMPLES / "models" / "face-detector" / "detector.py", "sample_face_detector")
    model = module.FaceDetector()
    model.load()
    return model


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def test_detector_finds_the_astronauts_face(detector) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    bgr = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    for ext in (".png", ".jpg"):
        result = detector.predict({"image": encode(bgr, ext)})
        assert result["count"] >= 1
        assert (result["width"], result["height"]) == (512, 512)
        best = result["faces"][0]
        assert 0.5 < best["score"] <= 1.0
        # Eileen Collins' face is in the upper middle of the picture.
        cx, cy = best["x"] + best["w"] / 2, best["y"] + best["h"] / 2
        assert 150 < cx < 300 and 50 < cy < 200, best


def test_detector_finds_no_face_in_a_gradient(detector) -> None:
    gradient = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    color = cv2.merge([gradient, gradient[::-1], np.full_like(gradient, 128)])
    for image in (gradient, color):
        result = detector.predict({"image": encode(image, ".png")})
        assert result == {"faces": [], "count": 0, "width": 640, "height": 480}


def test_detector_example_image_has_a_face(detector) -> None:
    data = (EXAMPLES / "models" / "face-detector" / "example.jpg").read_bytes()
    assert detector.predict({"image": data, "min_size": 30})["count"] == 1


def test_detector_rejects_garbage(detector) -> None:
    with pytest.raises(ValueError, match="image"):
        detector.predict({"image": b"not an image"})


# --------------------------------------------------------------------------- comfort

COMFORT = EXAMPLES / "models" / "comfort"


@pytest.fixture(scope="module")
def comfort_modules() -> tuple[ModuleType, ModuleType]:
    pytest.importorskip("sklearn")
    return (
        load_module(COMFORT / "train.py", "sample_comfort_train"),
        load_module(COMFORT / "comfort.py", "sample_comfort_model"),
    )


GRID = np.array([[t, lx] for t in np.arange(-5.0, 45.0, 0.25) for lx in np.arange(0.0, 2000.0, 10.0)])


def test_comfort_retrains_to_identical_predictions(comfort_modules, tmp_path: Path) -> None:
    train, comfort = comfort_modules
    shipped = comfort.ComfortModel()
    shipped.load()
    retrained_path = train.main(tmp_path / "comfort.joblib")
    retrained = comfort.ComfortModel(retrained_path)
    retrained.load()
    assert np.array_equal(shipped.tree.predict(GRID), retrained.tree.predict(GRID))
    assert np.array_equal(shipped.tree.predict(GRID), train.train().predict(GRID))


def test_comfort_follows_its_rules(comfort_modules) -> None:
    _, comfort = comfort_modules
    model = comfort.ComfortModel()
    assert model.predict({"temperature": 31.5, "light": 120}) == {"fan": "on", "ac": "on", "lamp": "on"}
    assert model.predict({"temperature": 20, "light": 800}) == {"fan": "off", "ac": "off", "lamp": "off"}
    assert model.predict({"temperature": 26.5, "light": 900}) == {"fan": "on", "ac": "off", "lamp": "off"}
    assert model.predict({"temperature": 18, "light": 40})["lamp"] == "on"
    # Away from the thresholds (0.3 °C / 15 lx), the tree agrees with the rules on the whole grid.
    predictions = model.tree.predict(GRID)
    t, lx = GRID[:, 0], GRID[:, 1]
    clear = (np.abs(t - 28) > 0.3) & (np.abs(t - 25) > 0.3) & (np.abs(lx - 300) > 15)
    expected = np.column_stack([t > 25, t > 28, lx < 300]).astype(int)
    assert np.array_equal(predictions[clear], expected[clear])


def test_comfort_missing_input(comfort_modules) -> None:
    _, comfort = comfort_modules
    with pytest.raises(ValueError, match="light"):
        comfort.ComfortModel().predict({"temperature": 20})
