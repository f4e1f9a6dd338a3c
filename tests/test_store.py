"""Storage on a real SQLite file and, where a server answers, on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from flows import machine
from flows.machine import Approve, Cancel, Reject, Submit
from flows.model import RequestStatus, StepStatus
from flows.policy import Policy, parse_policy
from storage import store as store_module
from storage.db import CHECKPOINT_PAGES, Database
from storage.migrate import current_revision, head_revision, upgrade
from storage.store import CardRef, Sent, Store
from storage.tables import AssignmentRow, Base, OutboxRow, TimerRow
from tests.conftest import EXAMPLE_POLICY, T0


def submit_cmd(amount: int | str, currency: str = "USD", requester: str = "U_ALICE",
               at_offset: int = 0) -> Submit:
    return Submit(requester=requester, amount=Decimal(str(amount)), currency=currency,
                  purpose="Laptops for the new team", vendor="Acme Inc",
                  cost_center="ENG-001", at=T0 + timedelta(seconds=at_offset))


async def test_migrations_are_idempotent_and_match_the_tables(database: Database) -> None:
    await upgrade(database.engine)  # a second time changes nothing
    assert await current_revision(database.engine) == head_revision()

    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    async with database.engine.connect() as conn:
        diffs = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diffs == []


async def test_submit_commits_request_timers_outbox_and_audit_together(store: Store) -> None:
    outcome = await store.submit(submit_cmd(25000, "EUR"), policy=await _policy(store))
    request = outcome.request
    assert request.ref == "PR-1"
    assert request.base_amount == Decimal("27000.00")
    assert [s.level for s in request.steps] == ["Manager", "Finance"]
    stored = await store.get(request.id)
    assert stored == request
    async with store.db.read() as session:
        timers = (await session.execute(select(TimerRow))).scalars().all()
        outbox = (await session.execute(select(OutboxRow))).scalars().all()
        assignments = (await session.execute(select(AssignmentRow))).scalars().all()
    assert sorted((t.kind, t.due_at - T0) for t in timers) == [
        ("escalate", timedelta(hours=48)), ("remind", timedelta(hours=4))]
    assert [(o.kind, o.status) for o in outbox] == [
        ("card", "pending"), ("home", "pending"), ("home", "pending")]
    assert [(a.user_id, a.step) for a in assignments] == [("U_BOB", 0)]
    trail = await store.audit_for(request.id)
    assert [e.event for e in trail] == ["submitted"]
    assert trail[0].data["amount"] == "25000" and trail[0].data["currency"] == "EUR"


async def test_a_request_moves_through_every_level(store: Store) -> None:
    policy = await _policy(store)
    request = (await store.submit(submit_cmd(120000), policy=policy)).request
    for step, actor in enumerate(["U_BOB", "U_FIN2", "U_DIR"]):
        assert [(r.id, s.index) for r, s in await store.waiting_for(actor)] == [(request.id, step)]
        outcome = await store.act(request.id, Approve(step=step, actor=actor, at=T0))
        assert outcome is not None and outcome.refusal is None
        assert await store.waiting_for(actor) == []
    final = await store.get(request.id)
    assert final is not None and final.status is RequestStatus.APPROVED
    assert [s.decided_by for s in final.steps] == ["U_BOB", "U_FIN2", "U_DIR"]
    assert await store.due_timers(T0 + timedelta(days=365)) == []  # every timer cancelled
    events = [e.event for e in await store.audit_for(request.id)]
    assert events == ["submitted", "approved", "approved", "approved"]
    assert await store.verify_audit() is None


async def test_reject_and_cancel(store: Store) -> None:
    policy = await _policy(store)
    first = (await store.submit(submit_cmd(25000), policy=policy)).request
    refused = await store.act(first.id, Reject(step=0, actor="U_BOB", reason="  ", at=T0))
    assert refused is not None and refused.refusal is not None
    done = await store.act(first.id, Reject(step=0, actor="U_BOB", reason="Over budget", at=T0))
    assert done is not None and done.request.status is RequestStatus.REJECTED
    assert done.request.outcome_reason == "Over budget"

    second = (await store.submit(submit_cmd(9000), policy=policy)).request
    stranger = await store.act(second.id, Cancel(actor="U_BOB", at=T0))
    assert stranger is not None and stranger.refusal is not None
    mine = await store.act(second.id, Cancel(actor="U_ALICE", at=T0))
    assert mine is not None and mine.request.status is RequestStatus.CANCELLED
    assert await store.waiting_for("U_BOB") == []
    assert await store.act(999, Cancel(actor="U_ALICE", at=T0)) is None


async def test_two_sessions_racing_on_one_step_record_one_decision(database: Database,
                                                                    policy: Policy) -> None:
    # Two stores on two engines: two connections, as two replicas would have.
    first = Store(database)
    await first.register_policy(policy, source=EXAMPLE_POLICY.read_text(), at=T0)
    other_db = Database(database.url)
    second = Store(other_db)
    try:
        ids = []
        for n in range(6):
            request = (await first.submit(submit_cmd(25000, at_offset=n), policy=policy)).request
            await first.act(request.id, Approve(step=0, actor="U_BOB", at=T0))
            ids.append(request.id)
        for request_id in ids:
            results = await asyncio.gather(
                first.act(request_id, Approve(step=1, actor="U_FIN1", at=T0)),
                second.act(request_id, Reject(step=1, actor="U_FIN2", reason="no", at=T0)),
                second.act(request_id, Approve(step=1, actor="U_FIN2", at=T0)),
            )
            decided = [r for r in results if r is not None and r.refusal is None]
            assert len(decided) == 1
            trail = await first.audit_for(request_id)
            decisions = [e for e in trail if e.event in {"approved", "rejected"}
                         and e.data.get("step") == 1]
            assert len(decisions) == 1
            refused = [e for e in trail if e.event == "click_refused"]
            assert len(refused) == 2
            stored = await first.get(request_id)
            assert stored is not None and stored.steps[1].status in {StepStatus.APPROVED,
                                                                     StepStatus.REJECTED}
        assert await first.verify_audit() is None
    finally:
        await other_db.close()


async def test_a_timer_fires_once_and_not_after_a_decision(store: Store, database: Database,
                                                          policy: Policy) -> None:
    request = (await store.submit(submit_cmd(9000), policy=policy)).request
    due = await store.due_timers(T0 + timedelta(hours=4))
    assert [t.kind.value for t in due] == ["remind"]
    other_db = Database(database.url)
    try:
        other = Store(other_db)
        now = T0 + timedelta(hours=4, seconds=1)
        results = await asyncio.gather(store.fire_timer(due[0], now=now),
                                       other.fire_timer(due[0], now=now))
        assert sum(r is not None for r in results) == 1
    finally:
        await other_db.close()
    # the reminder rescheduled itself on the cadence: 4h + 24h
    nxt = await store.due_timers(T0 + timedelta(days=10))
    assert sorted(t.due_at - T0 for t in nxt) == [timedelta(hours=28), timedelta(hours=48)]
    await store.act(request.id, Approve(step=0, actor="U_BOB", at=T0 + timedelta(hours=5)))
    assert await store.due_timers(T0 + timedelta(days=10)) == []
    events = [e.event for e in await store.audit_for(request.id)]
    assert events.count("reminded") == 1


async def test_requests_stay_on_the_policy_version_they_started_with(store: Store,
                                                                     policy: Policy) -> None:
    old = (await store.submit(submit_cmd(25000), policy=policy)).request
    edited_text = EXAMPLE_POLICY.read_text().replace("[U_FIN1, U_FIN2]", "[U_FIN3]")
    edited = parse_policy(edited_text)
    assert edited.version_hash != policy.version_hash
    new = (await store.submit(submit_cmd(25000), policy=edited)).request
    await store.act(old.id, Approve(step=0, actor="U_BOB", at=T0))
    await store.act(new.id, Approve(step=0, actor="U_BOB", at=T0))
    old_now, new_now = await store.get(old.id), await store.get(new.id)
    assert old_now is not None and new_now is not None
    assert old_now.steps[1].assignees == ("U_FIN1", "U_FIN2")
    assert old_now.policy_version == policy.version_hash
    assert new_now.steps[1].assignees == ("U_FIN3",)
    # a fresh store (a restart) reads the pinned version back from the database
    fresh = Store(store.db)
    assert (await fresh.policy(policy.version_hash)).version_hash == policy.version_hash


async def test_outbox_lease_and_delivery_record(store: Store, policy: Policy) -> None:
    request = (await store.submit(submit_cmd(9000), policy=policy)).request
    claimed = await store.claim_outbox(T0)
    assert [(i.kind, i.payload) for i in claimed] == [
        ("card", {"step": 0, "user": "U_BOB"}), ("home", {"user": "U_ALICE"}),
        ("home", {"user": "U_BOB"})]
    assert await store.claim_outbox(T0 + timedelta(seconds=5)) == []  # leased
    await store.outbox_done(claimed[0].id, at=T0,
                            card=CardRef(request.id, 0, "U_BOB", "D_BOB", "1.000100"),
                            audit=("card_sent", "system", {"step": 0, "to": "U_BOB"}))
    await store.outbox_done(claimed[0].id, at=T0)  # a second mark changes nothing
    assert await store.cards(request.id, 0) == [
        CardRef(request.id, 0, "U_BOB", "D_BOB", "1.000100")]
    # the lease ran out for the two messages nobody confirmed: they come back, the card not
    again = await store.claim_outbox(T0 + timedelta(minutes=5))
    assert [(i.kind, i.attempts) for i in again] == [("home", 2), ("home", 2)]
    assert await store.outbox_counts() == {"sent": 1, "pending": 2}
    assert [e.event for e in await store.audit_for(request.id)] == ["submitted", "card_sent"]


async def test_a_persons_home_refreshes_leased_elsewhere_are_not_claimed_again(
        store: Store) -> None:
    """A person's refreshes are claimed together -- but not one that another replica
    already holds under its lease: that one is its to publish."""
    await queue_home(store, "U_X", at=T0)
    held = await store.claim_outbox(T0)  # replica A: leased for 30 s
    assert [i.kind for i in held] == ["home"]
    await queue_home(store, "U_X", at=T0 + timedelta(seconds=1))  # a change after A's read
    later = await store.claim_outbox(T0 + timedelta(seconds=1))  # replica B
    assert held[0].id not in [i.id for i in later]
    assert [(i.kind, i.attempts) for i in later] == [("home", 1)]


async def test_one_home_refresh_waits_per_person_however_many_changes(
        store: Store, policy: Policy) -> None:
    """Forty requests by one requester to one approver: two refreshes wait, one each, due
    when the first would have been; after a claim, the next change queues another."""
    for n in range(40):
        await store.submit(submit_cmd(9000 + n, at_offset=n), policy=policy)
    waiting = await store.claim_outbox(T0 + timedelta(minutes=1), limit=100)
    homes = [i for i in waiting if i.kind == "home"]
    assert sorted(str(i.payload["user"]) for i in homes) == ["U_ALICE", "U_BOB"]
    assert all(i.created_at == T0 for i in homes), "the first change's refresh, kept"
    await store.outbox_done_many([Sent(i.id) for i in waiting], at=T0 + timedelta(minutes=1))
    await store.submit(submit_cmd(9100, at_offset=100), policy=policy)
    again = await store.claim_outbox(T0 + timedelta(minutes=2), limit=100)
    assert sorted(str(i.payload["user"]) for i in again if i.kind == "home") == [
        "U_ALICE", "U_BOB"]


async def test_a_replica_of_the_last_version_may_still_queue_refreshes_its_way(
        store: Store, policy: Policy) -> None:
    """During a rolling upgrade a replica of the version before adds a refresh without
    looking: its write goes through (no unique index refuses it), and the refreshes it
    doubled go out as one batch's publish for the person."""
    await store.submit(submit_cmd(9000), policy=policy)
    async with store.db.write_sql() as sql:  # as the version before wrote it
        await sql.many(store_module._INSERT_OUTBOX, [
            store_module._outbox_values(None, "home", {"user": "U_BOB"}, at=T0)])
    await store.submit(submit_cmd(9001, at_offset=1), policy=policy)
    waiting = await store.claim_outbox(T0 + timedelta(minutes=1), limit=100)
    assert sorted(str(i.payload["user"]) for i in waiting if i.kind == "home") == [
        "U_ALICE", "U_BOB", "U_BOB"]


async def queue_home(store: Store, user: str, *, at: datetime) -> None:
    """An App Home refresh of ``user`` queued as a change to their requests queues it."""
    async with store.db.write_sql() as sql:
        await store_module._insert_homes(sql, [
            store_module._outbox_values(None, "home", {"user": user}, at=at)])


async def test_a_claim_reads_past_app_home_refreshes_waiting_in_thousands(
        store: Store, policy: Policy) -> None:
    """During a burst App Home refreshes pile up (they go last); taking the next cards must
    not read them all: the claim goes through the partial index of messages to people."""
    first = (await store.submit(submit_cmd(9000), policy=policy)).request
    async with store.db.write() as session:
        for n in range(3000):
            Store.enqueue(session, request_id=first.id, kind="home",
                          payload={"user": f"U_{n}"}, at=T0)
    second = (await store.submit(submit_cmd(9500, at_offset=1), policy=policy)).request
    claimed = await store.claim_outbox(T0 + timedelta(seconds=1), homes=False)
    assert [(i.request_id, i.kind) for i in claimed] == [(first.id, "card"),
                                                         (second.id, "card")]
    if store.db.sqlite:
        async with store.db.read() as session:
            connection = await session.connection()
            plan = (await connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {store._claim_people}", ("2030-01-01 00:00:00", 50))).all()
        assert any("USING INDEX ix_outbox_people" in row[-1] for row in plan), plan
        assert not any("ix_outbox_due" in row[-1] for row in plan), plan


async def test_verify_names_the_first_changed_removed_or_reordered_entry(
        store: Store, policy: Policy) -> None:
    request = (await store.submit(submit_cmd(120000), policy=policy)).request
    for step, actor in enumerate(["U_BOB", "U_FIN1"]):
        await store.act(request.id, machine.Approve(step=step, actor=actor, at=T0))
    assert await store.verify_audit() is None  # entries 1..3

    async def sql(statement: str) -> None:
        async with store.db.write() as session:
            await session.execute(text(statement))

    await sql("UPDATE audit SET actor = 'U_EVE' WHERE seq = 2")
    broken = await store.verify_audit()
    assert broken is not None and broken.seq == 2 and "changed" in broken.problem
    await sql("UPDATE audit SET actor = 'U_BOB' WHERE seq = 2")
    assert await store.verify_audit() is None
    await sql("UPDATE audit SET data = REPLACE(data, 'Manager', 'Finance') WHERE seq = 2")
    broken = await store.verify_audit()
    assert broken is not None and broken.seq == 2
    await sql("UPDATE audit SET data = REPLACE(data, 'Finance', 'Manager') WHERE seq = 2")
    assert await store.verify_audit() is None

    await sql("UPDATE audit SET seq = 10 WHERE seq = 2")
    await sql("UPDATE audit SET seq = 2 WHERE seq = 3")
    await sql("UPDATE audit SET seq = 3 WHERE seq = 10")
    broken = await store.verify_audit()
    assert broken is not None and broken.seq == 2
    await sql("UPDATE audit SET seq = 10 WHERE seq = 2")
    await sql("UPDATE audit SET seq = 2 WHERE seq = 3")
    await sql("UPDATE audit SET seq = 3 WHERE seq = 10")
    assert await store.verify_audit() is None

    await sql("DELETE FROM audit WHERE seq = 3")
    broken = await store.verify_audit()
    assert broken is not None and broken.seq == 3 and "removed" in broken.problem


async def _policy(store: Store) -> Policy:
    versions = list(store._policies)
    return await store.policy(versions[0])


async def test_a_checkpoint_that_finds_the_log_locked_waits_for_the_next_tick(
        store: Store) -> None:
    """A lock held elsewhere is no outage: the checkpoint says it copied nothing, as
    SQLite does when another one is under way, and the next tick tries again; any other
    error is raised as SQLAlchemy raises it (the tick logs it in one line)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    db = store.db
    if not db.sqlite:
        pytest.skip("SQLite only: PostgreSQL checkpoints by itself")

    class Failing:
        def __init__(self, message: str) -> None:
            self.message = message

        def execute(self, _statement: str) -> None:
            raise sqlite3.OperationalError(self.message)

        def close(self) -> None:
            pass

    db._checkpointer = Failing("database is locked")  # type: ignore[assignment]
    assert await db.checkpoint() == (-1, -1)
    db._checkpointer = Failing("disk I/O error")  # type: ignore[assignment]
    with pytest.raises(OperationalError, match="disk I/O error"):
        await db.checkpoint()
    db._checkpointer = None
    assert await db.checkpoint() is not None


async def test_the_write_ahead_log_is_checkpointed_by_the_tick_not_by_commits(
        store: Store, policy: Policy) -> None:
    """A commit that copies the log into the database file stalls for milliseconds: that
    is the background tick's job (Database.checkpoint); commits do it only once the log
    holds CHECKPOINT_PAGES."""
    db = store.db
    if not db.sqlite:
        pytest.skip("SQLite only: PostgreSQL checkpoints by itself")
    await db.checkpoint()
    for n in range(60):  # more pages than SQLite's own default (1,000) between checkpoints
        await store.submit(submit_cmd(9000 + n, at_offset=n), policy=policy)
    async with db.write_sql() as sql:
        assert await sql.rows("PRAGMA wal_autocheckpoint") == [(CHECKPOINT_PAGES,)]
    done = await db.checkpoint()
    assert done is not None
    logged, copied = done
    assert logged > 1000, "60 submissions' pages waited in the log for the tick"
    assert copied == logged
    # copied in a thread: this process's event loop goes on meanwhile
    for n in range(60):
        await store.submit(submit_cmd(9100 + n, at_offset=n), policy=policy)
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counting = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    turns = 0
    done = await db.checkpoint()
    counting.cancel()
    assert done is not None and done[0] > 1000 and turns > 0
    await db.leave_checkpoints_to_others()  # the server: its workers checkpoint
    async with db.write_sql() as sql:
        assert await sql.rows("PRAGMA wal_autocheckpoint") == [(0,)]
    assert await db.checkpoint() is None
