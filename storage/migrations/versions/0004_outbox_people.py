"""A partial index of the messages to people waiting in the outbox.

Claiming the outbox used to walk every pending row, App Home refreshes included; during a
burst thousands of those wait (they are published last), so each claim read them all.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# as in storage.tables.OUTBOX_PEOPLE (a migration does not import the current schema)
PEOPLE = "status = 'pending' AND kind <> 'home'"


def upgrade() -> None:
    op.create_index("ix_outbox_people", "outbox", ["id"], sqlite_where=sa.text(PEOPLE),
                    postgresql_where=sa.text(PEOPLE))


def downgrade() -> None:
    op.drop_index("ix_outbox_people", table_name="outbox")
