"""The schema: SQLAlchemy 2 declarative tables. Migrations in ``migrations/`` mirror it.

A request's whole state lives in ``requests.doc`` (the core's :class:`flows.model.Request`
as JSON) guarded by ``requests.version``; the other columns of ``requests`` and the
``assignments`` table are projections kept for indexed queries. Timers and the outbox are
rows written in the same transaction as the state change that needs them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.coltypes import UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class PolicyRow(Base):
    __tablename__ = "policies"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[str] = mapped_column(Text)  # canonical JSON of the validated policy
    source: Mapped[str] = mapped_column(Text)  # the YAML as it was read
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    requester: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    vendor: Mapped[str | None] = mapped_column(String(300))
    vendor_key: Mapped[str | None] = mapped_column(String(300))
    cost_center: Mapped[str | None] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3))
    base_amount_cents: Mapped[int] = mapped_column(BigInteger)
    policy_hash: Mapped[str] = mapped_column(ForeignKey("policies.hash"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)
    doc: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_requests_requester_created", "requester", "created_at"),
        Index("ix_requests_requester_vendor", "requester", "vendor_key", "created_at"),
        Index("ix_requests_vendor_status", "vendor_key", "status"),
        Index("ix_requests_cost_center", "cost_center", "status", "created_at"),
    )


class AssignmentRow(Base):
    """Who a pending step waits for: one row per (request, step, assignee)."""

    __tablename__ = "assignments"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    principal: Mapped[str | None] = mapped_column(String(64))  # stood in for, by delegation

    __table_args__ = (Index("ix_assignments_request", "request_id"),
                      Index("ix_assignments_principal", "principal"))


class TimerRow(Base):
    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    step: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_timers_due", "due_at"),
                      Index("ix_timers_request", "request_id", "step"))


# Pending messages to people (everything but App Home refreshes): the condition of the
# partial index the outbox is claimed through, written as SQL so that the claim's WHERE
# repeats it word for word (a bound parameter would keep SQLite from using the index).
OUTBOX_PEOPLE = "status = 'pending' AND kind <> 'home'"
# A person's App Home refresh waiting to be tried (the payload names the person): at most
# one, so that a burst of changes to their requests queues one publish, not thousands.
HOME_WAITING = "kind = 'home' AND status = 'pending' AND attempts = 0"


class OutboxRow(Base):
    """A message to Slack, committed with the state change that needs it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),
                      Index("ix_outbox_request", "request_id", "status", "id"),
                      # messages to people waiting to go out, however many App Home
                      # refreshes wait with them (storage.store.Store.claim_outbox)
                      Index("ix_outbox_people", "id", sqlite_where=text(OUTBOX_PEOPLE),
                            postgresql_where=text(OUTBOX_PEOPLE)),
                      # App Home refreshes waiting untried, by person: a change adds none
                      # while one waits (storage.store._insert_homes)
                      Index("ix_outbox_home_waiting", "payload",
                            sqlite_where=text(HOME_WAITING), postgresql_where=text(HOME_WAITING)))


class CardRow(Base):
    """Where each approval card went, so every card of a step can be updated in place."""

    __tablename__ = "cards"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    step: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ux_cards_step_user", "request_id", "step", "user_id", unique=True),
    )


class SlackEventRow(Base):
    """Events API deliveries already handled, by ``event_id`` (Slack retries them)."""

    __tablename__ = "slack_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditRow(Base):
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    request: Mapped[str | None] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    data: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_request", "request", "seq"),)


class AuditHeadRow(Base):
    """The chain's last (seq, hash): one row, locked by every append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class DelegationRow(Base):
    """``delegator`` is away until ``until``: their steps go to ``delegate`` meanwhile."""

    __tablename__ = "delegations"

    delegator: Mapped[str] = mapped_column(String(64), primary_key=True)
    delegate: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IntakeRow(Base):
    """Submissions acknowledged but not yet processed, each the moment it was accepted.

    Its id is the request's number: the acknowledgement tells ``PR-<id>`` at once and the
    request is created later under that id, in the same transaction that deletes the row.
    Every request number is drawn from this table's sequence (ids are never reused).
    """

    __tablename__ = "intake"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    requester: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the Submit command, policy version, receipt
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_intake_due", "next_attempt_at", "id"),
                      {"sqlite_autoincrement": True})


class ClickRow(Base):
    """Approve clicks acknowledged but not yet decided on, in the order they came.

    The click is recorded before Slack gets its acknowledgement, so none is lost; the
    decision (or the refusal, told to the clicker) follows in the background.
    """

    __tablename__ = "clicks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(BigInteger)  # as the button said: may not exist
    step: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    response_url: Mapped[str | None] = mapped_column(Text)
