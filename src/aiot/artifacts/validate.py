"""Validation of model packages, app packages and device type files, before anything is stored.

A report lists every problem at once (an uploader fixes them all in one round), each naming the file, the
field (a dotted JSON path such as `context.models.detector.version`, or `line N` inside a text file) and a
stable `code`. Uploaded code is never imported or run here: Python files are only `compile()`d and their
top-level names read with `ast`.

Problem codes beyond those of `unpack.py`:
`missing_manifest`, `invalid_json`, `missing_field`, `unknown_field`, `wrong_type`, `invalid_value`,
`bad_name`, `bad_version`, `bad_specifier`, `port_required`, `port_not_allowed`, `default_type_mismatch`,
`duplicate_alias`, `sensor_payload`, `sensor_with_commands`, `controller_with_fields`, `controller_commands`,
`bad_bounds`, `bounds_not_numeric`, `enum_not_string`, `entrypoint_missing`, `entrypoint_attr_missing`,
`entrypoint_no_predict`, `syntax_error`, `missing_file`, `bad_requirement`, `unsupported_requirement`,
`example_mismatch`, `unknown_model`, `model_version_unavailable`, `unknown_device_type`, `wrong_device_kind`.
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ValidationError

from aiot.artifacts.manifests import (
    ENTRYPOINT_PATTERN,
    SCRIPT_PATTERN,
    AppContext,
    AppManifest,
    DataField,
    DeviceTypeDefinition,
    ImageField,
    ModelManifest,
)
from aiot.artifacts.packing import zip_folder
from aiot.artifacts.requirements import check_lines
from aiot.artifacts.unpack import (
    DEFAULT_LIMITS,
    ArchiveListing,
    UnpackError,
    UnpackLimits,
    check_entry_name,
    inspect_archive,
    read_entry,
)

__all__ = [
    "Catalog",
    "PackageInvalid",
    "Problem",
    "StaticCatalog",
    "ValidationReport",
    "validate_app_package",
    "validate_device_type",
    "validate_model_package",
    "zip_folder",
]

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_SOURCE_BYTES = 4 * 1024 * 1024
MAX_REQUIREMENTS_BYTES = 256 * 1024

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a package: where (file, field) and what (code, message)."""

    file: str
    field: str | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "field": self.field, "code": self.code, "message": self.message}

    def __str__(self) -> str:
        where = self.file + (f" [{self.field}]" if self.field else "")
        return f"{where}: {self.message} ({self.code})"


@dataclass
class ValidationReport:
    """Outcome of validating one package or device type file."""

    kind: str
    sha256: str
    size: int
    problems: list[Problem] = field(default_factory=list)
    manifest: BaseModel | None = None
    files: list[str] = field(default_factory=list)
    requirements_file: str | None = None
    """The requirements file that was checked (the manifest's `requirements`), None when the package has none."""
    requirements_sha256: str | None = None
    """SHA-256 of that file's bytes: the node installs exactly this file (the archive's hash pins it)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def codes(self) -> list[str]:
        """Problem codes in order (handy in tests and logs)."""
        return [p.code for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kind": self.kind,
            "sha256": self.sha256,
            "size": self.size,
            "problems": [p.to_dict() for p in self.problems],
            "manifest": self.manifest.model_dump(mode="json") if self.manifest is not None else None,
            "files": list(self.files),
        }

    def raise_if_invalid(self) -> None:
        """Raise `PackageInvalid` when there is any problem."""
        if self.problems:
            raise PackageInvalid(self)


class PackageInvalid(ValueError):
    """A package or device type failed validation; `report` holds every problem."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(f"{report.kind} rejected: " + "; ".join(str(p) for p in report.problems))


class Catalog(Protocol):
    """What the platform already has, so an app's references can be checked."""

    def model_versions(self, name: str) -> list[str]:
        """Versions of the model package `name` that apps may use (empty when unknown)."""
        ...

    def device_type_kind(self, name: str) -> str | None:
        """'sensor' or 'controller' for a registered device type, None when unknown."""
        ...


@dataclass
class StaticCatalog:
    """A `Catalog` from plain dicts: for offline validation (CLI) and tests."""

    models: dict[str, list[str]] = field(default_factory=dict)
    device_types: dict[str, str] = field(default_factory=dict)

    def model_versions(self, name: str) -> list[str]:
        return list(self.models.get(name, []))

    def device_type_kind(self, name: str) -> str | None:
        return self.device_types.get(name)


# --------------------------------------------------------------------------- JSON and schema errors

_CUSTOM_CODES = {
    "bad_name": None,
    "bad_version": None,
    "bad_specifier": None,
    "port_required": "port",
    "port_not_allowed": "port",
    "default_type_mismatch": "default",
    "duplicate_alias": None,
    "sensor_payload": "fields",
    "sensor_with_commands": "commands",
    "controller_with_fields": "fields",
    "controller_commands": "commands",
    "bad_bounds": "min",
    "bounds_not_numeric": "min",
    "enum_not_string": "enum",
}
"""Custom error types raised by manifests.py -> field to append when the error is raised for a whole object."""


_TAG_ERRORS = {"union_tag_invalid": "type", "union_tag_not_found": "type"}
"""Discriminated-union errors are raised for the whole object; the fault is in its `type` key."""


def _code_for(error_type: str) -> str:
    if error_type in _CUSTOM_CODES:
        return error_type
    if error_type in ("missing", "union_tag_not_found"):
        return "missing_field"
    if error_type == "extra_forbidden":
        return "unknown_field"
    if error_type.endswith(("_type", "_parsing")) or error_type == "model_attributes_type":
        return "wrong_type"
    return "invalid_value"


def _field_path(data: Any, loc: tuple[int | str, ...]) -> str | None:
    """Dotted path of a pydantic error location in the *input*, leaving out union tags pydantic inserts."""
    parts: list[str] = []
    cur: Any = data
    for seg in loc:
        in_dict = isinstance(cur, dict) and seg in cur
        if in_dict or (isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur)):
            parts.append(str(seg))
            cur = cur[seg]
        elif isinstance(cur, dict) and seg in (cur.get("type"), cur.get("kind")):
            continue  # discriminated-union tag
        elif isinstance(cur, dict):
            parts.append(str(seg))  # a missing key
            cur = None
        else:
            break  # inside a scalar: pydantic names union members (e.g. 'int'), not input keys
    return ".".join(parts) or None


def _join(path: str | None, suffix: str | None) -> str | None:
    if not suffix:
        return path
    return f"{path}.{suffix}" if path else suffix


def parse_json(raw: bytes, file: str) -> tuple[Any, list[Problem]]:
    """Decode JSON, reporting the line and column of a syntax error."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [Problem(file, None, "invalid_json", f"not UTF-8 text (byte {exc.start})")]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [
            Problem(file, None, "invalid_json", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        ]
    except RecursionError:
        return None, [Problem(file, None, "invalid_json", "JSON is nested too deeply")]


def validate_schema(model: type[M], data: Any, file: str) -> tuple[M | None, list[Problem]]:
    """Validate parsed JSON against a manifest model; one problem per schema error, with its JSON path."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        problems: list[Problem] = []
        seen: set[tuple[str | None, str]] = set()
        for err in exc.errors(include_url=False):
            code = _code_for(err["type"])
            suffix = _CUSTOM_CODES.get(err["type"]) or _TAG_ERRORS.get(err["type"])
            path = _join(_field_path(data, tuple(err["loc"])), suffix)
            if (path, code) in seen:
                continue
            seen.add((path, code))
            message = err["msg"]
            if code == "wrong_type" and not isinstance(err.get("input"), dict | list):
                message += f" (got {type(err.get('input')).__name__} {err.get('input')!r})"
            problems.append(Problem(file, path, code, message))
        return None, problems


# --------------------------------------------------------------------------- package reading


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _Package:
    """An archive being validated: its listing, collected problems, and bounded reads of its files."""

    def __init__(self, archive: Path, kind: str, limits: UnpackLimits) -> None:
        self.archive = Path(archive)
        self.limits = limits
        sha, size = _sha256(self.archive)
        self.report = ValidationReport(kind=kind, sha256=sha, size=size)
        self.listing: ArchiveListing = inspect_archive(self.archive, limits, verify=True)
        for up in self.listing.problems:
            self.add(up.path or self.archive.name, None, up.code, up.message)
        # Files we may read: regular entries with safe, unique names.
        unsafe = {p.path for p in self.listing.problems if p.path}
        self.files = sorted(n for n in self.listing.files if n not in unsafe and check_entry_name(n, limits) is None)
        self.report.files = self.files
        # Every file entry, including those with a problem already reported (so they are not also "missing").
        self.present = set(self.listing.files)
        self._compiled: dict[str, ast.Module | None] = {}

    @property
    def readable(self) -> bool:
        return self.listing.readable

    def add(self, file: str, field_: str | None, code: str, message: str) -> None:
        if any((p.file, p.field, p.code) == (file, field_, code) for p in self.report.problems):
            return  # e.g. a damaged entry seen by inspection and again when read
        self.report.problems.append(Problem(file, field_, code, message))

    def read(self, name: str, max_bytes: int) -> bytes | None:
        try:
            return read_entry(self.archive, name, max_bytes, self.limits)
        except UnpackError as exc:
            for up in exc.problems:
                msg = up.message
                if up.code == "too_large":
                    msg = f"file is larger than {max_bytes} bytes"
                self.add(name, None, up.code, msg)
            return None

    def manifest(self, name: str, model: type[M]) -> tuple[M | None, Any]:
        """The validated manifest (None when invalid) and the parsed JSON (None when unparseable)."""
        if name in self.present and name not in self.files:
            return None, None  # there, but damaged or unsafe: already reported
        if name not in self.files:
            nested = [f for f in self.files if f.endswith("/" + name)]
            hint = f"; found {nested[0]}: zip the folder's contents, not the folder" if nested else ""
            self.add(name, None, "missing_manifest", f"{name} is missing at the root of the archive{hint}")
            return None, None
        raw = self.read(name, MAX_MANIFEST_BYTES)
        if raw is None:
            return None, None
        data, problems = parse_json(raw, name)
        self.report.problems.extend(problems)
        if problems:
            return None, None
        manifest, problems = validate_schema(model, data, name)
        self.report.problems.extend(problems)
        self.report.manifest = manifest
        return manifest, data

    def compile(self, name: str) -> ast.Module | None:
        """Compile one Python file (reporting a syntax error once) and return its AST."""
        if name not in self.files:
            return None
        if name in self._compiled:
            return self._compiled[name]
        tree: ast.Module | None = None
        raw = self.read(name, MAX_SOURCE_BYTES)
        if raw is not None:
            try:
                compile(raw, name, "exec", dont_inherit=True)
                tree = ast.parse(raw, name)
            except SyntaxError as exc:
                line = f"line {exc.lineno}" if exc.lineno else None
                self.add(name, line, "syntax_error", f"Python syntax error: {exc.msg}")
            except (ValueError, RecursionError, MemoryError) as exc:
                self.add(name, None, "syntax_error", f"cannot compile: {exc}")
        self._compiled[name] = tree
        return tree

    def compile_all(self) -> None:
        for name in self.files:
            if name.endswith(".py"):
                self.compile(name)

    def module_file(self, module: str) -> str | None:
        base = module.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in self.present:
                return candidate
        return None

    def check_entrypoint(self, manifest_file: str, entrypoint: str, *, want_predict: bool) -> None:
        module, _, attr = entrypoint.partition(":")
        mod_file = self.module_file(module)
        base = module.replace(".", "/")
        if mod_file is None:
            self.add(
                f"{base}.py",
                "entrypoint",
                "entrypoint_missing",
                f"entrypoint module {module!r} not found: expected {base}.py or {base}/__init__.py "
                f"(named by {manifest_file})",
            )
            return
        tree = self.compile(mod_file)
        if tree is None:
            return
        defs = _top_level_defs(tree)
        if attr not in defs:
            self.add(
                mod_file,
                "entrypoint",
                "entrypoint_attr_missing",
                f"{attr!r} is not defined at the top level of {mod_file} (entrypoint {entrypoint!r})",
            )
            return
        node = defs[attr]
        if want_predict and isinstance(node, ast.ClassDef) and not node.bases:
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            if "predict" not in methods:
                self.add(
                    mod_file, "entrypoint", "entrypoint_no_predict", f"class {attr!r} has no predict(inputs) method"
                )

    def check_script(self, script: str) -> None:
        if script not in self.present:
            self.add(script, "entrypoint", "entrypoint_missing", f"entrypoint script {script!r} is not in the package")
            return
        self.compile(script)

    def check_requirements(self, data: Any, manifest_file: str) -> None:
        explicit = isinstance(data, dict) and "requirements" in data
        name = data.get("requirements") if explicit else "requirements.txt"
        if not isinstance(name, str) or check_entry_name(name, self.limits) is not None:
            return  # a schema problem, already reported
        if name not in self.present:
            if explicit:
                self.add(
                    name,
                    "requirements",
                    "missing_file",
                    f"requirements file {name!r} named in {manifest_file} is not in the package",
                )
            return
        if name not in self.files:
            return
        raw = self.read(name, MAX_REQUIREMENTS_BYTES)
        if raw is None:
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.add(name, None, "bad_requirement", "requirements file is not UTF-8 text")
            return
        self.report.requirements_file = name
        self.report.requirements_sha256 = hashlib.sha256(raw).hexdigest()
        for problem in check_lines(text.splitlines())[1]:
            self.add(name, f"line {problem.line}", problem.code, problem.message)


def _top_level_defs(tree: ast.Module) -> dict[str, ast.AST]:
    """Names bound at module top level (also inside top-level if/try blocks), to the node binding them."""
    found: dict[str, ast.AST] = {}

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            found[name.id] = node
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
                found[node.target.id] = node
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    found[(alias.asname or alias.name).split(".")[0]] = node
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


# --------------------------------------------------------------------------- model packages


def _example_value_ok(spec: Any, value: Any, pkg: _Package, key: str) -> str | None:
    """None when `value` fits the input spec, else what was expected."""
    t = spec.type
    if t == "number":
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
    if t == "integer":
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if t == "boolean":
        return None if isinstance(value, bool) else "true or false"
    if t == "string":
        if not isinstance(value, str):
            return "a string"
        return None if not spec.enum or value in spec.enum else f"one of {spec.enum}"
    if t == "array":
        return None if isinstance(value, list) else "an array"
    if t == "object":
        return None if isinstance(value, dict) else "an object"
    assert isinstance(spec, ImageField)
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        if value["file"] not in pkg.files:
            pkg.add(
                value["file"],
                f"example.{key}",
                "missing_file",
                f"example image {value['file']!r} is not in the package",
            )
        return None
    if isinstance(value, str):
        try:
            base64.b64decode(value, validate=True)
            return None
        except (binascii.Error, ValueError):
            return "a base64 string"
    return "{'file': 'path/in/package'} or a base64 string"


def _check_example(manifest: ModelManifest, pkg: _Package) -> None:
    if manifest.example is None:
        return
    inputs: dict[str, DataField] = manifest.inputs
    for key, value in manifest.example.items():
        spec = inputs.get(key)
        if spec is None:
            pkg.add("model.json", f"example.{key}", "example_mismatch", f"{key!r} is not a declared input")
            continue
        expected = _example_value_ok(spec, value, pkg, key)
        if expected:
            pkg.add("model.json", f"example.{key}", "example_mismatch", f"example value must be {expected}")
    for key, spec in inputs.items():
        if spec.required and key not in manifest.example:
            pkg.add("model.json", "example", "example_mismatch", f"example lacks the required input {key!r}")


def validate_model_package(archive: Path, limits: UnpackLimits = DEFAULT_LIMITS) -> ValidationReport:
    """Check a model package zip: archive safety, `model.json`, entrypoint, requirements, example."""
    pkg = _Package(archive, "model", limits)
    if not pkg.readable:
        return pkg.report
    manifest, data = pkg.manifest("model.json", ModelManifest)
    # The file checks also run when the manifest has schema errors (using the fields that are usable), so
    # one upload reports every problem.
    entrypoint = _usable(data, "entrypoint", ENTRYPOINT_PATTERN)
    if entrypoint:
        pkg.check_entrypoint("model.json", entrypoint, want_predict=True)
    if isinstance(data, dict):
        pkg.check_requirements(data, "model.json")
    if manifest is not None:
        _check_example(manifest, pkg)
    pkg.compile_all()
    return pkg.report


# --------------------------------------------------------------------------- app packages


def _usable(data: Any, key: str, pattern: str) -> str | None:
    """`data[key]` when it is a string matching `pattern` (usable even if other fields are invalid)."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and re.fullmatch(pattern, value) else None


def _usable_context(data: Any) -> AppContext | None:
    if not isinstance(data, dict):
        return None
    try:
        return AppContext.model_validate(data.get("context", {}))
    except ValidationError:
        return None


def _check_catalog(context: AppContext, catalog: Catalog, pkg: _Package) -> None:
    for alias, ref in context.models.items():
        versions = catalog.model_versions(ref.name)
        if not versions:
            pkg.add(
                "app.json",
                f"context.models.{alias}.name",
                "unknown_model",
                f"no model named {ref.name!r} on the platform",
            )
            continue
        valid: list[str] = []
        for v in versions:
            try:
                Version(v)
                valid.append(v)
            except InvalidVersion:
                continue
        if not list(SpecifierSet(ref.version).filter(valid)):
            pkg.add(
                "app.json",
                f"context.models.{alias}.version",
                "model_version_unavailable",
                f"no version of model {ref.name!r} matches {ref.version!r}; available: {', '.join(versions)}",
            )
    for section, kind in (("sensors", "sensor"), ("controllers", "controller")):
        refs = getattr(context, section)
        for alias, dev in refs.items():
            found = catalog.device_type_kind(dev.device_type)
            where = f"context.{section}.{alias}.device_type"
            if found is None:
                pkg.add("app.json", where, "unknown_device_type", f"no device type named {dev.device_type!r}")
            elif found != kind:
                pkg.add(
                    "app.json",
                    where,
                    "wrong_device_kind",
                    f"device type {dev.device_type!r} is a {found}, but is listed under {section}",
                )


def validate_app_package(archive: Path, catalog: Catalog, limits: UnpackLimits = DEFAULT_LIMITS) -> ValidationReport:
    """Check an app package zip: archive safety, `app.json`, entrypoint, requirements, and that every model
    and device type in its context exists in `catalog` with a matching version / kind."""
    pkg = _Package(archive, "app", limits)
    if not pkg.readable:
        return pkg.report
    manifest, data = pkg.manifest("app.json", AppManifest)
    if entrypoint := _usable(data, "entrypoint", ENTRYPOINT_PATTERN):
        pkg.check_entrypoint("app.json", entrypoint, want_predict=False)
    elif script := _usable(data, "entrypoint", SCRIPT_PATTERN):
        pkg.check_script(script)
    if isinstance(data, dict):
        pkg.check_requirements(data, "app.json")
    context = manifest.context if manifest is not None else _usable_context(data)
    if context is not None:
        _check_catalog(context, catalog, pkg)
    pkg.compile_all()
    return pkg.report


# --------------------------------------------------------------------------- device types


def validate_device_type(data: bytes, filename: str = "device-type.json") -> ValidationReport:
    """Check a device type definition (JSON bytes); `filename` is used in problem reports."""
    report = ValidationReport(kind="device-type", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    if len(data) > MAX_MANIFEST_BYTES:
        report.problems.append(Problem(filename, None, "too_large", f"file is larger than {MAX_MANIFEST_BYTES} bytes"))
        return report
    parsed, problems = parse_json(data, filename)
    report.problems.extend(problems)
    if not problems:
        report.manifest, problems = validate_schema(DeviceTypeDefinition, parsed, filename)
        report.problems.extend(problems)
    return report
