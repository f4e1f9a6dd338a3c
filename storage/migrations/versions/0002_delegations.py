"""Delegations: out-of-office hand-overs of approval steps, and whom an assignee stands in for.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.coltypes import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delegations",
        sa.Column("delegator", sa.String(64), primary_key=True),
        sa.Column("delegate", sa.String(64), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("principal", sa.String(64), nullable=True))
        batch.create_index("ix_assignments_principal", ["principal"])


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_index("ix_assignments_principal")
        batch.drop_column("principal")
    op.drop_table("delegations")
