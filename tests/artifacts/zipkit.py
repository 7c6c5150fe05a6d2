"""Builders of test archives: a raw zip writer for hostile archives zipfile refuses to make, and
good model/app package contents to break one fault at a time."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGULAR = 0o100644
SYMLINK = 0o120777
DIRECTORY = 0o040755
FIFO = 0o010644


@dataclass
class RawEntry:
    """One entry as written byte for byte: any name (NUL, backslash, ...), any mode bits, lying sizes."""

    name: str | bytes
    data: bytes = b""
    mode: int = REGULAR
    deflate: bool = True
    declared_size: int | None = None
    flags: int = 0


def build_zip(entries: list[RawEntry]) -> bytes:
    """A zip archive with exactly these entries (local headers, central directory, end record)."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        name = e.name.encode("utf-8") if isinstance(e.name, str) else e.name
        if e.deflate:
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = comp.compress(e.data) + comp.flush()
        else:
            payload = e.data
        method = 8 if e.deflate else 0
        crc = zlib.crc32(e.data)
        size = len(e.data) if e.declared_size is None else e.declared_size
        flags = e.flags | (0x800 if isinstance(e.name, str) else 0)
        offset = len(out)
        out += (
            struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc, len(payload), size, len(name), 0)
            + name
            + payload
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                (3 << 8) | 20,
                20,
                flags,
                method,
                0,
                0x21,
                crc,
                len(payload),
                size,
                len(name),
                0,
                0,
                0,
                0,
                (e.mode & 0xFFFF) << 16,
                offset,
            )
            + name
        )
    n = len(entries)
    out_len = len(out)
    return bytes(out + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), out_len, 0))


def zip_bytes(files: dict[str, bytes | str]) -> bytes:
    """A plain zip made by zipfile from name -> content."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def write(tmp: Path, data: bytes, name: str = "pkg.zip") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- good packages

MODEL_MANIFEST: dict[str, Any] = {
    "name": "doubler",
    "version": "1.0.0",
    "description": "Doubles a number.",
    "framework": "python",
    "entrypoint": "predictor:Model",
    "inputs": {"x": {"type": "number"}, "photo": {"type": "image", "required": False}},
    "outputs": {"y": {"type": "number"}},
    "example": {"x": 2},
}
PREDICTOR = (
    "class Model:\n"
    "    def load(self):\n"
    "        self.k = 2\n\n"
    "    def predict(self, inputs):\n"
    "        return {'y': inputs['x'] * self.k}\n"
)

APP_MANIFEST: dict[str, Any] = {
    "name": "watcher",
    "version": "0.1.0",
    "kind": "backend",
    "entrypoint": "main.py",
    "context": {
        "models": {"detector": {"name": "face-detector", "version": ">=1.0,<2"}},
        "sensors": {"camera": {"device_type": "camera"}},
        "controllers": {"alarm": {"device_type": "alarm"}},
        "settings": {"threshold": {"type": "number", "default": 0.5}},
    },
}
APP_MAIN = "from platform_sdk import run\n\nif __name__ == '__main__':\n    run()\n"


def model_files(**manifest_changes: Any) -> dict[str, bytes | str]:
    manifest = {**MODEL_MANIFEST, **manifest_changes}
    return {
        "model.json": json.dumps(manifest, indent=2),
        "predictor.py": PREDICTOR,
        "requirements.txt": "numpy>=1.26\n",
    }


def app_files(**manifest_changes: Any) -> dict[str, bytes | str]:
    manifest = {**APP_MANIFEST, **manifest_changes}
    return {"app.json": json.dumps(manifest, indent=2), "main.py": APP_MAIN, "requirements.txt": "\n"}


def raw_from(files: dict[str, bytes | str]) -> list[RawEntry]:
    return [RawEntry(n, c.encode() if isinstance(c, str) else c) for n, c in files.items()]
