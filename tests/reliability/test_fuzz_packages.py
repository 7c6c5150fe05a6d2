"""Package unpacker and validator under hostile input, beyond tests/artifacts: whole random packages (random
entries around random or mutated manifests and sources), random JSON in every manifest slot, byte-level
mutations (flips, truncations, splices) of valid archives, and random device type files.

Properties: validation never raises (every fault is a Problem with a code and a message); a report that is ok
has a manifest and its archive unpacks; and unpacking never writes anything when it refuses."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiot.artifacts import StaticCatalog, validate_app_package, validate_device_type, validate_model_package
from aiot.artifacts.unpack import UnpackError, UnpackLimits, inspect_archive, safe_unpack
from aiot.artifacts.validate import ValidationReport
from tests.artifacts.zipkit import (
    APP_MANIFEST,
    DIRECTORY,
    FIFO,
    MODEL_MANIFEST,
    PREDICTOR,
    REGULAR,
    SYMLINK,
    RawEntry,
    app_files,
    build_zip,
    model_files,
    zip_bytes,
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
CATALOG = StaticCatalog(
    models={"face-detector": ["1.0.0", "1.2.0", "not-a-version"]},
    device_types={"camera": "sensor", "alarm": "controller"},
)
LIMITS = UnpackLimits(max_files=40, max_total_bytes=256 * 1024, max_file_bytes=64 * 1024, max_depth=6)

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _mutate(base: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """A near-valid manifest: some keys dropped, replaced by random JSON, or added."""
    out = dict(base)
    for key in data.draw(st.lists(st.sampled_from(sorted(base)), max_size=3, unique=True)):
        action = data.draw(st.sampled_from(["drop", "random", "keep"]))
        if action == "drop":
            out.pop(key)
        elif action == "random":
            out[key] = data.draw(JSON)
    for key, value in data.draw(
        st.dictionaries(
            st.sampled_from(["format", "extra", "requirements", "kind", "resources", "example", "entrypoint"]),
            JSON,
            max_size=2,
        )
    ).items():
        out[key] = value
    return out


SOURCES = st.one_of(
    st.just(PREDICTOR),
    st.sampled_from(
        [
            "",
            "class Model:\n    pass\n",
            "def predict(:\n",
            "x = (" * 200,
            "\x00",
            "import os\n" * 3,
            "class Model:\n    def predict(self, inputs):\n        return {}\n",
            "\ufeffclass Model: pass\n",
            "if True:\n    class Model:\n        def predict(self, i): return i\n",
        ]
    ),
    st.text(max_size=200),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
REQUIREMENTS = st.one_of(
    st.sampled_from(
        ["", "numpy>=1.26\n", "-e .\n", "pkg @ https://x/y.whl\n", "===\n", "# only a comment\n", "a" * 300 + "\n"]
    ),
    st.text(max_size=80),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
EXTRA_NAMES = st.one_of(
    st.sampled_from(
        [
            "model.json",
            "app.json",
            "predictor.py",
            "main.py",
            "requirements.txt",
            "a/b.py",
            "../evil.py",
            "/abs.py",
            "dir/",
            "sub/model.json",
            "x\\y.py",
            "Model.JSON",
            "ü.py",
            "a/" * 10 + "deep.py",
            "nul\x00.py",
            "c:/x.py",
            "predictor.py/",
        ]
    ),
    st.text(min_size=1, max_size=20),
)
MODES = st.sampled_from([REGULAR] * 8 + [0, SYMLINK, DIRECTORY, FIFO])


@st.composite
def random_package(draw: st.DrawFn, manifest_name: str, base: dict[str, Any]) -> list[RawEntry]:
    """Entries: maybe the manifest (mutated, random JSON or raw bytes), maybe the entrypoint, and extras."""
    entries: list[RawEntry] = []
    if draw(st.integers(0, 9)) > 0:
        choice = draw(st.sampled_from(["mutated", "mutated", "json", "bytes"]))
        if choice == "mutated":
            manifest = json.dumps(_mutate(base, draw(st.data()))).encode()
        elif choice == "json":
            manifest = json.dumps(draw(JSON)).encode()
        else:
            manifest = draw(st.binary(max_size=100))
        entries.append(RawEntry(manifest_name, manifest, deflate=draw(st.booleans())))
    if draw(st.booleans()):
        entries.append(RawEntry("predictor.py" if manifest_name == "model.json" else "main.py", draw(SOURCES)))
    if draw(st.booleans()):
        entries.append(RawEntry("requirements.txt", draw(REQUIREMENTS)))
    for name in draw(st.lists(EXTRA_NAMES, max_size=4)):
        content = draw(st.one_of(SOURCES, st.binary(max_size=64)))
        entries.append(RawEntry(name, content, mode=draw(MODES), deflate=draw(st.booleans())))
    return draw(st.permutations(entries))


def _check_report(report: ValidationReport, archive: Path) -> None:
    """A report is well-formed, serialisable, and `ok` means the archive is really usable."""
    json.dumps(report.to_dict())
    event("ok" if report.ok else "rejected: " + ",".join(sorted(set(report.codes()))[:2]))
    for problem in report.problems:
        assert problem.code and problem.message and problem.file, problem
    if report.ok:
        assert report.manifest is not None
        with tempfile.TemporaryDirectory() as tmp:
            made = safe_unpack(archive, Path(tmp) / "out", LIMITS)
            assert sorted(p.relative_to(Path(tmp) / "out").as_posix() for p in made) == sorted(report.files)


@FUZZ
@given(random_package("model.json", MODEL_MANIFEST))
def test_random_model_packages_never_crash_the_validator(entries: list[RawEntry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "pkg.zip"
        archive.write_bytes(build_zip(entries))
        _check_report(validate_model_package(archive, LIMITS), archive)


@FUZZ
@given(random_package("app.json", APP_MANIFEST))
def test_random_app_packages_never_crash_the_validator(entries: list[RawEntry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "pkg.zip"
        archive.write_bytes(build_zip(entries))
        _check_report(validate_app_package(archive, CATALOG, LIMITS), archive)


_GOOD = {"model": zip_bytes(model_files()), "app": zip_bytes(app_files())}


@FUZZ
@given(st.sampled_from(sorted(_GOOD)), st.data())
def test_mutated_valid_archives_are_reported_not_crashed(kind: str, data: st.DataObject) -> None:
    raw = bytearray(_GOOD[kind])
    how = data.draw(st.sampled_from(["flip", "truncate", "splice", "append"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "splice":
        start = data.draw(st.integers(0, len(raw)))
        raw[start : start + data.draw(st.integers(0, 40))] = data.draw(st.binary(max_size=40))
    else:
        raw += data.draw(st.binary(min_size=1, max_size=64))
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "pkg.zip"
        archive.write_bytes(bytes(raw))
        listing = inspect_archive(archive, LIMITS)
        assert listing.ok or listing.problems or not listing.readable
        report = (
            validate_model_package(archive, LIMITS)
            if kind == "model"
            else validate_app_package(archive, CATALOG, LIMITS)
        )
        _check_report(report, archive)
        if not report.ok:
            target = Path(tmp) / "never"
            try:
                safe_unpack(archive, target, LIMITS)
            except UnpackError:
                assert not target.exists()


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda k, extra: json.dumps({"name": "thermo", "kind": k, **extra}).encode(),
            st.sampled_from(["sensor", "controller", "actuator", 3]),
            st.dictionaries(
                st.sampled_from(["fields", "frame", "commands", "state", "format", "description"]), JSON, max_size=3
            ),
        ),
    )
)
def test_random_device_type_files_are_reported_not_crashed(raw: bytes) -> None:
    report = validate_device_type(raw, "fuzz.json")
    json.dumps(report.to_dict())
    assert report.ok == (report.manifest is not None and not report.problems)
    for problem in report.problems:
        assert problem.file == "fuzz.json" and problem.code and problem.message
