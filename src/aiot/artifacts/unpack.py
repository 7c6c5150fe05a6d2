"""Safe inspection and extraction of uploaded zip archives.

Uploads are hostile until proven otherwise. `inspect_archive` reports every problem with an archive without
writing anything (so validation can run before anything is stored); `safe_unpack` extracts only an archive
with no problems, and only by building the tree in a temporary sibling folder that is renamed onto the
target at the end, so a failure never leaves partial files behind.

What is rejected, with the problem `code` used in reports:

- `not_zip`, `corrupt_zip` (bad central directory, CRC mismatch, truncated data), `encrypted_entry`,
  `unsupported_compression`;
- `absolute_path` (`/x`, `C:x`), `path_escape` (a `..` part), `unsafe_name` (backslash, NUL or control
  characters, `:`, empty or `.` parts, too long, too deep);
- `symlink`, `special_file` (devices, FIFOs, sockets: read from the entry's Unix mode bits);
- `duplicate_entry` (same name, also after Unicode normalisation and case folding, since the target file
  system may fold them), `path_conflict` (a file used as a folder by another entry);
- `too_many_files`, `too_large` (total or one file: counted while streaming, header sizes are not trusted),
  `zip_bomb` (compression ratio over the cap).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CHUNK = 64 * 1024
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_ALLOWED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True)
class UnpackLimits:
    """Caps applied to an archive. The defaults suit model and app packages (code plus model files)."""

    max_files: int = 2000
    max_total_bytes: int = 512 * 1024 * 1024
    max_file_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1024 * 1024
    """Entries that expand to less than this are not ratio-checked: small text files compress very well."""
    max_name_length: int = 512
    max_depth: int = 32


DEFAULT_LIMITS = UnpackLimits()


@dataclass(frozen=True)
class UnpackProblem:
    """One thing wrong with an archive. `path` is the entry name, or None for the archive as a whole."""

    code: str
    path: str | None
    message: str


class UnpackError(Exception):
    """Raised by `safe_unpack` with every problem found; nothing was written."""

    def __init__(self, problems: list[UnpackProblem]) -> None:
        self.problems = problems
        lines = [f"{p.code}: {p.path + ': ' if p.path else ''}{p.message}" for p in problems]
        super().__init__("archive rejected: " + "; ".join(lines))


@dataclass(frozen=True)
class ArchiveEntry:
    """One entry of an archive, as declared by its central directory."""

    name: str
    size: int
    compressed_size: int
    is_dir: bool


@dataclass
class ArchiveListing:
    """What `inspect_archive` found: the entries and every problem."""

    entries: list[ArchiveEntry] = field(default_factory=list)
    problems: list[UnpackProblem] = field(default_factory=list)
    readable: bool = True
    """False when the archive could not be opened at all (no entries are listed then)."""

    @property
    def ok(self) -> bool:
        return self.readable and not self.problems

    @property
    def files(self) -> list[str]:
        """Names of the regular-file entries."""
        return [e.name for e in self.entries if not e.is_dir]


class _Reject(Exception):
    def __init__(self, problem: UnpackProblem) -> None:
        self.problem = problem
        super().__init__(problem.message)


# --------------------------------------------------------------------------- entry checks


def check_entry_name(raw: str, limits: UnpackLimits = DEFAULT_LIMITS) -> UnpackProblem | None:
    """Problem with one entry name (`raw` is the name as stored, before zipfile cuts it at a NUL)."""

    def bad(code: str, message: str) -> UnpackProblem:
        return UnpackProblem(code, raw, message)

    if "\x00" in raw:
        return bad("unsafe_name", "entry name contains a NUL character")
    if raw in ("", "/"):
        return bad("unsafe_name", "entry has an empty name")
    if len(raw) > limits.max_name_length:
        return bad("unsafe_name", f"entry name is longer than {limits.max_name_length} characters")
    if raw.startswith("/"):
        return bad("absolute_path", "entry name is an absolute path; paths must be relative to the package")
    if _DRIVE_RE.match(raw):
        return bad("absolute_path", "entry name starts with a drive letter")
    if "\\" in raw:
        return bad("unsafe_name", "entry name contains a backslash; use '/' as the separator")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        return bad("unsafe_name", "entry name contains control characters")
    parts = raw[:-1].split("/") if raw.endswith("/") else raw.split("/")
    if ".." in parts:
        return bad("path_escape", "entry name contains '..' and would escape the package folder")
    if ":" in raw:
        return bad("unsafe_name", "entry name contains ':'")
    if any(p in ("", ".") for p in parts):
        return bad("unsafe_name", "entry name has an empty or '.' path part")
    if len(parts) > limits.max_depth:
        return bad("unsafe_name", f"entry is nested deeper than {limits.max_depth} folders")
    return None


def _entry_kind(info: zipfile.ZipInfo) -> str:
    """'file', 'dir', 'symlink' or 'special', from the Unix mode bits when present (never trusting the name)."""
    mode = info.external_attr >> 16
    ftype = stat.S_IFMT(mode)
    if ftype == 0:
        is_dir = info.orig_filename.endswith("/") or bool(info.external_attr & 0x10)
        return "dir" if is_dir else "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "dir" if info.orig_filename.endswith("/") else "file"
    return "special"


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name.rstrip("/")).casefold()


def _check_entries(infos: list[zipfile.ZipInfo], limits: UnpackLimits) -> list[UnpackProblem]:
    problems: list[UnpackProblem] = []
    if len(infos) > limits.max_files:
        problems.append(
            UnpackProblem("too_many_files", None, f"archive has {len(infos)} entries; the limit is {limits.max_files}")
        )
    seen: dict[str, str] = {}
    file_keys: set[str] = set()
    for info in infos:
        raw = info.orig_filename
        name_problem = check_entry_name(raw, limits)
        if name_problem:
            problems.append(name_problem)
        kind = _entry_kind(info)
        if kind == "symlink":
            problems.append(UnpackProblem("symlink", raw, "entry is a symbolic link; links are not allowed"))
        elif kind == "special":
            problems.append(
                UnpackProblem("special_file", raw, "entry is not a regular file or folder (device, FIFO or socket)")
            )
        if info.flag_bits & 0x1:
            problems.append(UnpackProblem("encrypted_entry", raw, "entry is encrypted; upload a plain zip"))
        if info.compress_type not in _ALLOWED_METHODS:
            problems.append(
                UnpackProblem("unsupported_compression", raw, f"compression method {info.compress_type} not supported")
            )
        key = _fold(raw)
        if key in seen and not (kind == "dir" and seen[key] == "dir"):
            problems.append(UnpackProblem("duplicate_entry", raw, "entry name appears more than once (ignoring case)"))
        seen.setdefault(key, kind)
        if kind == "file":
            file_keys.add(key)
        if info.file_size > limits.max_file_bytes:
            problems.append(
                UnpackProblem(
                    "too_large", raw, f"entry expands to {info.file_size} bytes; the limit is {limits.max_file_bytes}"
                )
            )
    for info in infos:
        parts = _fold(info.orig_filename).split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in file_keys:
                problems.append(
                    UnpackProblem("path_conflict", info.orig_filename, "a parent folder of this entry is also a file")
                )
                break
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_total_bytes:
        problems.append(
            UnpackProblem("too_large", None, f"archive expands to {declared} bytes; limit {limits.max_total_bytes}")
        )
    for info in infos:
        if info.file_size >= limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            problems.append(_bomb(info, info.file_size, limits))
    return problems


def _bomb(info: zipfile.ZipInfo, size: int, limits: UnpackLimits) -> UnpackProblem:
    ratio = size / max(info.compress_size, 1)
    return UnpackProblem(
        "zip_bomb",
        info.orig_filename,
        f"entry expands {ratio:.0f}x ({info.compress_size} -> {size} bytes); the limit is {limits.max_ratio:.0f}x",
    )


# --------------------------------------------------------------------------- streaming


@dataclass
class _Budget:
    limits: UnpackLimits
    total: int = 0


def _stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> Iterator[bytes]:
    """Yield the entry's bytes, counting them against the caps (header sizes are not trusted)."""
    limits = budget.limits
    written = 0
    try:
        with zf.open(info) as src:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                budget.total += len(chunk)
                if written > limits.max_file_bytes:
                    raise _Reject(
                        UnpackProblem(
                            "too_large", info.orig_filename, f"entry expands beyond {limits.max_file_bytes} bytes"
                        )
                    )
                if budget.total > limits.max_total_bytes:
                    raise _Reject(
                        UnpackProblem("too_large", None, f"archive expands beyond {limits.max_total_bytes} bytes")
                    )
                if written >= limits.ratio_min_bytes and written > limits.max_ratio * max(info.compress_size, 1):
                    raise _Reject(_bomb(info, written, limits))
                yield chunk
    except _Reject:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise _Reject(UnpackProblem("corrupt_zip", info.orig_filename, f"entry cannot be read: {exc}")) from exc


def _open(archive: Path) -> zipfile.ZipFile:
    """Open the archive or raise `_Reject` with `not_zip` / `corrupt_zip`."""
    try:
        with open(archive, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise _Reject(UnpackProblem("not_zip", None, f"cannot read archive: {exc}")) from exc
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        if head[:2] != b"PK":
            raise _Reject(UnpackProblem("not_zip", None, "file is not a zip archive")) from exc
        raise _Reject(UnpackProblem("corrupt_zip", None, f"zip archive is damaged or truncated: {exc}")) from exc


def inspect_archive(archive: Path, limits: UnpackLimits = DEFAULT_LIMITS, *, verify: bool = True) -> ArchiveListing:
    """List an archive's entries and every problem, writing nothing.

    With `verify`, every regular file is also decompressed in memory (chunk by chunk, then discarded) so the
    real sizes, ratios and CRCs are checked, not only what the headers claim.
    """
    listing = ArchiveListing()
    try:
        zf = _open(Path(archive))
    except _Reject as rej:
        listing.readable = False
        listing.problems.append(rej.problem)
        return listing
    with zf:
        try:
            infos = zf.infolist()
        except (zipfile.BadZipFile, ValueError) as exc:  # pragma: no cover - infolist is read at open
            listing.readable = False
            listing.problems.append(UnpackProblem("corrupt_zip", None, str(exc)))
            return listing
        listing.entries = [
            ArchiveEntry(i.orig_filename, i.file_size, i.compress_size, _entry_kind(i) == "dir") for i in infos
        ]
        listing.problems.extend(_check_entries(infos, limits))
        if verify and len(infos) <= limits.max_files:
            budget = _Budget(limits)
            for info in infos:
                if _entry_kind(info) != "file" or info.flag_bits & 0x1:
                    continue
                try:
                    for _ in _stream(zf, info, budget):
                        pass
                except _Reject as rej:
                    if not any((p.code, p.path) == (rej.problem.code, rej.problem.path) for p in listing.problems):
                        listing.problems.append(rej.problem)
                    if rej.problem.code == "too_large" and rej.problem.path is None:
                        break
    return listing


def read_entry(archive: Path, name: str, max_bytes: int, limits: UnpackLimits = DEFAULT_LIMITS) -> bytes:
    """Read one regular file entry into memory, refusing more than `max_bytes` (raises `UnpackError`)."""
    try:
        with _open(Path(archive)) as zf:
            info = zf.getinfo(name)
            capped = UnpackLimits(**{**limits.__dict__, "max_file_bytes": min(max_bytes, limits.max_file_bytes)})
            return b"".join(_stream(zf, info, _Budget(capped)))
    except _Reject as rej:
        raise UnpackError([rej.problem]) from None
    except KeyError:
        raise UnpackError([UnpackProblem("missing_file", name, "no such entry in the archive")]) from None


# --------------------------------------------------------------------------- extraction


def _within(path: Path, root: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.realpath(path).startswith(real_root + os.sep)


def safe_unpack(archive: Path, target: Path, limits: UnpackLimits = DEFAULT_LIMITS) -> list[Path]:
    """Extract `archive` into `target` (which must not exist, or be an empty folder); return the files made.

    Raises `UnpackError` listing every problem. All-or-nothing: the tree is built in a hidden temporary
    folder beside `target` and renamed into place only when complete; on any failure it is removed.
    """
    archive, target = Path(archive), Path(target)
    listing = inspect_archive(archive, limits, verify=False)
    if listing.problems:
        raise UnpackError(listing.problems)
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise UnpackError([UnpackProblem("target_exists", None, f"{target} exists and is not an empty folder")])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpack-", dir=target.parent))
    made: list[PurePosixPath] = []
    try:
        with _open(archive) as zf:
            budget = _Budget(limits)
            for info in zf.infolist():
                rel = PurePosixPath(info.orig_filename.rstrip("/"))
                dest = tmp.joinpath(*rel.parts)
                if not _within(dest, tmp):  # unreachable after the name checks; kept as a second lock
                    raise _Reject(UnpackProblem("path_escape", info.orig_filename, "entry resolves outside target"))
                if _entry_kind(info) == "dir":
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
                fd = os.open(dest, flags, 0o644)
                with os.fdopen(fd, "wb") as out:
                    for chunk in _stream(zf, info, budget):
                        out.write(chunk)
                made.append(rel)
        os.chmod(tmp, 0o755)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    except _Reject as rej:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnpackError([rej.problem]) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target.joinpath(*rel.parts) for rel in made]
