"""The intake: a submission is numbered and acknowledged after one small write, and
becomes a request (advisor, audit trail, timers, cards) right after, in the background.

Through the real app and the Slack stand-in, with a fake clock: the ack already names the
new ``PR-<n>`` and who it waits for; the request is created on the next settle (what the
worker does at once); a submission that cannot be created is retried, then its requester
is told; numbers never repeat, whichever path a request took. Also: App Home refreshes
queued within ``APPROVALS_HOME_REFRESH_SECONDS`` are published once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.standin.workspace import Workspace
from flows.machine import Submit
from storage import store as store_module
from tests.slack_support import POLICY, ack_text, create, dm_texts, events_of, workspace


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


async def type_command(ws: Workspace, user: str, text: str) -> str:
    """``/purchase <text>`` acknowledged, with nothing run in the background yet."""
    from bot.standin import signing

    response = await ws.send(signing.slash_command(
        ws.secret, text=text, user_id=user, response_url=ws.slack.response_url(),
        trigger=signing.trigger_id(user)))
    return ack_text(response)


async def test_the_ack_names_the_request_before_it_is_created(ws: Workspace) -> None:
    answer = await type_command(ws, "U_ALICE", "€25,000 Desks for the new office")

    assert "Submitted *PR-1*" in answer and "<@U_BOB>" in answer and "Manager" in answer
    store = ws.runtime.store
    assert await store.get(1) is None and await store.intake_waiting() == 1
    assert ws.cards_of("U_BOB") == []

    await ws.settle()

    request = await store.get(1)
    assert request is not None and request.current is not None
    assert request.current.assignees == ("U_BOB",)
    assert await store.intake_waiting() == 0
    assert len(ws.cards_of("U_BOB")) == 1
    assert await events_of(ws, 1) == ["submitted", "card_sent"]


async def test_many_acknowledged_at_once_are_all_created_in_order(ws: Workspace) -> None:
    answers = [await type_command(ws, "U_ALICE", f"$12,{i:03d} Laptops batch {i}")
               for i in range(20)]

    assert [a.split("*")[1] for a in answers] == [f"PR-{i}" for i in range(1, 21)]
    await ws.settle()

    store = ws.runtime.store
    assert await store.intake_waiting() == 0
    for number in range(1, 21):
        request = await store.get(number)
        assert request is not None and request.purpose == f"Laptops batch {number - 1}"
    assert len(ws.cards_of("U_BOB")) == 20
    # the advisor saw each one's predecessors: the repeats are flagged as possible splits
    last = await store.get(20)
    assert last is not None and last.advice is not None and last.advice.flags


async def test_numbers_never_repeat_across_queued_and_immediate_requests(
        ws: Workspace) -> None:
    store = ws.runtime.store
    # under the auto-approval limit: nobody may need to see it, so it is created at once
    assert "PR-1" in await type_command(ws, "U_ALICE", "$120 Cables for the lab")
    assert await store.get(1) is not None and await store.intake_waiting() == 0
    # waits for a person: queued, created right after
    assert "PR-2" in await type_command(ws, "U_ALICE", "€25,000 Desks for the new office")
    assert await store.get(2) is None and await store.intake_waiting() == 1
    assert "PR-3" in await type_command(ws, "U_ALICE", "$90 HDMI adapters for the lab")
    assert await store.get(3) is not None

    await ws.settle()
    assert await store.get(2) is not None
    assert await create(ws, "U_ALICE", "€30,000 Chairs for the new office") == 4


async def test_a_refused_submission_writes_nothing(ws: Workspace) -> None:
    answer = await type_command(ws, "U_NOBODY", "€25,000 Desks")  # no manager in the policy

    assert "can't be routed" in answer and "PR-" not in answer
    assert await ws.runtime.store.intake_waiting() == 0


async def test_a_submission_that_keeps_failing_is_dropped_and_its_requester_told(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    store = ws.runtime.store
    real_create = store._create
    failures = 0

    async def broken(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        failures += 1
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "_create", broken)
    answer = await type_command(ws, "U_ALICE", "€25,000 Desks for the new office")
    assert "PR-1" in answer

    for _ in range(store_module.INTAKE_ATTEMPTS):
        await ws.settle()
        ws.clock.advance(timedelta(minutes=5))

    assert failures == store_module.INTAKE_ATTEMPTS
    assert await store.intake_waiting() == 0 and await store.get(1) is None
    told = [t for t in dm_texts(ws, "U_ALICE") if "PR-1" in t]
    assert len(told) == 1 and "could not be created" in told[0] and "submit it again" in told[0]
    assert "could not create a request from the intake" in caplog.text

    # one broken submission holds up no other
    monkeypatch.setattr(store, "_create", real_create)
    assert await create(ws, "U_ALICE", "€26,000 Chairs") == 2
    assert len(ws.cards_of("U_BOB")) == 1


async def test_a_failure_in_a_batch_holds_up_only_that_submission(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ws.runtime.store
    real_create = store._create

    async def picky(*args: Any, **kwargs: Any) -> Any:
        if kwargs["request_id"] == 2:
            raise RuntimeError("a bug")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(store, "_create", picky)
    for i in range(3):
        await type_command(ws, "U_ALICE", f"€25,00{i} Desks {i}")
    await ws.settle()

    assert await store.get(1) is not None and await store.get(3) is not None
    assert await store.get(2) is None and await store.intake_waiting() == 1
    monkeypatch.setattr(store, "_create", real_create)
    ws.clock.advance(timedelta(seconds=5))
    await ws.settle()
    assert await store.get(2) is not None and await store.intake_waiting() == 0


async def test_home_refreshes_within_the_delay_are_published_once() -> None:
    async with Workspace(policy_text=POLICY, home_refresh=2.0) as ws:
        for i in range(3):
            await create(ws, "U_ALICE", f"€25,00{i} Desks {i}")

        def publishes(user: str) -> list[dict[str, Any]]:
            return [c.params for c in ws.slack.calls("views.publish")
                    if c.params.get("user_id") == user and c.error is None]

        assert publishes("U_BOB") == []  # cards went out; the Homes wait
        assert len(ws.cards_of("U_BOB")) == 3
        ws.clock.advance(timedelta(seconds=2))
        await ws.settle()

        assert len(publishes("U_BOB")) == 1 and len(publishes("U_ALICE")) == 1
        assert "PR-3" in str(publishes("U_BOB")[0]["view"])
        assert (await ws.runtime.store.outbox_counts()).get("pending", 0) == 0


def holding(ws: Workspace, monkeypatch: pytest.MonkeyPatch, *, limit: int
            ) -> Callable[[int], Submit]:
    """The intake holds acknowledgements beyond ``limit`` (for up to 30 s); returns a
    maker of distinct submissions (desks number ``n``)."""
    from decimal import Decimal

    ws.runtime.store.intake_limit = limit
    monkeypatch.setattr(store_module, "INTAKE_HOLD", 30.0)

    def desks(n: int) -> Submit:
        return Submit(requester="U_ALICE", amount=Decimal(25_000 + n), currency="USD",
                      purpose=f"Desks {n}", at=ws.clock.now())

    return desks


async def test_acknowledgements_wait_while_the_intake_is_behind(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    store, policy = ws.runtime.store, ws.runtime.policy
    desks = holding(ws, monkeypatch, limit=1)
    first = await store.receive(desks(1), policy=policy)
    assert first.request.ref == "PR-1"  # the intake is full now: the worker is behind

    held = asyncio.create_task(store.receive(desks(2), policy=policy))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not held.done() and await store.intake_waiting() == 1

    assert [o.request.ref for o in await store.process_intake(ws.clock.now())] == ["PR-1"]
    second = await asyncio.wait_for(held, timeout=5)  # caught up: let in at once
    assert second.request.ref == "PR-2" and await store.intake_waiting() == 1


async def test_held_acknowledgements_are_let_in_as_far_as_there_is_room_oldest_first(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    store, policy = ws.runtime.store, ws.runtime.policy
    desks = holding(ws, monkeypatch, limit=2)
    await store.receive(desks(1), policy=policy)  # room for one more
    waiting = [asyncio.create_task(store.receive(desks(n), policy=policy))
               for n in (2, 3, 4)]
    await asyncio.wait_for(asyncio.shield(waiting[0]), timeout=5)
    for _ in range(20):
        await asyncio.sleep(0)
    # (let in in one group with the first, they would be done with it)
    assert [t.done() for t in waiting] == [True, False, False], "as many as there is room"
    assert await store.intake_waiting() == 2

    created = await store.process_intake(ws.clock.now())  # the worker takes both
    assert [o.request.ref for o in created] == ["PR-1", "PR-2"]
    refs = [(await asyncio.wait_for(t, timeout=5)).request.ref for t in waiting]
    assert refs == ["PR-2", "PR-3", "PR-4"], "in the order they came"
    assert await store.intake_waiting() == 2


async def test_a_held_acknowledgement_looks_again_as_soon_as_a_worker_says_it_created_some(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker that empties the intake is another process (another store): once it
    says so (Store.intake_moved, from its wake line), the held submission looks again at
    once instead of at the next poll."""
    import asyncio

    from storage.store import Store

    store, policy = ws.runtime.store, ws.runtime.policy
    desks = holding(ws, monkeypatch, limit=1)
    monkeypatch.setattr(store_module, "INTAKE_POLL", 30.0)  # no poll within the test
    await store.receive(desks(1), policy=policy)
    held = asyncio.create_task(store.receive(desks(2), policy=policy))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not held.done()

    worker = Store(ws.runtime.db, advisor=store.advisor)
    assert [o.request.ref for o in await worker.process_intake(ws.clock.now())] == ["PR-1"]
    for _ in range(20):
        await asyncio.sleep(0)
    assert not held.done(), "nobody said so yet"
    store.intake_moved()
    assert (await asyncio.wait_for(held, timeout=5)).request.ref == "PR-2"


async def test_a_held_acknowledgement_goes_out_after_the_hold_at_the_latest(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from decimal import Decimal

    from flows.machine import Submit

    store, policy = ws.runtime.store, ws.runtime.policy
    store.intake_limit = 1
    monkeypatch.setattr(store_module, "INTAKE_HOLD", 0.05)
    await store.receive(Submit(requester="U_ALICE", amount=Decimal(25_000), currency="USD",
                               purpose="Desks", at=ws.clock.now()), policy=policy)
    # and no worker at all

    late = await store.receive(Submit(requester="U_ALICE", amount=Decimal(26_000),
                                      currency="USD", purpose="Chairs", at=ws.clock.now()),
                               policy=policy)
    assert late.request.ref == "PR-2" and await store.intake_waiting() == 2


async def test_a_submission_not_confirmed_in_time_is_never_called_unchanged(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from bot import app as app_module

    store = ws.runtime.store
    release = asyncio.Event()
    write = store._arrivals._write

    async def slow(group: Any) -> Any:
        await release.wait()  # a write lock held elsewhere, say
        return await write(group)

    monkeypatch.setattr(store._arrivals, "_write", slow)
    monkeypatch.setattr(app_module, "CONFIRM_WITHIN", 0.05)

    answer = await type_command(ws, "U_ALICE", "€25,000 Desks for the new office")

    assert "couldn't confirm" in answer and "Nothing was changed" not in answer
    release.set()
    for _ in range(100):
        if await store.intake_waiting():
            break
        await asyncio.sleep(0)
    await ws.settle()
    request = await store.get(1)
    assert request is not None and request.purpose == "Desks for the new office"


async def test_a_refused_click_whose_response_url_is_gone_is_told_by_dm(
        ws: Workspace) -> None:
    from bot.ids import ActionId
    from bot.standin import signing
    from bot.standin.workspace import button_value

    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    card = ws.card("U_BOB", "PR-1")
    value = button_value(card, "approve")
    gone = ws.slack.response_url().rsplit("/", 1)[0] + "/R999999"  # expired, say

    response = await ws.send(signing.block_actions(
        ws.secret, user_id="U_MALLORY", action_id=ActionId.APPROVE.value, value=value,
        message=card, response_url=gone))
    assert response.status_code == 200
    await ws.settle()

    told = dm_texts(ws, "U_MALLORY")
    assert len(told) == 1 and "PR-1" in told[0]
    request = await ws.runtime.store.get(1)
    assert request is not None and request.current is not None
    assert request.current.index == 0  # nothing was decided


async def test_a_click_not_confirmed_in_time_is_never_called_unchanged(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from bot import app as app_module
    from bot.ids import ActionId

    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    card = ws.card("U_BOB", "PR-1")
    store = ws.runtime.store
    release = asyncio.Event()
    write = store._clicks._write

    async def slow(group: Any) -> Any:
        await release.wait()
        return await write(group)

    monkeypatch.setattr(store._clicks, "_write", slow)
    monkeypatch.setattr(app_module, "ANSWER_WITHIN", 0.05)

    await ws.click("U_BOB", card, ActionId.APPROVE)

    assert any("couldn't confirm" in a for a in ws.answers())
    assert not any("Nothing was changed" in a for a in ws.answers())
    release.set()
    for _ in range(100):
        if await store.clicks_waiting():
            break
        await asyncio.sleep(0)
    await ws.settle()
    request = await store.get(1)
    assert request is not None and request.steps[0].decided_by == "U_BOB"


STALLED_BURST = 300


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _burst_while_slack_stalls(ws: Workspace) -> Callable[[], Awaitable[int]]:
    """``STALLED_BURST`` submissions waiting in the intake, and Slack taking posts without
    answering; returns how many requests have been created so far."""
    from decimal import Decimal

    from flows.machine import Submit

    store = ws.runtime.store
    for n in range(STALLED_BURST):
        await store.receive(Submit(requester="U_ALICE", amount=Decimal(25_000 + n),
                                   currency="USD", purpose=f"Desks {n}", at=ws.clock.now()),
                            policy=ws.runtime.policy)
    ws.slack.stall("chat.postMessage", times=10_000)  # posted, but no answer comes back

    async def created() -> int:
        return STALLED_BURST - await store.intake_waiting()

    return created


async def _held_then_caught_up(ws: Workspace, created: Callable[[], Awaitable[int]], *,
                               ahead: int, parked: Callable[[], Awaitable[bool]]) -> None:
    """Creation stops ``ahead`` (plus one batch) of the stalled cards; a click is still
    decided; once Slack answers, every request is created and its card sent, once."""
    import asyncio

    store = ws.runtime.store
    await _until(parked, "creation to wait for the stalled cards")
    for _ in range(25):  # a while longer: nothing more is created
        await asyncio.sleep(0.02)
    assert ahead <= await created() <= ahead + store_module.INTAKE_BATCH
    assert len(ws.cards_of("U_BOB")) < await created()

    # clicks are still decided meanwhile; new requests still wait
    await store.receive_click(1, 0, actor="U_BOB", at=ws.clock.now(), response_url=None)
    ws.runtime.wake()

    async def decided() -> bool:
        request = await store.get(1)
        return request is not None and request.current is not None \
            and request.current.index == 1

    await _until(decided, "the click to be decided while new requests wait")
    assert await created() <= ahead + store_module.INTAKE_BATCH

    ws.slack.heal()

    async def delivered() -> bool:
        return await created() == STALLED_BURST and len(ws.cards_of("U_BOB")) == STALLED_BURST

    await _until(delivered, "every request and its card")
    refs = [(m.get("metadata") or {}).get("event_payload", {}).get("request")
            for m in ws.cards_of("U_BOB")]
    assert sorted(refs) == list(range(1, STALLED_BURST + 1))  # each card once


async def test_creation_runs_ahead_of_delivery_only_so_far(ws: Workspace) -> None:
    """In the background, requests are created while their cards wait on Slack, but at
    most ``AHEAD_MAX`` (plus one batch) ahead of them: beyond that the intake fills, so
    acknowledgements slow down, instead of cards falling behind their acknowledgements.
    When Slack answers again, every card goes out, once."""
    from bot import runtime as runtime_module

    created = await _burst_while_slack_stalls(ws)
    await ws.runtime.start_background()
    ahead = runtime_module.AHEAD_MAX

    async def parked() -> bool:
        return (await created() >= ahead and bool(ws.slack.calls("chat.postMessage"))
                and not ws.runtime._room.is_set())

    await _held_then_caught_up(ws, created, ahead=ahead, parked=parked)


@pytest.mark.parametrize("budget", [0.0, 60.0])
async def test_a_transaction_takes_as_many_as_its_time_budget_allows(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch, budget: float) -> None:
    """A transaction creates requests until its budget is spent, at least one, at most a
    batch (on SQLite the worker's writes keep the server's waiting; PostgreSQL saves
    commits); so does one deciding clicks on SQLite (one per transaction on PostgreSQL).
    What it leaves is taken by the next one, nothing twice."""
    from decimal import Decimal

    from flows.machine import Submit

    monkeypatch.setattr(store_module, "CREATE_BUDGET", budget)
    monkeypatch.setattr(store_module, "CLICK_BUDGET", budget)
    store, policy = ws.runtime.store, ws.runtime.policy
    for n in range(5):
        await store.receive(Submit(requester="U_ALICE", amount=Decimal(25_000 + n),
                                   currency="USD", purpose=f"Desks {n}", at=ws.clock.now()),
                            policy=policy)
    per_transaction = 1 if budget == 0 else 5
    created = await store.process_intake(ws.clock.now())
    assert len(created) == per_transaction
    while await store.intake_waiting():
        created += await store.process_intake(ws.clock.now())
    assert [o.request.ref for o in created] == [f"PR-{n}" for n in range(1, 6)]

    for number in range(1, 6):
        await store.receive_click(number, 0, actor="U_BOB", at=ws.clock.now(),
                                  response_url=None)
    decided = [await store.process_clicks()]
    assert decided == [per_transaction if store.db.sqlite else 1]
    while await store.clicks_waiting():
        decided.append(await store.process_clicks())
    assert sum(decided) == 5
    for number in range(1, 6):
        request = await store.get(number)
        assert request is not None and request.current is not None
        assert request.current.index == 1  # approved once, by the manager: now Finance


async def test_empty_queues_take_no_write_lock(ws: Workspace,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker looks at both queues after every wake; when they are empty that must not
    cost a write transaction (on SQLite: the one lock the server's writes wait for)."""
    store = ws.runtime.store
    writes = 0
    write = store.db.write

    def counted(**kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        return write(**kwargs)

    monkeypatch.setattr(store.db, "write", counted)
    assert await store.process_clicks() == 0
    assert await store.process_intake(ws.clock.now()) == []
    assert writes == 0


async def test_with_delivery_in_a_process_of_its_own_creation_still_waits_for_it(
        ws: Workspace) -> None:
    """The worker's two halves (``serve`` runs each in a process of its own): "work"
    creates requests, "delivery" decides clicks and sends the cards, each waking the other
    (here directly; through the server between processes). Creation stops at most
    ``SPLIT_AHEAD`` (plus one batch) ahead of the cards, while clicks are still decided;
    once Slack answers again every card goes out, once, and only from the delivery half."""
    from bot import runtime as runtime_module
    from bot.runtime import Runtime

    work = ws.runtime
    delivery = Runtime(settings=work.settings, policy=work.policy,
                       policy_source=work.policy_source, clock=ws.clock)
    work.part, delivery.part = "work", "delivery"
    delivery.schema_ready = True
    work.notify = lambda part: delivery.wake_here()
    delivery.notify = lambda part: work.wake_here()
    created = await _burst_while_slack_stalls(ws)
    await delivery.prepare()
    try:
        await work.start_background()
        await delivery.start_background()
        assert [t.get_name() for t in work._drainers] == ["intake"]
        assert [t.get_name() for t in delivery._drainers] == ["clicks", "outbox-drain"]
        ahead = runtime_module.SPLIT_AHEAD

        async def parked() -> bool:
            return (await created() >= ahead and bool(ws.slack.calls("chat.postMessage"))
                    and await work.store.people_waiting(limit=ahead) >= ahead)

        await _held_then_caught_up(ws, created, ahead=ahead, parked=parked)
    finally:
        await delivery.close()


# ------------------------------------------------------------- SQLite: the work before the lock

SQLITE_ONLY = ("SQLite only: on PostgreSQL a batch is created inside one transaction, "
               "under the requesters' advisory locks")


async def test_on_sqlite_a_batch_is_worked_out_before_the_write_lock(ws: Workspace) -> None:
    """The advisor (and routing, documents, audit data) run in a read snapshot: the
    write lock, which the server's acknowledgements wait for, is held for inserts only."""
    store = ws.runtime.store
    gate = store.db._write_gate
    if gate is None:
        pytest.skip(SQLITE_ONLY)
    real = store.advisor
    assert real is not None
    held: list[bool] = []

    def advisor(*args: Any) -> Any:
        held.append(gate._held)
        return real(*args)

    store.advisor = advisor
    for n in range(5):
        await type_command(ws, "U_ALICE", f"€25,00{n} Desks for the new office")
    await ws.settle()
    assert held == [False] * 5
    assert len(ws.cards_of("U_BOB")) == 5
    assert await store.verify_audit() is None


async def test_a_batch_whose_snapshot_went_stale_is_created_once_all_the_same(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request created between the snapshot and the write (here: one the server
    approves at once, under the auto-approval limit) makes the prepared batch stale: it
    is created again inside one transaction, each request once."""
    store = ws.runtime.store
    if not store.db.sqlite:
        pytest.skip(SQLITE_ONLY)
    for text in ("€25,000 Desks for the new office", "€25,000 Desks for the new office"):
        await type_command(ws, "U_ALICE", text)
    real = store._intake_prepared
    stale: list[bool] = []

    async def racing(*args: Any) -> Any:
        original = store.db.write_sql

        def write(**kwargs: Any) -> Any:  # another request lands just before the write
            monkeypatch.setattr(store.db, "write_sql", original)

            class _Race:
                async def __aenter__(self) -> Any:
                    await type_command(ws, "U_ALICE", "$20 Printer paper for the office")
                    self.inner = original(**kwargs)
                    return await self.inner.__aenter__()

                async def __aexit__(self, *exc: object) -> Any:
                    return await self.inner.__aexit__(*exc)

            return _Race()

        monkeypatch.setattr(store.db, "write_sql", write)
        result = await real(*args)
        stale.append(result is None)
        return result

    monkeypatch.setattr(store, "_intake_prepared", racing)
    await ws.settle()
    assert stale == [True]
    assert await store.intake_waiting() == 0
    first, second, paper = [await store.get(n) for n in (1, 2, 3)]
    assert first is not None and second is not None and paper is not None
    assert paper.auto_approved
    assert len(ws.cards_of("U_BOB")) == 2
    assert await store.verify_audit() is None
    assert [await events_of(ws, n) for n in (1, 2)] == [["submitted", "card_sent"]] * 2
