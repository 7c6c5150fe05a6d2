"""Original device type, device instance and app zips -> our device types, a registration plan, app.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiot.artifacts.legacy import ALIAS_FORMAT, LegacyFormatError, convert, convert_path, detect
from aiot.artifacts.legacy.devices import location_name
from aiot.artifacts.packing import zip_folder
from aiot.artifacts.validate import StaticCatalog, validate_app_package, validate_device_type
from platform_sdk import compat

from .originals import app_files, device_instance_files, device_type_files, model_files, to_zip


def test_device_types_convert_and_validate(tmp_path: Path) -> None:
    files = device_type_files()
    assert detect(files) == "device-types"
    converted = convert_path(to_zip(files, tmp_path / "types.zip"))
    types = {json.loads(v)["name"]: json.loads(v) for v in converted.files.values()}
    assert set(types) == {"legacy-temp", "legacy-light", "legacy-cam", "legacy-fan"}
    assert types["legacy-temp"]["fields"] == {"value": {"type": "number"}}
    assert types["legacy-cam"]["frame"] == {"encoding": "jpeg"}
    assert types["legacy-fan"]["commands"]["set"]["args"] == {"value": {"type": "string"}}
    for name, raw in converted.files.items():
        assert validate_device_type(raw, name).ok
    assert any("TEMP" in n and "value" in n for n in converted.notes)


def test_device_type_value_names_from_a_mapping() -> None:
    files = {
        "sensor/DHT.json": json.dumps(
            {"company": "A", "model": "B", "parameter_count": 2, "parameters": ["float", "int"]}
        ).encode()
    }
    default = convert(files, "t.zip")
    assert json.loads(default.files["legacy-dht.json"])["fields"] == {
        "value_0": {"type": "number"},
        "value_1": {"type": "integer"},
    }
    named = convert(files, "t.zip", names={"DHT": ["temperature", "humidity"]})
    assert list(json.loads(named.files["legacy-dht.json"])["fields"]) == ["temperature", "humidity"]
    with pytest.raises(LegacyFormatError, match="gives 1 names but the type has 2"):
        convert(files, "t.zip", names={"DHT": ["temperature"]})


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"parameter_count": 1, "parameters": ["decimal"]}, "parameters[0]"),
        ({"parameter_count": 2, "parameters": ["int"]}, "parameter_count"),
        ({"parameter_count": 1}, "parameters"),
        ({"parameter_count": 2, "parameters": ["image", "int"]}, "parameters"),
    ],
)
def test_bad_device_types_name_file_and_key(doc: dict, key: str) -> None:
    with pytest.raises(LegacyFormatError) as info:
        convert({"sensor/X.json": json.dumps(doc).encode()}, "t.zip")
    assert (info.value.file, info.value.key) == ("sensor/X.json", key)


def test_device_instances_plan_locations_from_street_and_city() -> None:
    files = device_instance_files()
    assert detect(files) == "devices"
    converted = convert(files, "devices.zip")
    assert converted.locations == [{"name": "mg-road-pune", "kind": "site", "address": "MG Road, Pune"}]
    assert {(d["name"], d["device_type"], d["kind"], d["location"]) for d in converted.devices} == {
        ("temp-t1", "legacy-temp", "sensor", "mg-road-pune"),
        ("light-l1", "legacy-light", "sensor", "mg-road-pune"),
        ("fan-f1", "legacy-fan", "controller", "mg-road-pune"),
    }
    assert location_name("MG Road", "Pune") == "mg-road-pune"
    given = convert(files, "devices.zip", location="lab")
    assert {d["location"] for d in given.devices} == {"lab"}


def test_device_instance_without_city_is_refused() -> None:
    files = {"sensors/a.json": json.dumps({"type": "TEMP", "geo_location": {"street": "x"}}).encode()}
    with pytest.raises(LegacyFormatError) as info:
        convert(files, "d.zip")
    assert (info.value.file, info.value.key) == ("sensors/a.json", "geo_location.city")


def _catalog() -> StaticCatalog:
    return StaticCatalog(
        models={"fan-advisor": ["1.0.0"]},
        device_types={"legacy-temp": "sensor", "legacy-light": "sensor", "legacy-fan": "controller"},
    )


def test_app_converts_one_alias_per_index(tmp_path: Path) -> None:
    files = app_files("5f1c0ffee")
    assert detect(files) == "app"
    converted = convert(files, "app.zip", models={"5f1c0ffee": "fan-advisor"})
    manifest = converted.manifest
    assert manifest["name"] == "smart-fan"
    assert manifest["kind"] == "backend"
    assert manifest["entrypoint"] == "app.py"
    # sensors.json listed LIGHT first with index 1: the index decides
    assert manifest["context"]["sensors"] == {
        "sensor_0": {"device_type": "legacy-temp", "description": "original sensor index 0 (TEMP)"},
        "sensor_1": {"device_type": "legacy-light", "description": "original sensor index 1 (LIGHT)"},
    }
    assert manifest["context"]["controllers"]["controller_0"]["device_type"] == "legacy-fan"
    assert manifest["context"]["models"] == {"model_0": {"name": "fan-advisor", "version": ""}}
    assert converted.files["app.py"] == files["app.py"]  # the code is unchanged
    pkg = tmp_path / "pkg"
    for name, data in converted.files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_bytes(data)
    report = validate_app_package(zip_folder(pkg, tmp_path / "app.zip"), _catalog())
    assert report.ok, report.problems


def test_app_without_model_mapping_uses_the_id_and_says_so() -> None:
    converted = convert(app_files("Fan-Advisor"), "app.zip")
    assert converted.manifest["context"]["models"]["model_0"]["name"] == "fan-advisor"
    assert any("--model Fan-Advisor=NAME" in n for n in converted.notes)


def test_web_app_and_extra_scripts(tmp_path: Path) -> None:
    files = dict(
        app_files(),
        **{
            "templates/index.html": b"<html></html>",
            "scripts/helper.py": b"print('hi')\n",
            "config/control.json": json.dumps(
                {"main": "app.py", "scripts": [{"filename": "helper.py", "args": "a b"}]}
            ).encode(),
        },
    )
    converted = convert(files, "web.zip", models={"5f1c0ffee": "fan-advisor"})
    assert converted.manifest["kind"] == "web" and converted.manifest["port"] == 6015
    assert converted.manifest["entrypoint"] == "aiot_legacy_launcher.py"
    launcher = converted.files["aiot_legacy_launcher.py"].decode()
    assert "('scripts/helper.py', ['a', 'b'])" in launcher
    compile(launcher, "launcher", "exec")


@pytest.mark.parametrize(
    ("change", "file", "key"),
    [
        ({"config/control.json": b'{"scripts": []}'}, "config/control.json", "main"),
        ({"config/control.json": b'{"main": "missing.py"}'}, "missing.py", "config/control.json main"),
        (
            {"config/sensors.json": b'{"count": 3, "instances": [{"index": 0, "type": "TEMP"}]}'},
            "config/sensors.json",
            "count",
        ),
        ({"config/sensors.json": b'{"instances": [{"index": 0}]}'}, "config/sensors.json", "instances[0].type"),
        ({"config/models.json": b'{"instances": []}'}, "config/models.json", None),
        ({"app.json": b'{"description": "x"}'}, "app.json", "app_name"),
    ],
)
def test_bad_original_apps_name_file_and_key(change: dict, file: str, key: str | None) -> None:
    with pytest.raises(LegacyFormatError) as info:
        convert(dict(app_files(), **change), "bad.zip")
    assert (info.value.file, info.value.key) == (file, key), str(info.value)


def test_alias_convention_is_shared_with_the_sdk() -> None:
    for kind, pattern in ALIAS_FORMAT.items():
        assert compat.alias(kind, 3) == pattern.format(3)


def test_indexes_that_are_not_0_to_n_keep_the_file_order_and_say_so() -> None:
    files = dict(
        app_files(),
        **{
            "config/sensors.json": b'{"count": 2, "instances": [{"index": 1, "type": "TEMP"}, '
            b'{"index": 2, "type": "LIGHT"}]}'
        },
    )
    converted = convert(files, "app.zip")
    sensors = converted.manifest["context"]["sensors"]
    assert [s["device_type"] for s in sensors.values()] == ["legacy-temp", "legacy-light"]
    assert any("indexes [1, 2] are not 0..1" in n for n in converted.notes)


@pytest.mark.parametrize("builder", [app_files, model_files])
def test_a_bad_version_is_a_clear_error_not_a_crash(builder) -> None:  # noqa: ANN001
    with pytest.raises(LegacyFormatError, match=r"\(converted\) \[version\]"):
        convert(builder(), "x.zip", version="not a version")
