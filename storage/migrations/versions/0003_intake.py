"""The intake: submissions and approve clicks acknowledged at once, processed right after.

Request numbers are drawn from ``intake.id`` from now on, so its sequence starts after the
highest request number already given.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.coltypes import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "intake",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("requester", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_intake_due", "intake", ["next_attempt_at", "id"])
    op.create_table(
        "clicks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("response_url", sa.Text(), nullable=True),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("INSERT INTO sqlite_sequence (name, seq) "
                   "SELECT 'intake', COALESCE(MAX(id), 0) FROM requests")
    else:
        op.execute("SELECT setval(pg_get_serial_sequence('intake', 'id'), "
                   "COALESCE((SELECT MAX(id) FROM requests), 0) + 1, false)")


def downgrade() -> None:
    op.drop_table("clicks")
    op.drop_index("ix_intake_due", table_name="intake")
    op.drop_table("intake")
