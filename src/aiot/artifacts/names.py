"""Who owns a package name, and what that allows (database-backed, like `repository.py`).

The rule: the first user to upload a model (or app) name owns it; models and apps are separate namespaces.
Only the owner or an admin may add versions of the name, deprecate or delete them, download or deploy them.
An admin's upload of a version of someone's name keeps the name (and the version) that user's. Without this,
"the newest version of `comfort`" could be anybody's code, and an app bound to `comfort` would run it with its
end user's devices.

A name stays owned after its last version is deleted (its row in `package_names` is never removed by a
delete), so nobody can take a deleted name over and serve their code to apps still referring to it.

References may name the owner: `owner/name` (and `owner/name:version` where a version is accepted). Because a
name has exactly one owner, an unqualified name is never ambiguous; the qualified form is a check that the
name still belongs to who the app's author expected, and fails (as unknown) when it does not.
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from aiot.errors import Forbidden
from aiot.store.catalog import AppPackage, ModelPackage, PackageKind, PackageName
from aiot.store.models import Role, User

PackageTable = type[ModelPackage] | type[AppPackage]


def kind_of(table: PackageTable) -> PackageKind:
    return PackageKind.model if table is ModelPackage else PackageKind.app


def split_owner(ref: str) -> tuple[str | None, str]:
    """`owner/name` -> ("owner", "name"); `name` -> (None, "name")."""
    owner, sep, name = ref.partition("/")
    return (owner, name) if sep else (None, ref)


def name_row(session: Session, kind: PackageKind, name: str) -> PackageName | None:
    return session.scalar(select(PackageName).where(PackageName.kind == kind, PackageName.name == name))


def owner_username(session: Session, row: PackageName | None) -> str | None:
    """The owner's username (None: no owner on record, or the owner's account was deleted)."""
    user = session.get(User, row.owner_id) if row is not None and row.owner_id else None
    return user.username if user is not None else None


def owner_matches(session: Session, kind: PackageKind, name: str, owner: str | None) -> bool:
    """True when `owner` (a username, or None for "anyone") owns `name`; False for unknown names."""
    row = name_row(session, kind, name)
    if row is None:
        return False
    return owner is None or owner_username(session, row) == owner


def _denied(session: Session, kind: PackageKind, name: str, row: PackageName | None, action: str) -> Forbidden:
    owner = owner_username(session, row)
    whose = f"belongs to {owner}" if owner else "has no owner on record"
    return Forbidden(
        f"the {kind.value} name {name!r} {whose}; only its owner or an admin may {action}",
        field="name",
        details={"owner": owner},
    )


def publisher_owner(session: Session, kind: PackageKind, name: str, user_id: str | None, role: Role) -> str | None:
    """The owner a new version of `name` uploaded by `user_id` gets: the name's owner, or the uploader when the
    name is new. Forbidden (naming the owner) when the name is someone else's and the uploader is no admin."""
    row = name_row(session, kind, name)
    if row is None:
        return user_id
    if row.owner_id == user_id or role == Role.admin:
        return row.owner_id
    raise _denied(session, kind, name, row, "add versions of it")


def claim(session: Session, kind: PackageKind, name: str, owner_id: str | None) -> PackageName:
    """Record the owner of a new name (in the caller's transaction, before its first version is written).
    The unique (kind, name) constraint makes a concurrent claim by someone else fail at flush."""
    row = name_row(session, kind, name)
    if row is None:
        row = PackageName(kind=kind, name=name, owner_id=owner_id)
        session.add(row)
        session.flush()
    return row


def check_may_change(session: Session, kind: PackageKind, name: str, user: User, action: str) -> None:
    """Forbidden unless `user` is an admin or owns `name` (versions of unowned legacy rows: admins only)."""
    if user.role == Role.admin:
        return
    row = name_row(session, kind, name)
    if row is None or row.owner_id != user.id:
        raise _denied(session, kind, name, row, action)


def names_owned_by(kind: PackageKind, user_id: str) -> Select[tuple[str]]:
    """A subquery of the names `user_id` owns (for "instances of my apps" and similar scopes)."""
    return select(PackageName.name).where(PackageName.kind == kind, PackageName.owner_id == user_id)


def app_ids_owned_by(user_id: str) -> Select[tuple[str]]:
    """A subquery of every app package version whose name `user_id` owns."""
    return select(AppPackage.id).where(AppPackage.name.in_(names_owned_by(PackageKind.app, user_id)))
