"""Package manifest formats: the one definition of `model.json`, `app.json` and device type files.

Everything else (validation, the published JSON Schemas in `docs/packages/`, the API, the deployer) reads these
classes, so a format change happens here once. Models are strict (`"512"` is not an integer) and forbid
unknown keys, because a typo in a manifest should be reported, not silently ignored.

Rules that span several fields (a web app needs a port, a sensor has no commands, ...) raise
`PydanticCustomError` with a stable error type; `validate.py` turns that type into the problem `code` users
and tests see, so those types are part of the contract.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

FORMAT_VERSION = 1
"""Version of these manifest formats; bumped only for incompatible changes."""

SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
# A model reference may name the model's owner (a username, same rule as aiot.accounts): `owner/name`.
OWNER_PATTERN = r"^[a-z][a-z0-9_.-]{1,63}$"
MODEL_REF_PATTERN = r"^([a-z][a-z0-9_.-]{1,63}/)?[a-z][a-z0-9-]{1,62}$"
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
ENTRYPOINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
SCRIPT_PATTERN = r"^([A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z_][A-Za-z0-9_-]*\.py$"
FILE_PATTERN = r"^([A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*$"

_SLUG_RE = re.compile(SLUG_PATTERN)
_OWNER_RE = re.compile(OWNER_PATTERN)

ImageEncoding = Literal["jpeg", "png"]
ScalarType = Literal["number", "integer", "string", "boolean"]

DEFAULT_IMAGE_MAX_BYTES = 5 * 1024 * 1024


class _Strict(BaseModel):
    """Base of every manifest model: strict types, unknown keys rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


def _check_slug(value: str, what: str) -> str:
    if not _SLUG_RE.match(value):
        raise PydanticCustomError(
            "bad_name",
            "{what} '{value}' is not a valid name: use 2-63 characters, lowercase letters, digits and '-', "
            "starting with a letter (pattern {pattern})",
            {"what": what, "value": value, "pattern": SLUG_PATTERN},
        )
    return value


def _check_version(value: str) -> str:
    """Parse with `packaging` and return the normalised form, so `v1.0.0` and `1.0.0` are one version."""
    try:
        parsed = Version(value)
    except InvalidVersion:
        raise PydanticCustomError(
            "bad_version",
            "version '{value}' is not a valid version; expected something like '1.0.0' or '2.1.0rc1'",
            {"value": value},
        ) from None
    if parsed.local is not None:
        raise PydanticCustomError(
            "bad_version", "version '{value}' must not have a local part ('+...')", {"value": value}
        )
    return str(parsed)


# --------------------------------------------------------------------------- data fields (model I/O)


class _FieldBase(_Strict):
    description: str = Field("", max_length=2000, description="What the field means, for people.")
    required: bool = Field(True, description="Whether a request (or a response) must contain the field.")


class NumberField(_FieldBase):
    """A JSON number (integers are accepted too)."""

    type: Literal["number"] = Field(description="Field type.")
    unit: str | None = Field(None, max_length=32, description="Unit of measure, e.g. '°C' or 'lx'.")
    minimum: float | None = Field(None, description="Smallest accepted value (inclusive).")
    maximum: float | None = Field(None, description="Largest accepted value (inclusive).")


class IntegerField(_FieldBase):
    """A JSON integer."""

    type: Literal["integer"] = Field(description="Field type.")
    unit: str | None = Field(None, max_length=32, description="Unit of measure.")
    minimum: int | None = Field(None, description="Smallest accepted value (inclusive).")
    maximum: int | None = Field(None, description="Largest accepted value (inclusive).")


class StringField(_FieldBase):
    """A JSON string, optionally limited to a fixed set of values."""

    type: Literal["string"] = Field(description="Field type.")
    enum: list[str] | None = Field(None, min_length=1, description="The only values allowed, if set.")
    max_length: int | None = Field(None, ge=1, description="Longest accepted string, in characters.")


class BooleanField(_FieldBase):
    """A JSON true/false."""

    type: Literal["boolean"] = Field(description="Field type.")


class ArrayField(_FieldBase):
    """A JSON array whose items all have one scalar or object type."""

    type: Literal["array"] = Field(description="Field type.")
    items: Literal["number", "integer", "string", "boolean", "object"] = Field(
        "number", description="Type of every item."
    )
    max_items: int | None = Field(None, ge=1, description="Most items accepted.")


class ObjectField(_FieldBase):
    """A free-form JSON object (its inner shape is documented in `description`)."""

    type: Literal["object"] = Field(description="Field type.")


class ImageField(_FieldBase):
    """A binary image. Over JSON it travels as a base64 string; in a multipart request as a file part.

    The model's `predict` receives the raw encoded bytes (not decoded pixels), so it decides how to decode.
    """

    type: Literal["image"] = Field(description="Field type.")
    encodings: list[ImageEncoding] = Field(
        default_factory=lambda: ["jpeg", "png"], min_length=1, description="Accepted image encodings."
    )
    max_bytes: int = Field(
        DEFAULT_IMAGE_MAX_BYTES, ge=1, le=64 * 1024 * 1024, description="Largest accepted encoded image, bytes."
    )


DataField = Annotated[
    NumberField | IntegerField | StringField | BooleanField | ArrayField | ObjectField | ImageField,
    Field(discriminator="type"),
]
"""One named input or output of a model; `type` selects which other keys apply."""

FieldName = Annotated[str, Field(pattern=IDENT_PATTERN)]


class Resources(_Strict):
    """Resource hints the placement uses to pick a node and the runtime uses as limits."""

    cpu: float = Field(0.5, gt=0, le=64, description="CPU cores one replica needs (fractions allowed).")
    memory_mb: int = Field(512, ge=16, le=262144, description="Memory one replica needs, in MiB.")
    replicas: int = Field(1, ge=1, le=32, description="How many copies of the model server to run by default.")


class Batching(_Strict):
    """Adaptive batching: concurrent predict requests are grouped into one `predict_batch(list)` call."""

    max_batch_size: int = Field(16, ge=2, le=256, description="Most requests in one batch call.")
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="Longest a request waits for others to join its batch, in ms."
    )


class ExampleImage(_Strict):
    """An example image stored inside the package, used for an image field in `example`."""

    file: str = Field(pattern=FILE_PATTERN, description="Path of the image inside the package.")


# --------------------------------------------------------------------------- model.json


class ModelManifest(_Strict):
    """`model.json`, at the root of a model package (a zip with the code, model files and requirements).

    The platform imports `entrypoint` inside the model server. A class is instantiated with no arguments,
    its optional `load()` is called once, then `predict(inputs)` per request; a plain function is called as
    `function(inputs)`. `inputs` is a dict of the declared input fields (image fields as raw bytes) and the
    return value must be a JSON-serialisable dict with the declared output fields.
    """

    model_config = ConfigDict(
        title="Model package manifest (model.json)",
        json_schema_extra={"$comment": "Generated from aiot.artifacts.manifests.ModelManifest"},
    )

    format: Literal[1] = Field(FORMAT_VERSION, description="Version of this manifest format.")
    name: str = Field(
        description="Package name, unique on the platform: lowercase letters, digits, '-'.",
        json_schema_extra={"pattern": SLUG_PATTERN},
    )
    version: str = Field(
        description="Version (semantic versioning, parsed by PEP 440 rules). Name + version is immutable.",
        examples=["1.0.0"],
    )
    description: str = Field("", max_length=4000, description="What the model does, for app developers.")
    framework: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._+-]{0,31}$",
        description="Main library the model uses, e.g. 'opencv', 'sklearn', 'pytorch', 'python'.",
    )
    entrypoint: str = Field(
        pattern=ENTRYPOINT_PATTERN,
        description="'module:attr' inside the package: a class with load()/predict(inputs) or a function.",
        examples=["detector:FaceDetector"],
    )
    inputs: dict[FieldName, DataField] = Field(min_length=1, description="Named request fields the model accepts.")
    outputs: dict[FieldName, DataField] = Field(min_length=1, description="Named response fields the model returns.")
    requirements: str = Field(
        "requirements.txt",
        pattern=FILE_PATTERN,
        description="pip requirements file inside the package (optional when left at the default).",
    )
    resources: Resources = Field(default_factory=Resources, description="Resource hints.")
    batching: Batching | None = Field(
        None, description="Opt in to adaptive batching (the model should define predict_batch for it to pay)."
    )
    example: dict[FieldName, Any] | None = Field(
        None,
        description="An example request: input name -> value. An image value is {'file': 'path/in/package'} "
        "or a base64 string.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_slug(value, "model name")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _check_version(value)


# --------------------------------------------------------------------------- app.json


class ModelRef(_Strict):
    """A model an app calls, by package name (optionally `owner/name`) and a range of acceptable versions."""

    name: str = Field(
        description="Model package name, or `owner/name` to insist on the name's owner (a username).",
        json_schema_extra={"pattern": MODEL_REF_PATTERN},
    )
    version: str = Field(
        "",
        description="PEP 440 version specifier, e.g. '>=1.0,<2'. Empty accepts any version.",
        examples=[">=1.0,<2"],
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        owner, sep, name = value.partition("/")
        if not sep:
            return _check_slug(value, "model name")
        if not _OWNER_RE.match(owner):
            raise PydanticCustomError(
                "bad_name",
                "owner '{owner}' in model reference '{value}' is not a valid username (pattern {pattern})",
                {"owner": owner, "value": value, "pattern": OWNER_PATTERN},
            )
        _check_slug(name, "model name")
        return value

    @field_validator("version")
    @classmethod
    def _spec(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise PydanticCustomError(
                "bad_specifier",
                "version range '{value}' is not a valid PEP 440 specifier; expected e.g. '>=1.0,<2'",
                {"value": value},
            ) from None
        return value


class DeviceRef(_Strict):
    """A sensor or controller an app needs; the end user binds it to a real device when scheduling."""

    device_type: str = Field(
        description="Device type name (registered by a platform admin).",
        json_schema_extra={"pattern": SLUG_PATTERN},
    )
    description: str = Field("", max_length=500, description="What the app uses the device for.")

    @field_validator("device_type")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_slug(value, "device type")


class SensorRef(DeviceRef):
    """A sensor an app needs, and how its readings reach the app's callbacks."""

    delivery: Literal["every", "latest"] = Field(
        "every",
        description="every: each reading reaches @on_reading in order (if the app falls behind by more than the "
        "SDK's buffer, the oldest are dropped and counted as lost); latest: while the app is busy only each "
        "device's newest reading waits, older ones are coalesced by design (camera frames, levels acted on "
        "when they change).",
    )


_SETTING_PY_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "string": (str,),
    "boolean": (bool,),
}


class SettingSpec(_Strict):
    """A setting the end user may change when scheduling the app; the app reads it with `settings()`."""

    type: ScalarType = Field(description="Type of the value.")
    default: bool | int | float | str | None = Field(
        None, description="Value used when the user gives none; null makes the setting mandatory."
    )
    description: str = Field("", max_length=500, description="What the setting changes.")

    @model_validator(mode="after")
    def _default_matches(self) -> SettingSpec:
        if self.default is None:
            return self
        allowed = _SETTING_PY_TYPES[self.type]
        is_bool = isinstance(self.default, bool)
        if (is_bool and self.type != "boolean") or not isinstance(self.default, allowed):
            raise PydanticCustomError(
                "default_type_mismatch",
                "default '{default}' is not of the setting's type '{type}'",
                {"default": self.default, "type": self.type},
            )
        return self


AliasName = Annotated[str, Field(pattern=ALIAS_PATTERN)]


class AppContext(_Strict):
    """What the app's code refers to by alias, like a Spring context file: the platform resolves aliases."""

    models: dict[AliasName, ModelRef] = Field(
        default_factory=dict, description="Alias used in model_call(alias, ...) -> model package and version range."
    )
    sensors: dict[AliasName, SensorRef] = Field(
        default_factory=dict, description="Alias used in sensor(alias) / @on_reading(alias) -> sensor type."
    )
    controllers: dict[AliasName, DeviceRef] = Field(
        default_factory=dict, description="Alias used in controller(alias) -> controller type."
    )
    settings: dict[FieldName, SettingSpec] = Field(
        default_factory=dict, description="Settings the app reads with settings(), with defaults."
    )

    @model_validator(mode="after")
    def _distinct_device_aliases(self) -> AppContext:
        both = sorted(set(self.sensors) & set(self.controllers))
        if both:
            raise PydanticCustomError(
                "duplicate_alias",
                "alias(es) {aliases} used for both a sensor and a controller; device aliases must be distinct",
                {"aliases": ", ".join(both)},
            )
        return self


class AppManifest(_Strict):
    """`app.json`, at the root of an app package.

    `entrypoint` is either `module:function` (the platform imports the module and calls the function with no
    arguments) or the path of a script ending in `.py` (run as `python path`). Both must end by calling
    `platform_sdk.run()` (or, for a web app, serving HTTP) and block while the app runs.
    """

    model_config = ConfigDict(
        title="App package manifest (app.json)",
        json_schema_extra={
            "$comment": "Generated from aiot.artifacts.manifests.AppManifest",
            "if": {"properties": {"kind": {"const": "web"}}},
            "then": {"required": ["port"]},
            "else": {"not": {"required": ["port"]}},
        },
    )

    format: Literal[1] = Field(FORMAT_VERSION, description="Version of this manifest format.")
    name: str = Field(description="Package name, unique on the platform.", json_schema_extra={"pattern": SLUG_PATTERN})
    version: str = Field(description="Version (semantic versioning, PEP 440 rules).", examples=["1.0.0"])
    description: str = Field("", max_length=4000, description="What the app does, for end users.")
    kind: Literal["backend", "web"] = Field(
        description="'backend': runs without a UI. 'web': serves HTTP pages on `port`; users get its address."
    )
    entrypoint: str = Field(
        pattern=f"({ENTRYPOINT_PATTERN})|({SCRIPT_PATTERN})",
        description="'module:function', or a script path ending in '.py', inside the package.",
        examples=["main.py", "alert:main"],
    )
    requirements: str = Field(
        "requirements.txt",
        pattern=FILE_PATTERN,
        description="pip requirements file inside the package (optional when left at the default).",
    )
    context: AppContext = Field(default_factory=AppContext, description="Models, devices and settings the app uses.")
    port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        description="TCP port a web app listens on (required for kind 'web', not allowed for 'backend'). "
        "The platform passes the port to use in the PORT environment variable; use it when set.",
    )
    resources: Resources = Field(default_factory=Resources, description="Resource hints.")
    upgrade: Literal["stop-first", "start-first"] = Field(
        "stop-first",
        description="How a running instance moves to a new version: 'stop-first' stops the old version before "
        "starting the new one (never two copies acting on the same devices); 'start-first' starts the new one "
        "beside the old and switches once it runs (no gap for web apps).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_slug(value, "app name")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _check_version(value)

    @model_validator(mode="after")
    def _port_iff_web(self) -> AppManifest:
        if self.kind == "web" and self.port is None:
            raise PydanticCustomError("port_required", "a web app must declare the 'port' it listens on")
        if self.kind == "backend" and self.port is not None:
            raise PydanticCustomError("port_not_allowed", "a backend app must not declare a 'port'")
        return self

    @property
    def is_script(self) -> bool:
        """True when the entrypoint is a script path rather than `module:function`."""
        return self.entrypoint.endswith(".py") and ":" not in self.entrypoint


# --------------------------------------------------------------------------- device types


class ValueField(_Strict):
    """A scalar value a sensor sends, a command argument, or a piece of controller state."""

    type: ScalarType = Field(description="Value type.")
    unit: str | None = Field(None, max_length=32, description="Unit of measure, e.g. '°C', 'lx', '%'.")
    min: float | None = Field(None, description="Smallest valid value (numbers only).")
    max: float | None = Field(None, description="Largest valid value (numbers only).")
    enum: list[str] | None = Field(None, min_length=1, description="Allowed values (strings only).")
    required: bool = Field(True, description="Whether the value must be present (in a reading, command or state).")
    description: str = Field("", max_length=500, description="What the value means.")

    @model_validator(mode="after")
    def _bounds(self) -> ValueField:
        if (self.min is not None or self.max is not None) and self.type not in ("number", "integer"):
            raise PydanticCustomError("bounds_not_numeric", "'min'/'max' only apply to number or integer values")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError(
                "bad_bounds", "'min' ({min}) is greater than 'max' ({max})", {"min": self.min, "max": self.max}
            )
        if self.enum is not None and self.type != "string":
            raise PydanticCustomError("enum_not_string", "'enum' only applies to string values")
        return self


class FrameSpec(_Strict):
    """Binary frames (images) a sensor sends, e.g. a camera; apps get them decoded as numpy arrays."""

    encoding: ImageEncoding = Field(description="Encoding of every frame.")
    max_bytes: int = Field(
        DEFAULT_IMAGE_MAX_BYTES, ge=1, le=64 * 1024 * 1024, description="Largest frame, encoded bytes."
    )
    width: int | None = Field(None, ge=1, le=16384, description="Typical frame width in pixels (a hint).")
    height: int | None = Field(None, ge=1, le=16384, description="Typical frame height in pixels (a hint).")
    fps: float | None = Field(None, gt=0, le=240, description="Typical frames per second (a hint).")


class CommandSpec(_Strict):
    """A command a controller accepts, with its named arguments."""

    description: str = Field("", max_length=500, description="What the command does.")
    args: dict[FieldName, ValueField] = Field(default_factory=dict, description="Arguments, by name.")


class DeviceTypeDefinition(_Strict):
    """A device type (JSON file) registered by a platform admin: a sensor or a controller.

    A sensor sends either `fields` (named values) or a `frame` (binary images). A controller accepts
    `commands` and reports `state` after each command.
    """

    model_config = ConfigDict(
        title="Device type definition",
        json_schema_extra={
            "$comment": "Generated from aiot.artifacts.manifests.DeviceTypeDefinition",
            "if": {"properties": {"kind": {"const": "sensor"}}},
            "then": {
                "oneOf": [{"required": ["fields"]}, {"required": ["frame"]}],
                "not": {"anyOf": [{"required": ["commands"]}, {"required": ["state"]}]},
            },
            "else": {
                "required": ["commands"],
                "not": {"anyOf": [{"required": ["fields"]}, {"required": ["frame"]}]},
            },
        },
    )

    format: Literal[1] = Field(FORMAT_VERSION, description="Version of this format.")
    name: str = Field(description="Device type name, unique.", json_schema_extra={"pattern": SLUG_PATTERN})
    kind: Literal["sensor", "controller"] = Field(
        description="'sensor' (input device, sends readings) or 'controller' (output device, takes commands)."
    )
    description: str = Field("", max_length=2000, description="What the device is.")
    fields: dict[FieldName, ValueField] | None = Field(None, description="Sensor only: named values in every reading.")
    frame: FrameSpec | None = Field(None, description="Sensor only: binary image frames instead of values.")
    commands: dict[FieldName, CommandSpec] | None = Field(
        None, description="Controller only: commands it accepts, by name."
    )
    state: dict[FieldName, ValueField] | None = Field(
        None, description="Controller only: state it reports after a command."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_slug(value, "device type name")

    @model_validator(mode="after")
    def _kind_rules(self) -> DeviceTypeDefinition:
        if self.kind == "sensor":
            if self.commands is not None or self.state is not None:
                raise PydanticCustomError(
                    "sensor_with_commands", "a sensor has no 'commands' or 'state' (those are for controllers)"
                )
            if (self.fields is None) == (self.frame is None):
                raise PydanticCustomError(
                    "sensor_payload", "a sensor needs exactly one of 'fields' (values) or 'frame' (images)"
                )
            if self.fields is not None and not self.fields:
                raise PydanticCustomError("sensor_payload", "'fields' must name at least one value")
        else:
            if self.fields is not None or self.frame is not None:
                raise PydanticCustomError(
                    "controller_with_fields", "a controller has no 'fields' or 'frame' (those are for sensors)"
                )
            if not self.commands:
                raise PydanticCustomError("controller_commands", "a controller needs at least one command")
        return self


MANIFEST_FILES: dict[str, str] = {"model": "model.json", "app": "app.json"}
"""Manifest file name at the root of each package kind."""
