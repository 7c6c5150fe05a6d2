"""Accepting, storing and serving packages: validation first, then the object store, then the database.

Order matters for "nothing half-written": a package is validated completely before anything is stored; the
archive goes into the NATS object store under its SHA-256 (so a retry or a duplicate upload stores nothing new);
the database row comes last. If the row cannot be written, the object is removed again unless another row
already points at the same bytes. A name plus version is immutable: the same bytes again return the existing
row, different bytes are a 409. A name belongs to its first uploader (`names.py`): another user's upload of a
new name's version is a 403 before anything is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiot.artifacts import names
from aiot.artifacts.validate import (
    ValidationReport,
    validate_app_package,
    validate_device_type,
    validate_model_package,
)
from aiot.blobs.base import BlobStore
from aiot.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage, DeviceKind, DeviceType, ModelPackage, PackageKind, PackageStatus
from aiot.store.devices import Device
from aiot.store.engine import Database
from aiot.store.models import Role

log = logging.getLogger(__name__)

PackageRow = ModelPackage | AppPackage


class DatabaseCatalog:
    """The validator's view of what the platform has (models by version, device types by kind)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def model_versions(self, name: str) -> list[str]:
        """`name` may be `owner/name`: then only when that user owns the name."""
        owner, bare = names.split_owner(name)
        if owner is not None and not names.owner_matches(self.session, PackageKind.model, bare, owner):
            return []
        return list(self.session.scalars(select(ModelPackage.version).where(ModelPackage.name == bare)))

    def device_type_kind(self, name: str) -> str | None:
        kind = self.session.scalar(select(DeviceType.kind).where(DeviceType.name == name))
        return kind.value if kind is not None else None


def _rejected(report: ValidationReport, what: str) -> ValidationFailed:
    problems = [p.to_dict() for p in report.problems]
    head = "; ".join(
        f"{p['file']}{' [' + p['field'] + ']' if p['field'] else ''}: {p['message']}" for p in problems[:3]
    )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return ValidationFailed(f"{what} rejected: {head}{more}", details={"problems": problems})


def stored_manifest(report: ValidationReport) -> dict[str, Any]:
    """The manifest as stored (and handed to nodes in each assignment): the validated fields plus
    `requirements_sha256`, the hash of the requirements file the validator checked, which the node agent
    verifies before it installs anything (manifests forbid unknown keys, so an uploader cannot set it)."""
    assert report.manifest is not None
    doc = report.manifest.model_dump(mode="json")
    if report.requirements_sha256:
        doc["requirements_sha256"] = report.requirements_sha256
    return doc


@dataclass
class Stored:
    row: Any
    created: bool


class ArtifactRepository:
    """Package rows in the database, their archives in a blob store (container `artifacts`, named by SHA-256)."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # ------------------------------------------------------------------ packages

    async def put_model(self, archive: Path, owner_id: str | None, role: Role) -> Stored:
        """Store a model version uploaded by `owner_id` (of `role`: only admins may add to others' names)."""
        report = await asyncio.to_thread(validate_model_package, archive)
        if not report.ok:
            raise _rejected(report, "model package")
        return await self._store(ModelPackage, archive, report, owner_id, role, {})

    async def put_app(self, archive: Path, owner_id: str | None, role: Role) -> Stored:
        def validate() -> ValidationReport:
            with self.db.session() as session:
                return validate_app_package(archive, DatabaseCatalog(session))

        report = await asyncio.to_thread(validate)
        if not report.ok:
            raise _rejected(report, "app package")
        assert report.manifest is not None
        return await self._store(AppPackage, archive, report, owner_id, role, {"kind": report.manifest.kind})

    async def _store(
        self,
        table: type[PackageRow],
        archive: Path,
        report: ValidationReport,
        uploader: str | None,
        role: Role,
        extra: dict[str, Any],
    ) -> Stored:
        manifest = report.manifest
        assert manifest is not None
        name, version, kind = manifest.name, manifest.version, names.kind_of(table)
        with self.db.session() as session:
            owner_id = names.publisher_owner(session, kind, name, uploader, role)  # 403 before anything is stored
            existing = self._find_version(session, table, name, version)
            if existing is not None:
                return self._same_or_conflict(existing, report)
        await self._put_object(report.sha256, archive)
        try:
            row = self._insert(table, report, owner_id, extra)
        except IntegrityError:
            # Lost a race: with another user claiming the same new name (then it is theirs: 403), with the
            # owner's concurrent upload of another version of a new name (insert again, the name is claimed
            # now), or with an upload of the same name and version (the winner decides).
            try:
                with self.db.session() as session:
                    owner_id = names.publisher_owner(session, kind, name, uploader, role)
                    existing = self._find_version(session, table, name, version)
                if existing is not None:
                    await self._drop_object_if_unused(report.sha256)
                    return self._same_or_conflict(existing, report)
                row = self._insert(table, report, owner_id, extra)
            except BaseException:
                await self._drop_object_if_unused(report.sha256)
                raise
        except BaseException:
            await self._drop_object_if_unused(report.sha256)
            raise
        log.info("stored %s %s %s (%s, %d bytes)", table.__tablename__, name, version, row.id, report.size)
        return Stored(row, True)

    def _insert(
        self, table: type[PackageRow], report: ValidationReport, owner_id: str | None, extra: dict[str, Any]
    ) -> PackageRow:
        """Claim the name (when new) and write the version row, in one transaction."""
        manifest = report.manifest
        assert manifest is not None
        with self.db.session() as session:
            names.claim(session, names.kind_of(table), manifest.name, owner_id)
            row = table(
                name=manifest.name,
                version=manifest.version,
                sha256=report.sha256,
                size=report.size,
                manifest=stored_manifest(report),
                owner_id=owner_id,
                **extra,
            )
            session.add(row)
            session.flush()
        return row

    @staticmethod
    def _find_version(session: Session, table: type[PackageRow], name: str, version: str) -> PackageRow | None:
        return session.scalar(select(table).where(table.name == name, table.version == version))

    @staticmethod
    def _same_or_conflict(existing: PackageRow, report: ValidationReport) -> Stored:
        if existing.sha256 == report.sha256:
            return Stored(existing, False)
        raise Conflict(
            f"{existing.name} {existing.version} already exists with different content; versions are immutable, "
            "upload it under a new version",
            field="version",
            details={"existing_id": existing.id, "existing_sha256": existing.sha256},
        )

    async def _put_object(self, sha256: str, archive: Path) -> None:
        if await self.blobs.info(sha256) is not None:
            return  # content-addressed: the same bytes are stored already
        with archive.open("rb") as handle:
            await self.blobs.put(sha256, handle, metadata={"sha256": sha256})

    async def _drop_object_if_unused(self, sha256: str) -> None:
        with self.db.session() as session:
            used = any(
                session.scalar(select(t.id).where(t.sha256 == sha256).limit(1)) is not None
                for t in (ModelPackage, AppPackage)
            )
        if not used:
            await self.blobs.delete(sha256)

    async def download(self, sha256: str) -> Path:
        """Copy the archive into a temporary file (streamed, never whole in memory); the caller deletes it.

        The copy's SHA-256 is checked against its name: a blob damaged in storage is refused, not served."""
        handle = tempfile.NamedTemporaryFile(prefix="aiot-dl-", suffix=".zip", delete=False)  # noqa: SIM115
        try:
            await self.blobs.get_into(sha256, handle)
            handle.flush()
            handle.seek(0)
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            if digest != sha256:
                raise ServiceUnavailable(
                    f"stored archive {sha256} is damaged in the {self.blobs.backend} store (its content hashes to "
                    f"{digest}); upload the package again"
                )
        except BaseException:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
            raise
        handle.close()
        return Path(handle.name)

    async def object_names(self) -> list[str]:
        return [blob.name for blob in await self.blobs.list()]

    # ------------------------------------------------------------------ lookups and lifecycle

    @staticmethod
    def resolve(session: Session, table: type[PackageRow], ref: str) -> PackageRow:
        """`ref` is an id, `name:version`, or a bare name (its highest active version); the name may be
        `owner/name` (404 unless that user owns it). Names have one owner, so a bare name is unambiguous."""
        row = session.get(table, ref)
        if row is not None:
            return row
        qualified, _, version = ref.partition(":")
        owner, name = names.split_owner(qualified)
        what = "model" if table is ModelPackage else "app"
        if owner is not None and not names.owner_matches(session, names.kind_of(table), name, owner):
            raise NotFound(f"no {what} {name!r} owned by {owner!r}", field=what)
        if version:
            row = session.scalar(select(table).where(table.name == name, table.version == version))
            if row is None:
                raise NotFound(f"no {what} {name} version {version}", field=what)
            return row
        rows = list(session.scalars(select(table).where(table.name == name)))
        if not rows:
            raise NotFound(f"no {what} {ref!r} (give an id, a name, or name:version)", field=what)
        active = [r for r in rows if r.status == PackageStatus.active] or rows
        return max(active, key=lambda r: Version(r.version))

    @staticmethod
    def list_packages(
        session: Session, table: type[PackageRow], name: str | None = None, include_deprecated: bool = False
    ) -> list[PackageRow]:
        """Every version of every package of `table` (or of one name), by name then age; deprecated ones only
        when asked."""
        query = select(table).order_by(table.name, table.created_at)
        if name:
            query = query.where(table.name == name)
        if not include_deprecated:
            query = query.where(table.status == PackageStatus.active)
        return list(session.scalars(query))

    @staticmethod
    def apps_using_model(session: Session, model: ModelPackage) -> list[AppPackage]:
        users = []
        for app in session.scalars(select(AppPackage)):
            for ref in (app.manifest.get("context", {}).get("models") or {}).values():
                if names.split_owner(ref.get("name") or "")[1] == model.name and Version(model.version) in SpecifierSet(
                    ref.get("version") or "", prereleases=True
                ):
                    users.append(app)
        return users

    @staticmethod
    def instances_pinning(session: Session, model: ModelPackage) -> list[AppInstance]:
        """Live app instances pinned to this exact model version (it must stay while they exist)."""
        return [
            i
            for i in session.scalars(select(AppInstance).where(AppInstance.state != InstanceState.retired))
            if model.id in (i.models or {}).values()
        ]

    async def delete_package(self, session: Session, row: PackageRow) -> None:
        if isinstance(row, ModelPackage):
            users = self.apps_using_model(session, row)
            if users:
                listed = ", ".join(f"{a.name} {a.version}" for a in users[:5])
                raise Conflict(
                    f"model {row.name} {row.version} is used by app(s) {listed}; delete or update them "
                    "first, or deprecate the model instead",
                    field="model",
                )
            pinned = self.instances_pinning(session, row)
            if pinned:
                raise Conflict(
                    f"model {row.name} {row.version} is pinned by {len(pinned)} app instance(s) "
                    f"({', '.join(i.id for i in pinned[:5])}); deprecate it instead",
                    field="model",
                )
        elif session.scalar(select(AppInstance.id).where(AppInstance.app_id == row.id).limit(1)):
            raise Conflict(
                f"app {row.name} {row.version} has app instances (retired ones are kept for their "
                "history); deprecate it instead",
                field="app",
            )
        sha = row.sha256
        session.delete(row)
        session.flush()
        session.commit()
        await self._drop_object_if_unused(sha)

    # ------------------------------------------------------------------ device types

    @staticmethod
    def put_device_type(session: Session, data: bytes, filename: str, owner_id: str | None) -> Stored:
        report = validate_device_type(data, filename)
        if not report.ok:
            raise _rejected(report, "device type")
        definition = report.manifest
        assert definition is not None
        existing = session.scalar(select(DeviceType).where(DeviceType.name == definition.name))
        body = definition.model_dump(mode="json")
        if existing is not None:
            if existing.definition == body:
                return Stored(existing, False)
            raise Conflict(
                f"device type {definition.name!r} already exists with a different definition; "
                "give the changed type a new name",
                field="name",
                details={"existing_id": existing.id},
            )
        row = DeviceType(
            name=definition.name,
            kind=DeviceKind(definition.kind),
            definition=body,
            sha256=report.sha256,
            created_by=owner_id,
        )
        session.add(row)
        session.flush()
        return Stored(row, True)

    @staticmethod
    def delete_device_type(session: Session, row: DeviceType) -> None:
        if session.scalar(select(Device.id).where(Device.type_id == row.id).limit(1)) is not None:
            raise Conflict(f"device type {row.name!r} has registered devices; remove them first", field="device_type")
        for app in session.scalars(select(AppPackage)):
            context = app.manifest.get("context", {})
            refs = list((context.get("sensors") or {}).values()) + list((context.get("controllers") or {}).values())
            if any(ref.get("device_type") == row.name for ref in refs):
                raise Conflict(f"device type {row.name!r} is used by app {app.name} {app.version}", field="device_type")
        session.delete(row)
