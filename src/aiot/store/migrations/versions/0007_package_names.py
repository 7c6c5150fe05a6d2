"""package names have owners, instances pin model versions, auto-started deployments belong to the model's owner

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:20:00.000000

Data carried over:
* `package_names`: one row per (kind, name) already uploaded, owned by the uploader of its oldest version that
  has an owner (when several users uploaded versions of one name before names had owners, the first one keeps
  the name; the others' versions stay, but only the owner or an admin may change them from now on).
* `app_instances.models`: for an instance that has a workload, the model ids that workload was started with
  (what it runs now); other instances pin their models at their next start.
* model deployments (and their replicas) owned by an end user were started on that user's behalf by an app
  instance; they now belong to the model's owner.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import aiot.store.base
from aiot.ids import new_id

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "package_names",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.Enum("model", "app", name="packagekind", native_enum=False, length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", aiot.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_package_names_owner_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_package_names")),
        sa.UniqueConstraint("kind", "name", name="uq_package_names_kind_name"),
    )
    with op.batch_alter_table("package_names", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_package_names_owner_id"), ["owner_id"], unique=False)
    with op.batch_alter_table("app_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("models", sa.JSON(), server_default=sa.text("'{}'"), nullable=False))

    bind = op.get_bind()
    _claim_existing_names(bind)
    _pin_running_instances(bind)
    _give_auto_deployments_to_model_owners(bind)


def _claim_existing_names(bind: Any) -> None:
    names = sa.table(
        "package_names",
        sa.column("id"),
        sa.column("kind"),
        sa.column("name"),
        sa.column("owner_id"),
        sa.column("created_at", aiot.store.base.UTCDateTime()),
    )
    for kind, table in (("model", "model_packages"), ("app", "app_packages")):
        packages = sa.table(
            table, sa.column("name"), sa.column("owner_id"), sa.column("created_at", aiot.store.base.UTCDateTime())
        )
        rows = bind.execute(
            sa.select(packages.c.name, packages.c.owner_id, packages.c.created_at).order_by(packages.c.created_at)
        ).all()
        first: dict[str, Any] = {}
        owner: dict[str, Any] = {}
        for name, owner_id, created_at in rows:
            first.setdefault(name, created_at)
            if owner_id is not None:
                owner.setdefault(name, owner_id)
        for name, created_at in first.items():
            bind.execute(
                names.insert().values(
                    id=new_id("pkn"), kind=kind, name=name, owner_id=owner.get(name), created_at=created_at
                )
            )


def _pin_running_instances(bind: Any) -> None:
    instances = sa.table("app_instances", sa.column("id"), sa.column("workload_id"), sa.column("models", sa.JSON()))
    workloads = sa.table("workloads", sa.column("id"), sa.column("config", sa.JSON()))
    rows = bind.execute(
        sa.select(instances.c.id, workloads.c.config).select_from(
            instances.join(workloads, workloads.c.id == instances.c.workload_id)
        )
    ).all()
    for instance_id, config in rows:
        pins = {
            alias: b["model_id"]
            for alias, b in ((config or {}).get("models") or {}).items()
            if isinstance(b, dict) and b.get("model_id")
        }
        if pins:
            bind.execute(instances.update().where(instances.c.id == instance_id).values(models=pins))


def _give_auto_deployments_to_model_owners(bind: Any) -> None:
    rows = bind.execute(
        sa.text(
            "SELECT d.id, m.owner_id FROM model_deployments d JOIN model_packages m ON m.id = d.model_id "
            "JOIN users u ON u.id = d.owner_id WHERE u.role = 'end_user'"
        )
    ).all()
    for deployment_id, model_owner in rows:
        bind.execute(
            sa.text("UPDATE model_deployments SET owner_id = :o WHERE id = :d"), {"o": model_owner, "d": deployment_id}
        )
        bind.execute(
            sa.text("UPDATE workloads SET owner_id = :o WHERE group_id = :d AND kind = 'model'"),
            {"o": model_owner, "d": deployment_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("app_instances", schema=None) as batch_op:
        batch_op.drop_column("models")
    with op.batch_alter_table("package_names", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_package_names_owner_id"))
    op.drop_table("package_names")
