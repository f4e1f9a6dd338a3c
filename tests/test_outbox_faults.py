"""The outbox under Slack faults, through the real app: 429s with ``Retry-After``, 500s
(some after Slack already did the work), permanent errors and dead letters; and idempotency
of Events API retries, double clicks and concurrent clicks.

The fake Slack injects the faults (seeded, so every run sees the same ones); the fake clock
moves past each retry's backoff. Success is counted in what people see: every expected
card and DM is in the fake's conversations exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from bot.delivery import MAX_ATTEMPTS
from bot.ids import ActionId
from bot.standin.web_api import FakeSlack
from bot.standin.workspace import Workspace, has_buttons
from tests.durable_support import (
    HOUR,
    audit,
    content,
    create,
    decidable,
    dms,
    events,
    later,
    policy_text,
    tally,
    workspace,
)

PEOPLE = ("U_ALICE", "U_ERIN", "U_BOB", "U_CAROL", "U_FIN1", "U_FIN2", "U_DIR")


async def drain(ws: Workspace, *, step: float = 30, rounds: int = 80) -> None:
    """Settle, moving the clock past retry backoffs, until the outbox has nothing pending."""
    for _ in range(rounds):
        await ws.settle()
        if not (await ws.runtime.store.outbox_counts()).get("pending"):
            return
        ws.clock.advance(step)
    raise AssertionError(f"the outbox never emptied: {await ws.runtime.store.outbox_counts()}")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(seed=7) as fake:
        yield fake


# --------------------------------------------------------------------------- a flow under faults


async def test_every_message_arrives_exactly_once_under_429s_and_500s(slack: FakeSlack) -> None:
    async with workspace(slack=slack) as ws:
        slack.fail("chat.postMessage", status=429, rate=0.3, retry_after=1)
        slack.fail("chat.postMessage", status=500, rate=0.15, processed=True)
        slack.fail("chat.postMessage", status=500, rate=0.1)
        slack.fail("chat.update", status=429, rate=0.2, retry_after=2)
        slack.fail("chat.update", status=500, rate=0.1, processed=True)
        slack.fail("views.publish", status=500, rate=0.2)

        await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
        await create(ws, "U_ERIN", "$5,000 Laptops for the new hires")
        await create(ws, "U_ALICE", "$150,000 Office fit-out for the new floor")
        await drain(ws)
        for ref in ("PR-1", "PR-3"):
            await ws.click("U_BOB", ws.card("U_BOB", ref), ActionId.APPROVE)
        await drain(ws)
        await ws.click("U_FIN1", ws.card("U_FIN1", "PR-1"), ActionId.APPROVE)
        await ws.click("U_FIN2", ws.card("U_FIN2", "PR-3"), ActionId.APPROVE)
        await drain(ws)
        await ws.click("U_DIR", ws.card("U_DIR", "PR-3"), ActionId.APPROVE)
        await drain(ws)
        # PR-2 waits: reminders at 4h and 28h, escalation to Carol at 48h, all under faults
        for hours in (4, 24, 20):
            await later(ws, hours * HOUR)
            await drain(ws)

        expected = Counter({
            ("U_BOB", "PR-1", "card"): 1, ("U_BOB", "PR-2", "card"): 1,
            ("U_BOB", "PR-3", "card"): 1, ("U_BOB", "PR-2", "reminder"): 2,
            ("U_FIN1", "PR-1", "card"): 1, ("U_FIN2", "PR-1", "card"): 1,
            ("U_FIN1", "PR-3", "card"): 1, ("U_FIN2", "PR-3", "card"): 1,
            ("U_DIR", "PR-3", "card"): 1, ("U_CAROL", "PR-2", "card"): 1,
            ("U_ALICE", "PR-1", "approved"): 1, ("U_ALICE", "PR-3", "approved"): 1,
            ("U_ERIN", "PR-2", "escalated"): 1,
        })
        assert tally(ws, PEOPLE) == expected

        # every decided card was updated in place, the escalated one says so
        for user, ref in (("U_BOB", "PR-1"), ("U_BOB", "PR-3"), ("U_FIN1", "PR-1"),
                          ("U_FIN2", "PR-1"), ("U_FIN1", "PR-3"), ("U_FIN2", "PR-3"),
                          ("U_DIR", "PR-3")):
            card = ws.card(user, ref)
            assert not has_buttons(card) and "Approved* by" in content(card), (user, ref)
        assert decidable(ws.card("U_BOB", "PR-2")) and decidable(ws.card("U_CAROL", "PR-2"))
        assert "Escalated to <@U_CAROL>" in content(ws.card("U_BOB", "PR-2"))
        reminders = dms(ws, "U_BOB", "reminder", "PR-2")
        assert all(r["thread_ts"] == ws.card("U_BOB", "PR-2")["ts"] for r in reminders)

        # the faults really happened, and lost answers were looked up before retrying
        injected = [c for c in slack.calls() if c.error == "injected"]
        assert {c.status for c in injected} == {429, 500}
        assert len(injected) >= 10
        assert slack.calls("conversations.history") or slack.calls("conversations.replies")
        counts = await ws.runtime.store.outbox_counts()
        assert set(counts) == {"sent"}, counts
        # one card_sent entry per card in the audit trail, as in Slack
        trail = [e for n in (1, 2, 3) for e in await audit(ws, n)]
        sent = Counter(e.data["to"] for e in trail if e.event == "card_sent")
        assert sum(sent.values()) == sum(n for (_, _, kind), n in expected.items()
                                         if kind == "card")


async def test_retry_after_is_honoured(slack: FakeSlack) -> None:
    async with workspace(slack=slack) as ws:
        slack.fail("chat.postMessage", status=429, times=1, retry_after=5)
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        assert ws.cards_of("U_BOB") == []
        posts = len(slack.calls("chat.postMessage"))
        await later(ws, 4)
        assert len(slack.calls("chat.postMessage")) == posts, "no call before Retry-After"
        await later(ws, 1)
        assert len(ws.cards_of("U_BOB")) == 1


async def test_a_500_backs_off_and_a_processed_one_is_not_posted_twice(
        slack: FakeSlack) -> None:
    async with workspace(slack=slack) as ws:
        slack.fail("chat.postMessage", status=500, times=1, processed=True)
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        assert len(ws.cards_of("U_BOB")) == 1, "Slack posted it; only the answer was lost"
        assert (await ws.runtime.store.outbox_counts()).get("pending")
        posts = len(slack.calls("chat.postMessage"))
        await later(ws, 1)
        assert len(slack.calls("chat.postMessage")) == posts, "backing off"
        await later(ws, 1)
        assert (await ws.runtime.store.outbox_counts()).get("pending") is None
        assert len(ws.cards_of("U_BOB")) == 1, "found by its metadata, not posted again"
        assert len(slack.calls("chat.postMessage")) == posts, "no second post"
        # the card was recorded, so a decision updates it in place
        await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
        assert not has_buttons(ws.card("U_BOB", "PR-1"))
        assert (await events(ws, 1)).count("card_sent") == 1


# --------------------------------------------------------------------------- dead letters


async def test_dead_letter_after_max_attempts_and_the_flow_goes_on(
        slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="approvals.delivery")
    async with workspace(slack=slack) as ws:
        slack.fail("chat.postMessage", status=500, times=MAX_ATTEMPTS)
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        await drain(ws, step=300)
        assert (await ws.runtime.store.outbox_counts()).get("dead") == 1
        dead = [r for r in caplog.records if r.levelno == logging.ERROR and "dead" in r.message]
        assert len(dead) == 1 and f"after {MAX_ATTEMPTS} attempts" in dead[0].message
        assert "PR-1" in dead[0].message
        assert len([c for c in slack.calls("chat.postMessage")
                    if c.error == "injected"]) == MAX_ATTEMPTS
        assert ws.cards_of("U_BOB") == []

        await create(ws, "U_ERIN", "$6,000 Monitors for the new hires")
        await ws.click("U_BOB", ws.card("U_BOB", "PR-2"), ActionId.APPROVE)
        assert len(dms(ws, "U_ERIN", "approved", "PR-2")) == 1


async def test_a_permanent_error_is_dead_at_once_and_the_rest_continues(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="approvals.delivery")
    known = {u: {} for u in ("U_ALICE", "U_BOB", "U_CAROL", "U_FIN1")}
    text = policy_text().replace("[U_FIN1, U_FIN2]", "[U_FIN1, U_GHOST]")
    async with FakeSlack(users=known) as slack, workspace(text, slack=slack) as ws:
        await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
        await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
        await drain(ws)
        assert (await ws.runtime.store.outbox_counts()).get("dead", 0) >= 1
        dead = [r.message for r in caplog.records if r.levelno == logging.ERROR]
        assert any("user_not_found" in m and "card" in m for m in dead), dead
        assert not any("after 2 attempts" in m for m in dead), "no retry of a hopeless call"

        await ws.click("U_FIN1", ws.card("U_FIN1", "PR-1"), ActionId.APPROVE)
        assert len(dms(ws, "U_ALICE", "approved", "PR-1")) == 1
        assert not has_buttons(ws.card("U_FIN1", "PR-1"))


# --------------------------------------------------------------------------- idempotency


async def test_an_events_api_retry_is_handled_once() -> None:
    async with workspace() as ws:
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        before = len(ws.slack.calls("views.publish"))
        await ws.open_home("U_BOB", event_id="Ev0001")
        await ws.open_home("U_BOB", event_id="Ev0001", retry_num=1)
        await asyncio.gather(ws.open_home("U_BOB", event_id="Ev0001", retry_num=2),
                             ws.open_home("U_BOB", event_id="Ev0001", retry_num=3))
        published = [c for c in ws.slack.calls("views.publish")[before:]
                     if c.params.get("user_id") == "U_BOB"]
        assert len(published) == 1
        await ws.open_home("U_BOB", event_id="Ev0002")  # a new event is handled
        assert len([c for c in ws.slack.calls("views.publish")[before:]
                    if c.params.get("user_id") == "U_BOB"]) == 2


async def test_a_double_click_decides_once() -> None:
    async with workspace() as ws:
        await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
        card = ws.card("U_BOB", "PR-1")
        await ws.click("U_BOB", card, ActionId.APPROVE)
        await ws.click("U_BOB", card, ActionId.APPROVE)
        assert (await events(ws, 1)).count("approved") == 1
        assert len(ws.cards_of("U_FIN1")) == 1 and len(ws.cards_of("U_FIN2")) == 1


async def test_concurrent_clicks_decide_once_with_one_set_of_next_cards() -> None:
    async with workspace() as ws:
        await create(ws, "U_ALICE", "$150,000 Office fit-out for the new floor")
        bob = ws.card("U_BOB", "PR-1")
        await asyncio.gather(*(ws.click("U_BOB", bob, ActionId.APPROVE) for _ in range(3)))
        assert (await events(ws, 1)).count("approved") == 1
        fin1, fin2 = ws.card("U_FIN1", "PR-1"), ws.card("U_FIN2", "PR-1")
        await asyncio.gather(ws.click("U_FIN1", fin1, ActionId.APPROVE),
                             ws.click("U_FIN2", fin2, ActionId.APPROVE),
                             ws.click("U_FIN1", fin1, ActionId.APPROVE))
        entries = await audit(ws, 1)
        approved = [e for e in entries if e.event == "approved"]
        assert [e.data["step"] for e in approved] == [0, 1]
        assert len(ws.cards_of("U_DIR")) == 1
        assert sum(e.event == "click_refused" for e in entries) == 4  # 2 of Bob's, 2 of Finance
        winner = str(approved[1].actor)
        for user in ("U_FIN1", "U_FIN2"):
            card = ws.card(user, "PR-1")
            assert not has_buttons(card) and f"Approved* by <@{winner}>" in content(card)
        assert Counter(k for (_, _, k) in tally(ws, PEOPLE).elements()) == Counter(
            {"card": 4})
