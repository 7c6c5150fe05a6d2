"""Packages in the original platform's formats, built from its documented formats alone (docs/migrating.md):
a scikit-learn pickle model with pre/post hooks, an app using the old SDK calls, device type and instance zips.

Each builder returns `dict[path, bytes]` (the zip's files) so a test can break one thing at a time; `to_zip`
writes them as the original platform's users did.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

PRE = """
def preprocess(values):
    # the original platform passed the input values as a list, in input_params order
    temperature, light = values[0], values[1]
    return [[float(temperature), float(light)]]
"""

POST = """
def postprocess(prediction):
    return "on" if int(prediction[0]) == 1 else "off"
"""

APP = """
import time
from platform_sdk import get_sensor_data, get_prediction, send_controller_data

while True:
    temperature = get_sensor_data(0)
    light = get_sensor_data(1)
    decision = get_prediction(0, {"temperature": temperature, "light": light})
    send_controller_data(0, decision)
    time.sleep(0.2)
"""


def fan_tree() -> Any:
    """A tiny scikit-learn tree: fan on above 25 degrees (the light level is ignored)."""
    from sklearn.tree import DecisionTreeClassifier

    xs = [[t, light] for t in range(0, 45) for light in (0, 500, 1000)]
    ys = [1 if t > 25 else 0 for t, _ in xs]
    return DecisionTreeClassifier(max_depth=2, random_state=0).fit(xs, ys)


def model_files(pickled: bytes | None = None) -> dict[str, bytes]:
    config = {
        "name": "Fan_Advisor",
        "description": "Fan on or off from temperature and light.",
        "readme": "readme.md",
        "dependency": "requirements.txt",
        "preprocessing": {
            "name": "preprocess.py",
            "method_name": "preprocess",
            "input_params": [{"temperature": "float"}, {"light": "float"}],
            "output_params": [{"features": "list"}],
        },
        "prediction": {
            "name": "model.pkl",
            "model_type": "pkl",
            "input_params": [{"features": "list"}],
            "output_params": [{"label": "int"}],
        },
        "postprocessing": {
            "name": "postprocess.py",
            "method_name": "postprocess",
            "input_params": [{"label": "int"}],
            "output_params": [{"fan": "string"}],
        },
    }
    return {
        "config.json": json.dumps(config, indent=1).encode(),
        "readme.md": b"# Fan advisor\n",
        "requirements.txt": b"scikit-learn\nnumpy\npickle\n",
        "preprocess.py": PRE.encode(),
        "postprocess.py": POST.encode(),
        "model.pkl": pickled if pickled is not None else pickle.dumps(fan_tree()),
    }


def app_files(model_id: str = "5f1c0ffee") -> dict[str, bytes]:
    return {
        "app.json": json.dumps(
            {
                "app_name": "Smart Fan",
                "description": "Fan from the comfort model.",
                "script": True,
                "controller": True,
                "sensor": True,
                "model": True,
                "database": False,
            }
        ).encode(),
        "app.py": APP.encode(),
        "requirements.txt": b"",
        "config/control.json": json.dumps({"main": "app.py", "scripts": []}).encode(),
        "config/sensors.json": json.dumps(
            {"count": 2, "instances": [{"index": 1, "type": "LIGHT"}, {"index": 0, "type": "TEMP"}]}
        ).encode(),
        "config/controllers.json": json.dumps({"count": 1, "instances": [{"index": 0, "type": "FAN"}]}).encode(),
        "config/models.json": json.dumps({"count": 1, "instances": [{"model_id": model_id}]}).encode(),
    }


def device_type_files() -> dict[str, bytes]:
    def kind(params: list[str]) -> bytes:
        return json.dumps(
            {"company": "Acme", "model": "X1", "parameter_count": len(params), "parameters": params}
        ).encode()

    return {
        "sensor/TEMP.json": kind(["float"]),
        "sensor/LIGHT.json": kind(["float"]),
        "sensor/CAM.json": kind(["image"]),
        "controller/FAN.json": kind(["string"]),
    }


def device_instance_files(street: str = "MG Road", city: str = "Pune") -> dict[str, bytes]:
    def inst(kind: str, port: int) -> bytes:
        return json.dumps(
            {"type": kind, "ip_loc": {"ip": "10.0.0.5", "port": port}, "geo_location": {"street": street, "city": city}}
        ).encode()

    return {
        "sensors/t1.json": inst("TEMP", 9001),
        "sensors/l1.json": inst("LIGHT", 9002),
        "controllers/f1.json": inst("FAN", 9003),
    }


def to_zip(files: dict[str, bytes], dest: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    dest.write_bytes(buf.getvalue())
    return dest
