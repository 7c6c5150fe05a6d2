"""`aiot import --dry-run`: every original format converted into a folder, in dependency order, offline."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aiot.cli.main import app

from .originals import app_files, device_instance_files, device_type_files, model_files, to_zip


def test_dry_run_writes_every_converted_package(tmp_path: Path) -> None:
    paths = [
        to_zip(app_files("5f1c0ffee"), tmp_path / "app.zip"),
        to_zip(model_files(), tmp_path / "model.zip"),
        to_zip(device_instance_files(), tmp_path / "devices.zip"),
        to_zip(device_type_files(), tmp_path / "types.zip"),
    ]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["import", *map(str, paths), "--dry-run", str(out), "--model", "5f1c0ffee=fan-advisor"]
    )
    assert result.exit_code == 0, result.output
    order = [line.split(":")[0] for line in result.output.splitlines() if "original" in line and "->" in line]
    assert order == ["types.zip", "devices.zip", "model.zip", "app.zip"]
    assert json.loads((out / "fan-advisor" / "model.json").read_text())["name"] == "fan-advisor"
    assert json.loads((out / "smart-fan" / "app.json").read_text())["context"]["models"]["model_0"] == {
        "name": "fan-advisor",
        "version": "",
    }
    assert sorted(p.name for p in (out / "device-types").iterdir()) == [
        "legacy-cam.json",
        "legacy-fan.json",
        "legacy-light.json",
        "legacy-temp.json",
    ]
    plan = json.loads((out / "devices-devices.json").read_text())
    assert {d["location"] for d in plan["devices"]} == {"mg-road-pune"}
    assert "sensor_0 (legacy-temp)" in result.output


def test_a_bad_original_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    files = model_files()
    files["config.json"] = files["config.json"].replace(b'"pkl"', b'"onnx"')
    result = CliRunner().invoke(
        app,
        ["import", str(to_zip(files, tmp_path / "bad.zip")), "--dry-run", str(tmp_path / "out")],
        standalone_mode=False,
    )
    assert result.exit_code != 0
    assert "config.json [prediction.model_type]" in str(result.exception)
    assert not (tmp_path / "out").exists()
