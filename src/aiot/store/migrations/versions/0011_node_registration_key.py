"""nodes.registration_key_hash: a registration retried after a lost answer gets its node back

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 09:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("registration_key_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("registration_key_hash")
