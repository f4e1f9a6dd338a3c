"""Delegations, whom an assignee stands in for, and in-order delivery per request.

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
    # a request's messages are delivered in order: "is an earlier one still pending?"
    op.create_index("ix_outbox_request", "outbox", ["request_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_request", table_name="outbox")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_index("ix_assignments_principal")
        batch.drop_column("principal")
    op.drop_table("delegations")
