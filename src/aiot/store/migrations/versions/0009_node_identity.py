"""node identity: join tokens with a number of uses, revoked nodes, the token a node joined with

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-03 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import aiot.store.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_join_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_uses", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("uses", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_at", aiot.store.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("join_token_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("join_token_id")
        batch_op.drop_column("revoked_at")
    with op.batch_alter_table("node_join_tokens", schema=None) as batch_op:
        batch_op.drop_column("uses")
        batch_op.drop_column("max_uses")
