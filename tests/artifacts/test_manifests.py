"""Manifest models: normalisation and cross-field rules that the validators rely on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aiot.artifacts import AppManifest, DeviceTypeDefinition, ModelManifest
from aiot.artifacts.validate import validate_schema

BASE_MODEL = {
    "name": "m1",
    "version": "v1.0.0",
    "framework": "python",
    "entrypoint": "pkg.mod:predict",
    "inputs": {"img": {"type": "image"}},
    "outputs": {"n": {"type": "integer"}},
}


def test_model_defaults_and_version_normalised() -> None:
    m = ModelManifest.model_validate(BASE_MODEL)
    assert m.version == "1.0.0"
    assert m.requirements == "requirements.txt"
    assert (m.resources.cpu, m.resources.memory_mb, m.resources.replicas) == (0.5, 512, 1)
    image = m.inputs["img"]
    assert image.type == "image" and image.encodings == ["jpeg", "png"] and image.max_bytes > 0


@pytest.mark.parametrize("version", ["1.0.0+local", "latest", ""])
def test_model_bad_versions(version: str) -> None:
    with pytest.raises(ValidationError, match="version"):
        ModelManifest.model_validate({**BASE_MODEL, "version": version})


def test_strict_types() -> None:
    _, problems = validate_schema(ModelManifest, {**BASE_MODEL, "resources": {"replicas": "2"}}, "model.json")
    assert [(p.code, p.field) for p in problems] == [("wrong_type", "resources.replicas")]


def test_union_tag_is_not_in_the_path() -> None:
    data = {**BASE_MODEL, "inputs": {"img": {"type": "image", "max_bytes": -1}}}
    _, problems = validate_schema(ModelManifest, data, "model.json")
    assert [(p.code, p.field) for p in problems] == [("invalid_value", "inputs.img.max_bytes")]


def test_app_entrypoint_forms() -> None:
    base = {"name": "a1", "version": "1.0", "kind": "backend"}
    assert AppManifest.model_validate({**base, "entrypoint": "src/main.py"}).is_script
    assert not AppManifest.model_validate({**base, "entrypoint": "app.main:run"}).is_script
    for bad in ("main", "../main.py", "/abs/main.py", "main:", "a b:c", "main.txt"):
        with pytest.raises(ValidationError):
            AppManifest.model_validate({**base, "entrypoint": bad})


def test_web_app_port_rules() -> None:
    base = {"name": "a1", "version": "1.0", "entrypoint": "main.py"}
    assert AppManifest.model_validate({**base, "kind": "web", "port": 8000}).port == 8000
    for data, code in (
        ({"kind": "web"}, "port_required"),
        ({"kind": "backend", "port": 8000}, "port_not_allowed"),
        ({"kind": "web", "port": 80}, "invalid_value"),
    ):
        _, problems = validate_schema(AppManifest, {**base, **data}, "app.json")
        assert [(p.code, p.field) for p in problems] == [(code, "port")]


def test_setting_defaults_are_typed() -> None:
    base = {"name": "a1", "version": "1.0", "kind": "backend", "entrypoint": "main.py"}
    ok = {
        "n": {"type": "number", "default": 3},
        "b": {"type": "boolean", "default": False},
        "s": {"type": "string"},
        "i": {"type": "integer", "default": 2},
    }
    AppManifest.model_validate({**base, "context": {"settings": ok}})
    for bad in (
        {"type": "integer", "default": True},
        {"type": "integer", "default": 2.5},
        {"type": "boolean", "default": 1},
        {"type": "number", "default": "3"},
    ):
        _, problems = validate_schema(AppManifest, {**base, "context": {"settings": {"x": bad}}}, "app.json")
        assert problems and problems[0].field == "context.settings.x.default", bad


def test_device_type_kinds() -> None:
    cam = DeviceTypeDefinition.model_validate(
        {"name": "cam", "kind": "sensor", "frame": {"encoding": "jpeg", "width": 640}}
    )
    assert cam.frame is not None and cam.frame.max_bytes > 0
    with pytest.raises(ValidationError):
        DeviceTypeDefinition.model_validate(
            {"name": "cam", "kind": "sensor", "frame": {"encoding": "jpeg"}, "fields": {"x": {"type": "number"}}}
        )
    with pytest.raises(ValidationError):
        DeviceTypeDefinition.model_validate(
            {"name": "sw", "kind": "controller", "commands": {"on": {}}, "fields": {"x": {"type": "number"}}}
        )
    with pytest.raises(ValidationError):
        DeviceTypeDefinition.model_validate(
            {"name": "sw", "kind": "controller", "commands": {"on": {"args": {"x": {"type": "string", "min": 1}}}}}
        )
