"""rollouts: version changes of instances and model deployments; deployments started for app instances

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 03:36:16
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import aiot.store.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column(
            "target", sa.Enum("instance", "model", name="rollouttarget", native_enum=False, length=16), nullable=False
        ),
        sa.Column("target_id", sa.String(length=100), nullable=False),
        sa.Column("from_package_id", sa.String(length=32), nullable=True),
        sa.Column("to_package_id", sa.String(length=32), nullable=False),
        sa.Column("from_version", sa.String(length=50), nullable=False),
        sa.Column("to_version", sa.String(length=50), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("manual_rollback", sa.Boolean(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "rolling", "succeeded", "rolled_back", "superseded", name="rolloutstate", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("requested_by", sa.String(length=32), nullable=True),
        sa.Column("started_at", aiot.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("healthy_since", aiot.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", aiot.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["users.id"], name=op.f("fk_rollouts_requested_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollouts_target_id"), ["target_id"], unique=False)
    with op.batch_alter_table("model_deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auto", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("model_deployments", schema=None) as batch_op:
        batch_op.drop_column("auto")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollouts_target_id"))
    op.drop_table("rollouts")
