"""One waiting App Home refresh per person.

Every change to a request queued a refresh of each person whose Home shows it, so a burst
left thousands of refresh rows for a busy approver, all written, claimed and marked sent
for one publish. A partial unique index now holds at most one refresh per person that is
waiting and not yet tried; a change finds it there and adds nothing (the publish reads the
person's state when it goes out). Refreshes already waiting twice are merged first.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# as in storage.tables.HOME_WAITING (a migration does not import the current schema)
WAITING = "kind = 'home' AND status = 'pending' AND attempts = 0"


def upgrade() -> None:
    # a person's first waiting refresh stays (due the soonest): its publish shows what the
    # others would
    op.execute(sa.text(
        f"UPDATE outbox SET status = 'sent', sent_at = next_attempt_at WHERE {WAITING} "  # noqa: S608
        f"AND id NOT IN (SELECT min(id) FROM outbox WHERE {WAITING} GROUP BY payload)"))
    op.create_index("ux_outbox_home_waiting", "outbox", ["payload"], unique=True,
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))


def downgrade() -> None:
    op.drop_index("ux_outbox_home_waiting", table_name="outbox")
