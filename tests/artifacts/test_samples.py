"""Every sample in examples/ validates, and zip_folder is deterministic."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import jsonschema
import pytest

from aiot.artifacts import (
    StaticCatalog,
    package_files,
    schema_for,
    validate_app_package,
    validate_device_type,
    validate_model_package,
    zip_folder,
)
from aiot.artifacts.schemas import SCHEMAS, render_schema
from tests.artifacts.conftest import EXAMPLES, REPO

MODELS = sorted(p.parent for p in (EXAMPLES / "models").glob("*/model.json"))
APPS = sorted(p.parent for p in (EXAMPLES / "apps").glob("*/app.json"))
DEVICE_TYPES = sorted((EXAMPLES / "device-types").glob("*.json"))


def test_all_samples_are_present() -> None:
    assert {p.name for p in MODELS} >= {"face-detector", "comfort"}
    assert {p.name for p in APPS} >= {"intruder-alert", "smart-classroom", "smart-home"}
    assert {p.stem for p in DEVICE_TYPES} >= {"camera", "light", "temperature", "fan", "display", "ac", "lamp", "alarm"}
    for folder in MODELS + APPS:
        assert (folder / "README.md").is_file(), folder


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_sample_model_validates(folder: Path, tmp_path: Path) -> None:
    report = validate_model_package(zip_folder(folder, tmp_path / f"{folder.name}.zip"))
    assert report.ok, [str(p) for p in report.problems]
    assert report.manifest is not None and report.manifest.name == folder.name


@pytest.mark.parametrize("folder", APPS, ids=[p.name for p in APPS])
def test_sample_app_validates(folder: Path, tmp_path: Path, catalog: StaticCatalog) -> None:
    report = validate_app_package(zip_folder(folder, tmp_path / f"{folder.name}.zip"), catalog)
    assert report.ok, [str(p) for p in report.problems]
    assert report.manifest is not None and report.manifest.name == folder.name


def test_sample_app_needs_the_catalog(tmp_path: Path) -> None:
    """The same app fails against an empty platform: the catalog check is real."""
    report = validate_app_package(zip_folder(EXAMPLES / "apps" / "intruder-alert", tmp_path / "a.zip"), StaticCatalog())
    assert set(report.codes()) == {"unknown_model", "unknown_device_type"}


@pytest.mark.parametrize("path", DEVICE_TYPES, ids=[p.stem for p in DEVICE_TYPES])
def test_sample_device_type_validates(path: Path) -> None:
    report = validate_device_type(path.read_bytes(), path.name)
    assert report.ok, [str(p) for p in report.problems]
    assert report.manifest is not None and report.manifest.name == path.stem


def _published(kind: str) -> dict:
    return json.loads((REPO / "docs" / "packages" / SCHEMAS[kind][0]).read_text())


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_published_schemas_are_current(kind: str) -> None:
    """docs/packages/*.schema.json must be regenerated when a manifest model changes."""
    path = REPO / "docs" / "packages" / SCHEMAS[kind][0]
    assert path.read_text(encoding="utf-8") == render_schema(kind), (
        "stale schema: run python -c 'from pathlib import Path; from aiot.artifacts import export_schemas; "
        'export_schemas(Path("docs/packages"))\''
    )


def test_samples_match_published_schemas() -> None:
    """The JSON Schemas accept every sample and reject the cross-field faults they encode (port iff web)."""
    for folder in MODELS:
        jsonschema.validate(json.loads((folder / "model.json").read_text()), _published("model"))
    for folder in APPS:
        jsonschema.validate(json.loads((folder / "app.json").read_text()), _published("app"))
    for path in DEVICE_TYPES:
        jsonschema.validate(json.loads(path.read_text()), _published("device-type"))
    app = json.loads((EXAMPLES / "apps" / "smart-home" / "app.json").read_text())
    del app["port"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(app, _published("app"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "cam", "kind": "sensor", "commands": {"x": {}}}, _published("device-type"))


def test_schema_for_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown schema kind"):
        schema_for("widget")


# --------------------------------------------------------------------------- zip_folder


def test_zip_folder_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "model.json").write_text("{}")
    (src / "pkg" / "b.py").write_text("b = 1\n")
    (src / "pkg" / "a.py").write_text("a = 1\n")
    (src / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    (src / "pkg" / "stale.pyc").write_bytes(b"junk")
    (src / ".env").write_text("SECRET=1")
    (src / ".git" / "HEAD").write_text("ref")
    first = zip_folder(src, tmp_path / "one.zip").read_bytes()
    # Same content, different mtimes and creation order -> same bytes.
    os.utime(src / "pkg" / "a.py", (1_000_000_000, 1_000_000_000))
    (src / "pkg" / "a.py").unlink()
    (src / "pkg" / "a.py").write_text("a = 1\n")
    second = zip_folder(src, tmp_path / "two.zip").read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        assert zf.namelist() == ["model.json", "pkg/a.py", "pkg/b.py"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    (src / "pkg" / "a.py").write_text("a = 2\n")
    assert zip_folder(src, tmp_path / "three.zip").read_bytes() != first


def test_zip_folder_skips_its_own_output_and_refuses_links(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    zip_folder(src, src / "out.zip")
    zip_folder(src, src / "out.zip")
    with zipfile.ZipFile(src / "out.zip") as zf:
        assert zf.namelist() == ["a.txt"]
    (src / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="symbolic links"):
        package_files(src)


def test_sample_zips_are_reproducible(tmp_path: Path) -> None:
    for folder in MODELS + APPS:
        one = zip_folder(folder, tmp_path / "1.zip").read_bytes()
        two = zip_folder(folder, tmp_path / "2.zip").read_bytes()
        assert one == two, folder
