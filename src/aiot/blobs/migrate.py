"""`migrate(source, target)`: copy every object of one blob store into another and prove each copy.

What proves a copy: its SHA-256, computed again from the bytes read back from the target, must equal the
expected one: a package archive is named by its SHA-256; a log archive carries its SHA-256 in its metadata
(objects without one are checked against the source's own bytes). An object already in the target with the
same verified content is counted as present, not copied again, so a migration interrupted half-way is simply
run again. Nothing is deleted from the source: switching `AIOT_ARTIFACT_STORE` is the operator's next step.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from typing import IO

from aiot.blobs.base import ARTIFACTS, BlobInfo, BlobStore

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class MigrationError(RuntimeError):
    """An object whose copy could not be verified; the message names it and both digests."""


@dataclass
class MigrationReport:
    container: str
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    bytes_copied: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "container": self.container,
            "copied": len(self.copied),
            "already_present": len(self.present),
            "bytes_copied": self.bytes_copied,
        }


def _digest(handle: IO[bytes]) -> str:
    handle.seek(0)
    return hashlib.file_digest(handle, "sha256").hexdigest()


def expected_sha256(container: str, blob: BlobInfo) -> str | None:
    """The digest the object must have, from its name (packages) or metadata (log archives); None if unknown."""
    if container == ARTIFACTS and _SHA256.match(blob.name):
        return blob.name
    found = blob.metadata.get("sha256", "")
    return found if _SHA256.match(found) else None


async def _read(store: BlobStore, name: str) -> IO[bytes]:
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - returned open; the caller closes it
    await store.get_into(name, sink)
    sink.flush()
    return sink


async def _verified_in(target: BlobStore, name: str, want: str) -> bool:
    if await target.info(name) is None:
        return False
    with await _read(target, name) as copy:
        return _digest(copy) == want


async def migrate_container(container: str, source: BlobStore, target: BlobStore) -> MigrationReport:
    """Copy every object of `container`; `MigrationError` on the first copy whose SHA-256 does not match."""
    report = MigrationReport(container)
    for blob in sorted(await source.list(), key=lambda b: b.name):
        with await _read(source, blob.name) as original:
            actual = _digest(original)
            want = expected_sha256(container, blob) or actual
            if actual != want:
                raise MigrationError(
                    f"{container}/{blob.name} in the {source.backend} store is damaged: its content hashes to "
                    f"{actual}, expected {want}; nothing of it was copied"
                )
            if await _verified_in(target, blob.name, want):
                report.present.append(blob.name)
                continue
            original.seek(0)
            await target.put(blob.name, original, metadata={**blob.metadata, "sha256": want})
        if not await _verified_in(target, blob.name, want):
            raise MigrationError(
                f"{container}/{blob.name}: the copy in the {target.backend} store does not hash to {want}"
            )
        report.copied.append(blob.name)
        report.bytes_copied += blob.size
    return report
