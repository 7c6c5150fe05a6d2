"""Original model zips -> our model packages: the converted package validates, serves through the real
entrypoint loader, and every broken original is refused naming the file and the config.json key."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from aiot.artifacts.legacy import LegacyFormatError, convert, convert_path, detect
from aiot.artifacts.legacy.model import pickle_globals
from aiot.artifacts.packing import zip_folder
from aiot.artifacts.validate import validate_model_package
from platform_sdk.serving import load_entrypoint

from .originals import model_files, to_zip


def _write(files: dict[str, bytes], folder: Path) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(autouse=True)
def _fresh_modules() -> None:
    """Each test loads another package with the same module names (one model per process in production)."""
    import sys

    for name in ("aiot_legacy_entry", "preprocess", "postprocess"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def original() -> dict[str, bytes]:
    return model_files()


def test_detects_and_converts_a_pickle_model(original: dict[str, bytes], tmp_path: Path) -> None:
    assert detect(original) == "model"
    converted = convert_path(to_zip(original, tmp_path / "fan.zip"))
    manifest = converted.manifest
    assert manifest["name"] == "fan-advisor"
    assert manifest["entrypoint"] == "aiot_legacy_entry:LegacyModel"
    assert manifest["inputs"]["temperature"]["type"] == "number"
    assert manifest["inputs"]["light"]["type"] == "number"
    assert manifest["outputs"] == {
        "output": {"type": "string", "description": manifest["outputs"]["output"]["description"]}
    }
    assert b"pickle" not in converted.files["requirements.txt"]
    assert any("pickle" in n and "sklearn" in n for n in converted.notes)
    report = validate_model_package(zip_folder(_write(converted.files, tmp_path / "pkg"), tmp_path / "out.zip"))
    assert report.ok, report.problems


def test_converted_entrypoint_calls_pre_predict_post(original: dict[str, bytes], tmp_path: Path) -> None:
    """The generated module, loaded the way the model server loads any entrypoint, answers as the old one."""
    converted = convert(original, "fan.zip")
    pkg = _write(converted.files, tmp_path / "pkg")
    model, predict = load_entrypoint(pkg, converted.manifest["entrypoint"])
    model.load()
    assert predict({"temperature": 31.0, "light": 100.0}) == {"output": "on"}
    assert predict({"temperature": 12.0, "light": 100.0}) == {"output": "off"}


def test_hooks_written_for_a_json_request_work_too(original: dict[str, bytes], tmp_path: Path) -> None:
    files = dict(
        original, **{"preprocess.py": b"def preprocess(req):\n    return [[req['temperature'], req.get('light')]]\n"}
    )
    converted = convert(files, "fan.zip")
    model, predict = load_entrypoint(_write(converted.files, tmp_path / "pkg"), converted.manifest["entrypoint"])
    model.load()
    assert predict({"temperature": 30.0, "light": 5.0}) == {"output": "on"}


def test_folder_zipped_with_its_top_folder(original: dict[str, bytes], tmp_path: Path) -> None:
    nested = {f"fan/{k}": v for k, v in original.items()}
    assert convert_path(to_zip(nested, tmp_path / "nested.zip")).name == "fan-advisor"


def test_image_model_gets_an_image_input_and_a_file_path(original: dict[str, bytes], tmp_path: Path) -> None:
    config = json.loads(original["config.json"])
    config["preprocessing"]["input_params"] = [{"photo": "jpg"}]
    files = dict(
        original,
        **{
            "config.json": json.dumps(config).encode(),
            "preprocess.py": b"def preprocess(path):\n    data = open(path, 'rb').read()\n"
            b"    return [[len(data), 0]]\n",
        },
    )
    converted = convert(files, "img.zip")
    assert converted.manifest["inputs"] == {"image": converted.manifest["inputs"]["image"]}
    assert converted.manifest["inputs"]["image"]["type"] == "image"
    model, predict = load_entrypoint(_write(converted.files, tmp_path / "pkg"), converted.manifest["entrypoint"])
    model.load()
    assert predict({"image": b"\xff\xd8\xff" + b"x" * 40}) == {"output": "on"}  # 43 bytes > 25


def _config(original: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    config = json.loads(original["config.json"])
    for dotted, value in changes.items():
        node = config
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return dict(original, **{"config.json": json.dumps(config).encode()})


BAD = {
    "missing_hook_file": (
        lambda o: {k: v for k, v in o.items() if k != "preprocess.py"},
        "preprocess.py",
        "config.json preprocessing.name",
        "missing_file",
    ),
    "hook_not_defined": (
        lambda o: _config(o, postprocessing__method_name="post_process"),
        "postprocess.py",
        "config.json postprocessing.method_name",
        "hook_missing",
    ),
    "hook_syntax_error": (
        lambda o: dict(o, **{"preprocess.py": b"def preprocess(x:\n"}),
        "preprocess.py",
        "line 1",
        "syntax_error",
    ),
    "wrong_model_type": (
        lambda o: _config(o, prediction__model_type="onnx"),
        "config.json",
        "prediction.model_type",
        "invalid_value",
    ),
    "missing_model_type": (
        lambda o: _config(o, prediction__model_type=None),
        "config.json",
        "prediction.model_type",
        "missing_field",
    ),
    "missing_model_file": (
        lambda o: {k: v for k, v in o.items() if k != "model.pkl"},
        "model.pkl",
        "config.json prediction.name",
        "missing_file",
    ),
    "pickle_does_not_unpickle": (
        lambda o: dict(o, **{"model.pkl": pickle.dumps([1, 2, 3])[:-3]}),
        "model.pkl",
        "config.json prediction.name",
        "bad_pickle",
    ),
    "not_a_pickle": (
        lambda o: dict(o, **{"model.pkl": b"hello, world"}),
        "model.pkl",
        "config.json prediction.name",
        "bad_pickle",
    ),
    "h5_that_is_not_hdf5": (
        lambda o: _config(dict(o, **{"model.h5": b"nope"}), prediction__model_type="h5", prediction__name="model.h5"),
        "model.h5",
        "config.json prediction.model_type",
        "bad_model_file",
    ),
    "unknown_input_type": (
        lambda o: _config(o, preprocessing__input_params=[{"t": "complex"}]),
        "config.json",
        "preprocessing.input_params[0].t",
        "invalid_value",
    ),
    "no_name": (lambda o: _config(o, name=None), "config.json", "name", "missing_field"),
    "bad_json": (lambda o: dict(o, **{"config.json": b'{"name": '}), "config.json", "line 1", "invalid_json"),
    "missing_requirements": (
        lambda o: {k: v for k, v in o.items() if k != "requirements.txt"},
        "requirements.txt",
        "config.json dependency",
        "missing_file",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_original_models_name_file_and_key(original: dict[str, bytes], case: str) -> None:
    breaker, file, key, code = BAD[case]
    with pytest.raises(LegacyFormatError) as info:
        convert(breaker(original), "bad.zip")
    assert (info.value.file, info.value.key, info.value.code) == (file, key, code), str(info.value)
    assert file in str(info.value)


def test_pickle_is_never_unpickled_by_the_importer(original: dict[str, bytes], tmp_path: Path) -> None:
    """A pickle whose loading would run code: converting it must not run that code."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(marker), "w"))

    files = dict(original, **{"model.pkl": pickle.dumps(Evil())})
    converted = convert(files, "evil.zip")
    assert not marker.exists()
    assert "io" in pickle_globals(files["model.pkl"], "model.pkl") or "builtins" in pickle_globals(
        files["model.pkl"], "model.pkl"
    )
    assert converted.files["model.pkl"] == files["model.pkl"]


def test_h5_model_converts_with_a_keras_requirement(original: dict[str, bytes]) -> None:
    files = _config(
        dict(original, **{"model.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 64}),
        prediction__model_type="h5",
        prediction__name="model.h5",
    )
    converted = convert(files, "keras.zip")
    assert converted.manifest["framework"] == "keras"
    assert b"tensorflow-cpu" in converted.files["requirements.txt"]
    assert "MODEL_TYPE = 'h5'" in converted.files["aiot_legacy_entry.py"].decode()


def test_our_own_packages_are_not_taken_for_original_ones() -> None:
    repo = Path(__file__).resolve().parents[3]
    comfort = {p.name: p.read_bytes() for p in (repo / "examples/models/comfort").iterdir() if p.is_file()}
    assert detect(comfort) is None
    with pytest.raises(LegacyFormatError, match="not a package of the original platform"):
        convert(comfort, "comfort")


def test_a_pickle_needing_a_missing_module_is_flagged_and_fails_loading_by_name(
    original: dict[str, bytes], tmp_path: Path
) -> None:
    """Well-formed, but it imports a module nothing installs: the import warns, and the replica's load error
    names the file and the config.json key (it is only ever unpickled there, in the model's sandbox)."""
    files = dict(original, **{"model.pkl": b"cmissing_mod_xyz\nThing\n)R."})
    converted = convert(files, "fan.zip")
    assert any("WARNING" in n and "missing_mod_xyz" in n for n in converted.notes), converted.notes
    model, _predict = load_entrypoint(_write(converted.files, tmp_path / "pkg"), converted.manifest["entrypoint"])
    with pytest.raises(
        RuntimeError,
        match=r"model\.pkl \(config\.json prediction\.name\) could not be loaded: "
        "ModuleNotFoundError",
    ):
        model.load()
