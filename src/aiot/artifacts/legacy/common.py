"""Shared pieces of the legacy (original platform) converters: the error type, safe zip reading, names.

Why a separate error type: a bad original package must be refused with the file and the JSON key that is
wrong (`config.json` `preprocessing.method_name`), so the user can fix the package they already have; the
API turns `LegacyFormatError` into a 422 with those two fields, the CLI prints them on one line.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiot.artifacts.unpack import DEFAULT_LIMITS, UnpackError, UnpackLimits, inspect_archive, read_entry

MAX_JSON_BYTES = 1024 * 1024
"""Largest original JSON config read (they are a few hundred bytes in practice)."""


class LegacyFormatError(ValueError):
    """An original-format package that cannot be converted; `file` and `key` say where the problem is."""

    def __init__(self, file: str | None, key: str | None, message: str, code: str = "legacy_invalid") -> None:
        where = file or "package"
        if key:
            where += f" [{key}]"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.key = key
        self.message = message
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "field": self.key, "code": self.code, "message": self.message}


@dataclass
class Converted:
    """One converted original package.

    `kind` is `model`, `app`, `device-types` or `devices`. For `model` and `app`, `files` is the complete new
    package (path -> bytes, manifest included); for `device-types`, one definition per file (`<name>.json`);
    for `devices`, `locations` and `devices` say what to register. `notes` lists every choice the converter
    made on the user's behalf (shown by `aiot import`), so nothing is decided silently.
    """

    kind: str
    name: str
    source: str
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The converted model.json / app.json, parsed (None for device zips)."""
        for name in ("model.json", "app.json"):
            if name in self.files:
                return json.loads(self.files[name])
        return None

    def summary(self) -> dict[str, Any]:
        """What was converted, for the CLI and the API response (no file contents)."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "source": self.source, "notes": self.notes}
        if self.kind in ("model", "app"):
            out["manifest"] = self.manifest
            out["files"] = sorted(self.files)
        elif self.kind == "device-types":
            out["device_types"] = [json.loads(v) for _, v in sorted(self.files.items())]
        else:
            out["locations"] = self.locations
            out["devices"] = self.devices
        return out


def read_zip(archive: Path, limits: UnpackLimits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """All regular files of a zip (path -> bytes), after the same safety checks as every upload.

    When every file sits under one top-level folder (a folder zipped rather than its contents), that folder
    is dropped from the paths: the original platform's users made both kinds of zips."""
    listing = inspect_archive(archive, limits)
    if listing.problems:
        first = listing.problems[0]
        raise LegacyFormatError(first.path or archive.name, None, first.message, code=first.code)
    files: dict[str, bytes] = {}
    try:
        for entry in listing.entries:
            if entry.is_dir or entry.name.startswith("__MACOSX/") or entry.name.endswith(".DS_Store"):
                continue
            files[entry.name] = read_entry(archive, entry.name, limits.max_file_bytes, limits)
    except UnpackError as exc:
        raise LegacyFormatError(archive.name, None, str(exc), code="corrupt_zip") from None
    return strip_common_folder(files)


def read_zip_bytes(data: bytes) -> dict[str, bytes]:
    """`read_zip` for an archive held in memory (the API receives bytes)."""
    with tempfile.TemporaryDirectory(prefix="aiot-legacy-") as tmp:
        path = Path(tmp) / "upload.zip"
        path.write_bytes(data)
        return read_zip(path)


def strip_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        top = tops.pop() + "/"
        return {name[len(top) :]: data for name, data in files.items()}
    return files


def load_json(files: dict[str, bytes], name: str) -> Any:
    """Parse one JSON file of the package; LegacyFormatError naming the file when absent or invalid."""
    if name not in files:
        raise LegacyFormatError(name, None, "file is missing", code="missing_file")
    raw = files[name]
    if len(raw) > MAX_JSON_BYTES:
        raise LegacyFormatError(name, None, f"file is larger than {MAX_JSON_BYTES} bytes", code="too_large")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise LegacyFormatError(name, None, "not UTF-8 text", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise LegacyFormatError(
            name, f"line {exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})", code="invalid_json"
        ) from None


def require(doc: Any, file: str, key: str, kind: type | tuple[type, ...], path: str | None = None) -> Any:
    """`doc[key]`, checked to be of `kind`; the error names the file and the dotted key."""
    dotted = f"{path}.{key}" if path else key
    if not isinstance(doc, dict):
        raise LegacyFormatError(file, path, "expected a JSON object", code="wrong_type")
    if key not in doc:
        raise LegacyFormatError(file, dotted, "required key is missing", code="missing_field")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = " or ".join(k.__name__ for k in _as_tuple(kind))
        raise LegacyFormatError(file, dotted, f"expected {names}, got {type(value).__name__}", code="wrong_type")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str, fallback: str = "imported") -> str:
    """A name our manifests accept (`^[a-z][a-z0-9-]{1,62}$`) from an original name such as `Smart Home_v2`."""
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"{fallback}-{slug}".strip("-")
    if len(slug) < 2:
        slug = f"{fallback}-{slug}"
    return slug[:63].rstrip("-")


def identifier(text: str, fallback: str = "value") -> str:
    """A field/alias name (`^[A-Za-z_][A-Za-z0-9_]{0,63}$`) from an original parameter name."""
    ident = re.sub(r"\W+", "_", text).strip("_")
    if not ident or ident[0].isdigit():
        ident = f"{fallback}_{ident}".strip("_")
    return ident[:64]


def dumps(doc: Any) -> bytes:
    """Stable, readable JSON for generated manifests (same input, same bytes, same package hash)."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def clean_requirements(raw: str, notes: list[str]) -> list[str]:
    """The lines of an original requirements file minus standard-library names and the old SDK.

    Original packages often listed `pickle` or `json` (which pip cannot install) and `platform_sdk` (which
    this platform provides); those lines are dropped, and the note says which."""
    kept: list[str] = []
    dropped: list[str] = []
    for line in raw.splitlines():
        name = re.split(r"[=<>!~\[;@ ]", line.split("#", 1)[0].strip(), maxsplit=1)[0]
        norm = name.strip().lower().replace("_", "-")
        if norm and (norm in sys.stdlib_module_names or norm in ("platform-sdk", "platformsdk")):
            dropped.append(name.strip())
            continue
        kept.append(line)
    if dropped:
        notes.append(
            "dropped from requirements (standard library or the platform SDK, provided here): " + ", ".join(dropped)
        )
    return kept


def check_converted(model: Any, doc: dict[str, Any], file: str) -> None:
    """Validate a generated manifest; a problem (e.g. a bad `--version`) becomes a LegacyFormatError naming the
    field, never an unexpected 500."""
    from pydantic import ValidationError

    try:
        model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ())) or None
        raise LegacyFormatError(f"{file} (converted)", key, first.get("msg", "invalid"), code="invalid_value") from None
