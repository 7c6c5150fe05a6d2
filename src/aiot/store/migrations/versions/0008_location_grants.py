"""location grants: which non-admin users may see which locations (and their subtrees)

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-03 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import aiot.store.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "location_grants",
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("granted_by", sa.String(length=32), nullable=True),
        sa.Column("granted_at", aiot.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["granted_by"], ["users.id"], name=op.f("fk_location_grants_granted_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_location_grants_location_id_locations"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_location_grants_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("location_id", "user_id", name=op.f("pk_location_grants")),
    )
    with op.batch_alter_table("location_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_location_grants_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("location_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_location_grants_user_id"))
    op.drop_table("location_grants")
