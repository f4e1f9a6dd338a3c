"""App Home refreshes waiting: a plain index instead of a unique one.

Revision 0005 held at most one waiting, untried App Home refresh per person with a partial
unique index. A replica of an earlier version, still running during a rolling upgrade,
inserts a refresh without looking, so its writes would fail on that index until it is
replaced. The current version looks for a waiting refresh before it adds one
(``storage.store._insert_homes``), through this partial index of the same rows, which
refuses nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# as in storage.tables.HOME_WAITING (a migration does not import the current schema)
WAITING = "kind = 'home' AND status = 'pending' AND attempts = 0"


def upgrade() -> None:
    op.create_index("ix_outbox_home_waiting", "outbox", ["payload"],
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))
    op.drop_index("ux_outbox_home_waiting", table_name="outbox")


def downgrade() -> None:
    # merge refreshes waiting twice (added while this revision was in force) first, as 0005
    op.execute(sa.text(
        f"UPDATE outbox SET status = 'sent', sent_at = next_attempt_at WHERE {WAITING} "  # noqa: S608
        f"AND id NOT IN (SELECT min(id) FROM outbox WHERE {WAITING} GROUP BY payload)"))
    op.create_index("ux_outbox_home_waiting", "outbox", ["payload"], unique=True,
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))
    op.drop_index("ix_outbox_home_waiting", table_name="outbox")
