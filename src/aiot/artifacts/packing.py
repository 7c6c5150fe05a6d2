"""Deterministic zipping of a package folder.

Artifacts are keyed by the sha256 of their archive, and "same name + version, same content" must be an
idempotent push. So zipping the same folder twice must give the same bytes: entries are sorted, timestamps
and permissions are fixed, and build litter (`__pycache__`, `*.pyc`, hidden files) is left out.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_FILE_ATTR = (0o100644 & 0xFFFF) << 16


def _skipped(rel_parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__pycache__" for p in rel_parts) or rel_parts[-1].endswith((".pyc", ".pyo"))


def package_files(folder: Path) -> list[Path]:
    """The files `zip_folder` would pack, relative to `folder`, sorted by their posix path.

    Raises ValueError for a symbolic link (following it could pack files from outside the folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        for name in list(dirs):
            rel = (root_path / name).relative_to(folder)
            if _skipped(rel.parts):
                dirs.remove(name)
            elif (root_path / name).is_symlink():
                raise ValueError(f"{root_path / name}: symbolic links are not allowed in a package")
        for name in files:
            path = root_path / name
            rel = path.relative_to(folder)
            if _skipped(rel.parts):
                continue
            if path.is_symlink():
                raise ValueError(f"{path}: symbolic links are not allowed in a package")
            if not path.is_file():
                raise ValueError(f"{path}: only regular files can be packed")
            found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


def zip_folder(folder: Path, dest: Path) -> Path:
    """Zip `folder`'s contents (files at the archive root) into `dest`, deterministically; return `dest`.

    `dest` is written through a temporary file and renamed, so a half-written zip never appears; `dest`
    itself is skipped if it lies inside `folder`.
    """
    folder, dest = Path(folder), Path(dest)
    files = [rel for rel in package_files(folder) if (folder / rel).resolve() != dest.resolve()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:
            for rel in files:
                info = zipfile.ZipInfo(rel.as_posix(), date_time=FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = _FILE_ATTR
                with zf.open(info, "w") as out, open(folder / rel, "rb") as src:
                    while chunk := src.read(1024 * 1024):
                        out.write(chunk)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dest
