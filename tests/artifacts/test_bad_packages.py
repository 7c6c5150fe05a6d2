"""A corpus of bad packages, one fault each: every one is rejected with a problem naming that fault.

Each case states the problem it must produce (code, file, field); unless marked otherwise it must also be the
only problem, so a fault is neither missed nor reported under a misleading name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiot.artifacts import (
    StaticCatalog,
    UnpackLimits,
    ValidationReport,
    validate_app_package,
    validate_device_type,
    validate_model_package,
)
from tests.artifacts.conftest import examples_catalog
from tests.artifacts.zipkit import (
    FIFO,
    SYMLINK,
    RawEntry,
    app_files,
    build_zip,
    model_files,
    raw_from,
    write,
    zip_bytes,
)

Build = Callable[[Path], ValidationReport]


@dataclass
class Case:
    id: str
    build: Build
    code: str
    file: str
    field: str | None = None
    only: bool = True


def _uploadable(run: Build, collection: str, payload: Callable[[], bytes], default_limits: bool = True) -> Build:
    """Mark a case as replayable through the HTTP API (tests/artifacts/test_bad_uploads.py): which collection it
    goes to and its bytes. Cases with custom limits or catalogs only make sense at the library level."""
    if default_limits:
        run.upload = (collection, payload)  # type: ignore[attr-defined]
    return run


def model(files: dict[str, bytes | str], limits: UnpackLimits | None = None) -> Build:
    def run(tmp: Path) -> ValidationReport:
        archive = write(tmp, zip_bytes(files))
        return validate_model_package(archive, limits) if limits else validate_model_package(archive)

    return _uploadable(run, "models", lambda: zip_bytes(files), limits is None)


def model_raw(entries: list[RawEntry], limits: UnpackLimits | None = None) -> Build:
    def run(tmp: Path) -> ValidationReport:
        archive = write(tmp, build_zip(entries))
        return validate_model_package(archive, limits) if limits else validate_model_package(archive)

    return _uploadable(run, "models", lambda: build_zip(entries), limits is None)


def app(files: dict[str, bytes | str], catalog: StaticCatalog | None = None) -> Build:
    def run(tmp: Path) -> ValidationReport:
        return validate_app_package(write(tmp, zip_bytes(files)), catalog or examples_catalog())

    return _uploadable(run, "apps", lambda: zip_bytes(files), catalog is None)


def device(data: dict | bytes) -> Build:
    def run(tmp: Path) -> ValidationReport:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return validate_device_type(raw, "thing.json")

    return _uploadable(run, "device-types", lambda: data if isinstance(data, bytes) else json.dumps(data).encode())


def with_file(files: dict[str, bytes | str], name: str, content: bytes | str) -> dict[str, bytes | str]:
    return {**files, name: content}


def without(files: dict[str, bytes | str], name: str) -> dict[str, bytes | str]:
    return {k: v for k, v in files.items() if k != name}


GOOD = model_files()
GOOD_APP = json.loads(app_files()["app.json"])
SENSOR = {"name": "thermo", "kind": "sensor", "fields": {"t": {"type": "number", "unit": "°C"}}}
CONTROLLER = {"name": "relay", "kind": "controller", "commands": {"on": {}, "off": {}}}


def app_ctx(**changes) -> dict:
    ctx = json.loads(json.dumps(GOOD_APP["context"]))
    for section, value in changes.items():
        ctx[section] = value
    return ctx


CASES = [
    # ---- archive safety
    Case("path-escape", model(with_file(GOOD, "../evil.py", "x = 1\n")), "path_escape", "../evil.py"),
    Case("path-escape-nested", model(with_file(GOOD, "lib/../../evil.txt", "x")), "path_escape", "lib/../../evil.txt"),
    Case("absolute-path", model(with_file(GOOD, "/etc/cron.d/evil", "x")), "absolute_path", "/etc/cron.d/evil"),
    Case("drive-letter", model(with_file(GOOD, "C:/evil.txt", "x")), "absolute_path", "C:/evil.txt"),
    Case("backslash", model(with_file(GOOD, "..\\..\\evil.txt", "x")), "unsafe_name", "..\\..\\evil.txt"),
    Case(
        "nul-in-name",
        model_raw([*raw_from(GOOD), RawEntry("ok.txt\x00../../x", b"x")]),
        "unsafe_name",
        "ok.txt\x00../../x",
    ),
    Case("symlink", model_raw([*raw_from(GOOD), RawEntry("link", b"/etc/passwd", mode=SYMLINK)]), "symlink", "link"),
    Case("fifo", model_raw([*raw_from(GOOD), RawEntry("pipe", b"", mode=FIFO)]), "special_file", "pipe"),
    Case("zip-bomb-ratio", model(with_file(GOOD, "weights.bin", b"\0" * (3 * 1024 * 1024))), "zip_bomb", "weights.bin"),
    Case(
        "too-many-files",
        model({**GOOD, **{f"data/{i}.txt": "x" for i in range(20)}}, UnpackLimits(max_files=10)),
        "too_many_files",
        "pkg.zip",
    ),
    Case(
        "too-large",
        model(with_file(GOOD, "weights.bin", bytes(range(256)) * 400), UnpackLimits(max_total_bytes=50_000)),
        "too_large",
        "pkg.zip",
        only=False,
    ),
    Case(
        "lying-size-header",
        model_raw([*raw_from(GOOD), RawEntry("w.bin", b"\1" * 100_000, declared_size=10)]),
        "corrupt_zip",
        "w.bin",
    ),
    Case(
        "duplicate-entry",
        model_raw([*raw_from(GOOD), RawEntry("predictor.py", b"x = 1\n")]),
        "duplicate_entry",
        "predictor.py",
        only=False,
    ),
    Case(
        "duplicate-by-case",
        model_raw([*raw_from(GOOD), RawEntry("Predictor.py", b"x = 1\n")]),
        "duplicate_entry",
        "Predictor.py",
    ),
    Case(
        "encrypted",
        model_raw([*raw_from(GOOD), RawEntry("secret.bin", b"xx", flags=0x1)]),
        "encrypted_entry",
        "secret.bin",
    ),
    Case(
        "not-a-zip",
        lambda tmp: validate_model_package(write(tmp, b"this is plain text, not a zip\n" * 10)),
        "not_zip",
        "pkg.zip",
    ),
    Case(
        "truncated-zip", lambda tmp: validate_model_package(write(tmp, zip_bytes(GOOD)[:-40])), "corrupt_zip", "pkg.zip"
    ),
    # ---- manifest
    Case("missing-manifest", model(without(GOOD, "model.json")), "missing_manifest", "model.json"),
    Case(
        "manifest-in-subfolder", model({f"doubler/{k}": v for k, v in GOOD.items()}), "missing_manifest", "model.json"
    ),
    Case(
        "invalid-json",
        model(with_file(GOOD, "model.json", '{\n  "name": "doubler",\n  "version": 1.0.0\n}')),
        "invalid_json",
        "model.json",
    ),
    Case("wrong-type-inputs", model(model_files(inputs="image")), "wrong_type", "model.json", "inputs"),
    Case(
        "wrong-type-memory",
        model(model_files(resources={"memory_mb": "512"})),
        "wrong_type",
        "model.json",
        "resources.memory_mb",
    ),
    Case("bad-version", model(model_files(version="one")), "bad_version", "model.json", "version"),
    Case("bad-name", model(model_files(name="Face_Detector")), "bad_name", "model.json", "name"),
    Case("unknown-field", model(model_files(frameworks="python")), "unknown_field", "model.json", "frameworks"),
    Case(
        "missing-field",
        model(
            without(model_files(), "model.json")
            | {"model.json": json.dumps({k: v for k, v in json.loads(GOOD["model.json"]).items() if k != "entrypoint"})}
        ),
        "missing_field",
        "model.json",
        "entrypoint",
    ),
    Case(
        "unknown-io-type",
        model(model_files(outputs={"y": {"type": "decimal"}})),
        "invalid_value",
        "model.json",
        "outputs.y.type",
    ),
    Case(
        "bad-image-encoding",
        model(model_files(inputs={"img": {"type": "image", "encodings": ["gif"]}}, example=None)),
        "invalid_value",
        "model.json",
        "inputs.img.encodings.0",
    ),
    Case("example-mismatch", model(model_files(example={"x": "two"})), "example_mismatch", "model.json", "example.x"),
    Case(
        "example-image-missing",
        model(model_files(example={"x": 1, "photo": {"file": "nope.jpg"}})),
        "missing_file",
        "nope.jpg",
        "example.photo",
    ),
    # ---- code
    Case(
        "entrypoint-module-missing",
        model(model_files(entrypoint="nope:Model")),
        "entrypoint_missing",
        "nope.py",
        "entrypoint",
    ),
    Case(
        "entrypoint-attr-missing",
        model(model_files(entrypoint="predictor:Missing")),
        "entrypoint_attr_missing",
        "predictor.py",
        "entrypoint",
    ),
    Case(
        "entrypoint-no-predict",
        model(with_file(GOOD, "predictor.py", "class Model:\n    def load(self): ...\n")),
        "entrypoint_no_predict",
        "predictor.py",
        "entrypoint",
    ),
    Case(
        "syntax-error",
        model(with_file(GOOD, "predictor.py", "class Model:\n    def predict(self, x)\n")),
        "syntax_error",
        "predictor.py",
        "line 2",
    ),
    Case(
        "syntax-error-helper",
        model(with_file(GOOD, "helpers/util.py", "def f(:\n")),
        "syntax_error",
        "helpers/util.py",
        "line 1",
    ),
    Case(
        "bad-requirement",
        model(with_file(GOOD, "requirements.txt", "numpy\nscikit learn>=1\n")),
        "bad_requirement",
        "requirements.txt",
        "line 2",
    ),
    Case(
        "pip-option",
        model(with_file(GOOD, "requirements.txt", "-e git+https://x/y.git\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "url-requirement",
        model(with_file(GOOD, "requirements.txt", "pkg @ https://example.invalid/p.whl\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "requirements-missing",
        model(without(model_files(requirements="deps.txt"), "requirements.txt")),
        "missing_file",
        "deps.txt",
        "requirements",
    ),
    # Issue 14: nothing in a requirements file may choose where the node downloads (or builds) code from.
    Case(
        "index-url-option",
        model(with_file(GOOD, "requirements.txt", "numpy\n--index-url https://evil.invalid/s\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 2",
    ),
    Case(
        "extra-index-url-option",
        model(with_file(GOOD, "requirements.txt", "--extra-index-url=http://x/simple\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "find-links-option",
        model(with_file(GOOD, "requirements.txt", "numpy\n-f ./wheels\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 2",
    ),
    Case(
        "nested-requirements",
        model(with_file(GOOD, "requirements.txt", "-r more.txt\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "editable",
        model(with_file(GOOD, "requirements.txt", "-e .\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "vcs-requirement",
        model(with_file(GOOD, "requirements.txt", "numpy\ngit+https://evil.invalid/x.git\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 2",
    ),
    Case(
        "http-url-requirement",
        model(with_file(GOOD, "requirements.txt", "evil @ http://127.0.0.1:1/e.tar.gz\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "file-url-requirement",
        model(with_file(GOOD, "requirements.txt", "evil @ file:///srv/evil.tar.gz\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "local-path-requirement",
        model(with_file(GOOD, "requirements.txt", "./vendor/evil-1.0.tar.gz\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
    ),
    Case(
        "line-continuation",
        model(with_file(GOOD, "requirements.txt", "numpy \\\n  @ http://x/e.whl\n")),
        "unsupported_requirement",
        "requirements.txt",
        "line 1",
        only=False,
    ),
    Case(
        "named-file-checked",
        model(
            with_file(
                with_file(model_files(requirements="reqs.txt"), "reqs.txt", "numpy\n--trusted-host evil.invalid\n"),
                "requirements.txt",
                "numpy\n",
            )
        ),
        "unsupported_requirement",
        "reqs.txt",
        "line 2",
    ),
    # ---- apps
    Case("web-app-without-port", app(app_files(kind="web")), "port_required", "app.json", "port"),
    Case("backend-with-port", app(app_files(port=8080)), "port_not_allowed", "app.json", "port"),
    Case("app-missing-manifest", app(without(app_files(), "app.json")), "missing_manifest", "app.json"),
    Case("app-script-missing", app(without(app_files(), "main.py")), "entrypoint_missing", "main.py", "entrypoint"),
    Case(
        "app-function-missing",
        app(app_files(entrypoint="main:start")),
        "entrypoint_attr_missing",
        "main.py",
        "entrypoint",
    ),
    Case(
        "unknown-model",
        app(app_files(context=app_ctx(models={"detector": {"name": "no-such-model"}}))),
        "unknown_model",
        "app.json",
        "context.models.detector.name",
    ),
    Case(
        "model-version-out-of-range",
        app(app_files(context=app_ctx(models={"detector": {"name": "face-detector", "version": ">=2"}}))),
        "model_version_unavailable",
        "app.json",
        "context.models.detector.version",
    ),
    Case(
        "bad-version-range",
        app(app_files(context=app_ctx(models={"detector": {"name": "face-detector", "version": "=>1"}}))),
        "bad_specifier",
        "app.json",
        "context.models.detector.version",
    ),
    Case(
        "unknown-device-type",
        app(app_files(context=app_ctx(sensors={"camera": {"device_type": "lidar"}}))),
        "unknown_device_type",
        "app.json",
        "context.sensors.camera.device_type",
    ),
    Case(
        "sensor-used-as-controller",
        app(app_files(context=app_ctx(controllers={"alarm": {"device_type": "camera"}}))),
        "wrong_device_kind",
        "app.json",
        "context.controllers.alarm.device_type",
    ),
    Case(
        "setting-default-type",
        app(app_files(context=app_ctx(settings={"n": {"type": "integer", "default": "3"}}))),
        "default_type_mismatch",
        "app.json",
        "context.settings.n.default",
    ),
    Case(
        "alias-both-sensor-and-controller",
        app(app_files(context=app_ctx(controllers={"camera": {"device_type": "alarm"}}))),
        "duplicate_alias",
        "app.json",
        "context",
    ),
    # ---- device types
    Case(
        "device-unknown-field-type",
        device({**SENSOR, "fields": {"t": {"type": "decimal"}}}),
        "invalid_value",
        "thing.json",
        "fields.t.type",
    ),
    Case("device-invalid-json", device(b'{"name": "thermo",}'), "invalid_json", "thing.json"),
    Case(
        "device-sensor-with-commands",
        device({**SENSOR, "commands": {"on": {}}}),
        "sensor_with_commands",
        "thing.json",
        "commands",
    ),
    Case(
        "device-sensor-without-payload",
        device({"name": "thermo", "kind": "sensor"}),
        "sensor_payload",
        "thing.json",
        "fields",
    ),
    Case(
        "device-controller-without-commands",
        device({"name": "relay", "kind": "controller"}),
        "controller_commands",
        "thing.json",
        "commands",
    ),
    Case("device-bad-kind", device({**CONTROLLER, "kind": "actuator"}), "invalid_value", "thing.json", "kind"),
    Case(
        "device-min-over-max",
        device({**SENSOR, "fields": {"t": {"type": "number", "min": 5, "max": 1}}}),
        "bad_bounds",
        "thing.json",
        "fields.t.min",
    ),
    Case(
        "device-bad-frame-encoding",
        device({"name": "cam", "kind": "sensor", "frame": {"encoding": "gif"}}),
        "invalid_value",
        "thing.json",
        "frame.encoding",
    ),
    Case("device-bad-name", device({**CONTROLLER, "name": "Relay 1"}), "bad_name", "thing.json", "name"),
]


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_package_is_rejected_naming_the_fault(case: Case, tmp_path: Path) -> None:
    report = case.build(tmp_path)
    assert not report.ok
    described = [str(p) for p in report.problems]
    matching = [p for p in report.problems if (p.code, p.file, p.field) == (case.code, case.file, case.field)]
    assert matching, f"expected {case.code} in {case.file} [{case.field}], got {described}"
    assert all(p.message for p in report.problems)
    assert not [p.message for p in report.problems if "!r}" in p.message or "{value}" in p.message]
    if case.only:
        assert len(report.problems) == 1, described
    # The report is JSON-ready for the API's 4xx body.
    json.dumps(report.to_dict())


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    report = model(with_file(GOOD, "model.json", '{\n  "name": "doubler",\n  "version": 1.0.0\n}'))(tmp_path)
    assert "line 3, column" in report.problems[0].message


def test_three_faults_are_all_reported(tmp_path: Path) -> None:
    files = model_files(version="not-a-version", entrypoint="missing_module:Model")
    files["requirements.txt"] = "numpy\n!!!\n"
    report = validate_model_package(write(tmp_path, zip_bytes(files)))
    found = {(p.code, p.file, p.field) for p in report.problems}
    assert found == {
        ("bad_version", "model.json", "version"),
        ("entrypoint_missing", "missing_module.py", "entrypoint"),
        ("bad_requirement", "requirements.txt", "line 2"),
    }


def test_archive_and_manifest_faults_are_reported_together(tmp_path: Path) -> None:
    entries = [*raw_from(model_files(name="BAD")), RawEntry("../x", b"x"), RawEntry("l", b"/", mode=SYMLINK)]
    report = validate_model_package(write(tmp_path, build_zip(entries)))
    assert set(report.codes()) == {"path_escape", "symlink", "bad_name"}


def test_app_catalog_faults_are_all_reported(tmp_path: Path) -> None:
    ctx = app_ctx(
        models={"detector": {"name": "nope"}, "other": {"name": "comfort", "version": ">=9"}},
        sensors={"camera": {"device_type": "fan"}},
        controllers={"alarm": {"device_type": "teleporter"}},
    )
    report = app(app_files(context=ctx))(tmp_path)
    assert sorted(report.codes()) == sorted(
        ["unknown_model", "model_version_unavailable", "wrong_device_kind", "unknown_device_type"]
    )


def test_report_sha256_is_of_the_archive(tmp_path: Path) -> None:
    import hashlib

    archive = write(tmp_path, zip_bytes(GOOD))
    report = validate_model_package(archive)
    assert report.ok, [str(p) for p in report.problems]
    assert report.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert report.size == archive.stat().st_size
    assert report.to_dict()["manifest"]["name"] == "doubler"


def test_damaged_manifest_entry_is_reported_once(tmp_path: Path) -> None:
    entries = [RawEntry("model.json", b"{}", deflate=False), *raw_from(without(GOOD, "model.json"))]
    archive = write(tmp_path, build_zip(entries))
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"{}")] = ord("[")  # payload no longer matches its CRC
    archive.write_bytes(bytes(raw))
    report = validate_model_package(archive)
    assert [(p.code, p.file) for p in report.problems] == [("corrupt_zip", "model.json")]
