"""The store shared by replicas: two engines on one database, as two processes would have.

Each test runs on SQLite and, where a server answers, on PostgreSQL (READ COMMITTED, where
the races are real: rows are locked, not whole databases).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from flows.advisor import rules_advice
from flows.machine import Approve, Submit
from flows.policy import Policy
from storage.db import Conflict, Database
from storage.store import CardRef, Store
from storage.tables import CardRow, OutboxRow, TimerRow
from tests.conftest import EXAMPLE_POLICY, T0

REQUESTS = 12
VENDORS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Wonka"]


def submit_cmd(n: int) -> Submit:
    return Submit(requester="U_ALICE", amount=Decimal(9000 + n), currency="USD",
                  purpose="Laptops for the new team", vendor=f"Vendor {n}",
                  cost_center="ENG-001", at=T0)


@pytest.fixture
async def replicas(database: Database, policy: Policy) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores, each with its own engine and pool, on one database."""
    first = Store(database)
    await first.register_policy(policy, source=EXAMPLE_POLICY.read_text(), at=T0)
    other = Database(database.url)
    try:
        yield first, Store(other)
    finally:
        await other.close()


async def test_due_timers_fire_once_across_replicas_while_decisions_cancel_them(
        replicas: tuple[Store, Store], policy: Policy) -> None:
    a, b = replicas
    ids = [(await a.submit(submit_cmd(n), policy=policy)).request.id for n in range(REQUESTS)]
    now = T0 + timedelta(hours=4, seconds=1)  # every reminder is due

    async def tick(store: Store) -> None:
        for timer in await store.due_timers(now):
            await store.fire_timer(timer, now=now)

    async def decide(store: Store, request_id: int) -> None:
        await store.act(request_id, Approve(step=0, actor="U_BOB", at=now))

    # both replicas tick while decisions (which cancel the same timers) arrive on both
    await asyncio.gather(tick(a), tick(b), tick(a),
                         *(decide(a if i % 2 else b, r) for i, r in enumerate(ids[::2])))

    reminded: Counter[int] = Counter()
    for request_id in ids:
        events = [e.event for e in await a.audit_for(request_id)]
        reminded[request_id] = events.count("reminded")
        assert events.count("approved") == (request_id in ids[::2])
    assert max(reminded.values()) == 1, "a timer fired twice"
    for request_id in ids[1::2]:  # nobody decided these: their reminder went out
        assert reminded[request_id] == 1
    async with a.db.read() as session:
        due = (await session.execute(select(TimerRow).where(TimerRow.due_at <= now))).all()
        reminders = (await session.execute(select(OutboxRow.request_id).where(
            OutboxRow.kind == "reminder"))).scalars().all()
    assert due == []
    assert Counter(reminders) == +reminded
    assert await a.verify_audit() is None


async def test_replicas_create_the_intake_in_batches_each_request_once(
        database: Database, policy: Policy) -> None:
    """Two replicas take batches of the intake at once, their requesters interleaved: each
    request is created once, of a requester's two same asks exactly one is seen as a
    duplicate (of the other, whichever replica created it), and the audit chain holds. On
    PostgreSQL a batch takes its requesters' locks up front, in one order, so two batches
    see each other and never wait on each other in a circle."""
    a = Store(database, advisor=rules_advice)
    await a.register_policy(policy, source=EXAMPLE_POLICY.read_text(), at=T0)
    other = Database(database.url)
    b = Store(other, advisor=rules_advice)
    try:
        for n in range(REQUESTS * 2):  # each requester asks for the same thing twice
            await a.receive(Submit(requester=("U_ALICE", "U_BOB")[n % 2],
                                   amount=Decimal(6000 + 400 * (n // 4)), currency="USD",
                                   purpose="Laptops for the new team",
                                   vendor=VENDORS[n // 4], cost_center="ENG-001",
                                   at=T0 + timedelta(seconds=n)), policy=policy)

        async def drain(store: Store) -> list[int]:
            made: list[int] = []
            while await store.intake_waiting():
                made += [o.request.id for o in await store.process_intake(
                    T0 + timedelta(minutes=1), limit=5)]
            return made

        made = await asyncio.gather(drain(a), drain(b), drain(a))
        created = [n for batch in made for n in batch]
        assert sorted(created) == list(range(1, REQUESTS * 2 + 1)), "created twice or never"
        flagged: Counter[tuple[str, str | None]] = Counter()
        for n in range(1, REQUESTS * 2 + 1):
            request = await a.get(n)
            assert request is not None and request.advice is not None
            if "duplicate" in request.advice.codes:
                flagged[(request.requester, request.vendor)] += 1
        # each requester asked each vendor twice: whichever was created second is flagged
        assert flagged == {(who, vendor): 1 for who in ("U_ALICE", "U_BOB")
                           for vendor in VENDORS}
        assert await a.verify_audit() is None
    finally:
        await other.close()


async def test_outbox_claims_are_disjoint_and_keep_each_requests_order(
        replicas: tuple[Store, Store], policy: Policy) -> None:
    a, b = replicas
    for n in range(REQUESTS):
        request = (await a.submit(submit_cmd(n), policy=policy)).request
        await a.act(request.id, Approve(step=0, actor="U_BOB", at=T0))  # more rows per request
    claimed: list[int] = []
    firsts: dict[int, int] = {}
    for _ in range(20):
        rounds = await asyncio.gather(*(s.claim_outbox(T0, limit=5) for s in (a, b, a, b)))
        batch = [item for items in rounds for item in items]
        if not batch:
            break
        claimed.extend(item.id for item in batch)
        requests_in_batch = [i.request_id for i in batch if i.kind != "home"]
        assert len(requests_in_batch) == len(set(requests_in_batch)), (
            "two messages of one request were out at once")
        for item in batch:
            if item.kind != "home" and item.request_id is not None:
                firsts.setdefault(item.request_id, item.id)
            await (a if item.id % 2 else b).outbox_done(item.id, at=T0)
    assert len(claimed) == len(set(claimed)), "a message was claimed by two replicas"
    assert await a.outbox_counts() == {"sent": len(claimed)}
    async with a.db.read() as session:
        first_rows = dict((await session.execute(
            select(OutboxRow.request_id, func.min(OutboxRow.id))
            .where(OutboxRow.kind != "home").group_by(OutboxRow.request_id))).all())
    assert firsts == first_rows, "a request's later message went out before its first"


async def test_a_delivery_reaching_two_replicas_at_once_is_handled_once(
        replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    for n in range(10):
        results = await asyncio.gather(*(s.first_delivery(f"Ev{n}", at=T0)
                                         for s in (a, b, a, b)))
        assert sorted(results) == [False, False, False, True]


async def test_a_card_recorded_by_two_replicas_is_one_card(
        replicas: tuple[Store, Store], policy: Policy) -> None:
    a, b = replicas
    request = (await a.submit(submit_cmd(1), policy=policy)).request
    claimed = [i for i in await a.claim_outbox(T0) if i.kind == "card"]
    # the same card (lease ran out, another replica delivered it again) marked by both
    await asyncio.gather(
        a.outbox_done(claimed[0].id, at=T0, card=CardRef(request.id, 0, "U_BOB", "D1", "1.1")),
        b.outbox_done(claimed[0].id, at=T0, card=CardRef(request.id, 0, "U_BOB", "D1", "1.2")))
    async with a.db.read() as session:
        rows = (await session.execute(select(CardRow))).scalars().all()
    assert len(rows) == 1 and rows[0].ts in {"1.1", "1.2"}
    async with b.db.write_sql() as sql:  # a second recording points the card at the new ts
        await b._save_cards(sql, [CardRef(request.id, 0, "U_BOB", "D1", "1.3")], at=T0)
    assert [c.ts for c in await a.cards(request.id, 0)] == ["1.3"]


async def test_a_deadlock_is_a_conflict_the_store_runs_again(database: Database) -> None:
    if database.sqlite:
        pytest.skip("SQLite serialises writers: no row locks, no deadlocks")
    other = Database(database.url)
    async with database.write() as session:
        await session.execute(text("CREATE TABLE pair (id int primary key, n int)"))
        await session.execute(text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    both_hold_one = asyncio.Barrier(2)

    async def cross(db: Database, first: int, second: int) -> str:
        try:
            async with db.write() as session:
                await session.execute(text(f"UPDATE pair SET n = n + 1 WHERE id = {first}"))
                await both_hold_one.wait()
                await session.execute(text(f"UPDATE pair SET n = n + 1 WHERE id = {second}"))
        except Conflict:
            return "conflict"
        return "committed"

    try:
        outcomes = await asyncio.gather(cross(database, 1, 2), cross(other, 2, 1))
    finally:
        await other.close()
    assert sorted(outcomes) == ["committed", "conflict"]
