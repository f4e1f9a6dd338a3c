"""Reminders and escalation, through the real app on a fake clock.

Timers are database rows; :meth:`Workspace.settle` runs what the background tick does (fire
due timers, deliver the outbox). Nothing sleeps: the :class:`~bot.clock.FakeClock` moves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.ids import ActionId
from bot.standin.web_api import FakeSlack
from bot.standin.workspace import Workspace, has_buttons
from tests.durable_support import (
    DAY,
    HOUR,
    audit,
    content,
    create,
    decidable,
    dms,
    events,
    later,
    policy_text,
    reminders,
    tally,
    timers,
    versions,
    workspace,
)


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


def assert_threaded_reminder(ws: Workspace, reminder: dict[str, object], user: str,
                             ref: str, amount: str, waited: str) -> None:
    card = ws.card(user, ref)
    assert reminder["thread_ts"] == card["ts"], "a reminder is a reply under the card"
    text = content(reminder)  # type: ignore[arg-type]
    assert ref in text and amount in text and waited in text, text
    assert decidable(card), "the card the reminder hangs under keeps its buttons"


# --------------------------------------------------------------------------- reminders


async def test_reminders_follow_the_cadence_4h_28h_52h(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    assert len(ws.cards_of("U_BOB")) == 1

    await later(ws, 4 * HOUR - 2)
    assert reminders(ws, "U_BOB") == [], "not before 4h"
    await later(ws, 2)
    first = reminders(ws, "U_BOB")
    assert len(first) == 1, "the first reminder at 4h, within two seconds"
    assert_threaded_reminder(ws, first[0], "U_BOB", "PR-1", "$5,000.00", "4 hours")

    await later(ws, 24 * HOUR - 2)
    assert len(reminders(ws, "U_BOB")) == 1, "the next one waits for the cadence"
    await later(ws, 2)
    second = reminders(ws, "U_BOB")
    assert len(second) == 2
    assert_threaded_reminder(ws, second[1], "U_BOB", "PR-1", "$5,000.00", "1 day 4 hours")

    # 48h: the step escalates to Bob's manager, who then waits too
    await later(ws, 20 * HOUR)
    assert len(ws.cards_of("U_CAROL")) == 1
    assert reminders(ws, "U_CAROL") == []
    await later(ws, 4 * HOUR)
    assert len(reminders(ws, "U_BOB")) == 3
    assert_threaded_reminder(ws, reminders(ws, "U_BOB")[2], "U_BOB", "PR-1", "$5,000.00",
                             "2 days 4 hours")
    carol = reminders(ws, "U_CAROL")
    assert len(carol) == 1, "reminders go to every assignee still waiting"
    assert_threaded_reminder(ws, carol[0], "U_CAROL", "PR-1", "$5,000.00", "2 days 4 hours")

    entries = [e for e in await audit(ws, 1) if e.event == "reminded"]
    assert [e.data["waited_seconds"] for e in entries] == [4 * HOUR, 28 * HOUR, 52 * HOUR]
    assert entries[-1].data["to"] == ["U_BOB", "U_CAROL"]
    assert all(n == 1 for (_, _, kind), n in tally(ws, ("U_BOB", "U_CAROL")).items()
               if kind == "card")


async def test_settling_twice_at_the_same_time_reminds_once(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await later(ws, 4 * HOUR)
    await ws.settle()
    await ws.settle()
    assert len(reminders(ws, "U_BOB")) == 1
    assert (await events(ws, 1)).count("reminded") == 1


async def test_durations_in_seconds_work_too() -> None:
    text = policy_text(reminders="{after: 3s, every: 5s}", escalation="{after: 10s, to: manager}")
    async with workspace(text) as ws:
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        seen: list[tuple[int, int, int]] = []
        for second in range(1, 15):
            await later(ws, 1)
            seen.append((second, len(reminders(ws, "U_BOB")), len(ws.cards_of("U_CAROL"))))
        assert [s for s, r, _ in seen if r > (seen[s - 2][1] if s > 1 else 0)] == [3, 8, 13]
        assert next(s for s, _, c in seen if c) == 10, "escalated at 10s"
        assert_threaded_reminder(ws, reminders(ws, "U_BOB")[0], "U_BOB", "PR-1", "$5,000.00",
                                 "3 seconds")


# --------------------------------------------------------------------------- escalation


async def test_escalation_to_the_manager_at_escalation_after(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    bob = ws.card("U_BOB", "PR-1")

    await later(ws, 48 * HOUR - 2)
    assert ws.cards_of("U_CAROL") == []
    await later(ws, 2)

    carol = ws.card("U_CAROL", "PR-1")
    assert decidable(carol), "the escalation target gets a card with the same buttons"
    assert "PR-1" in content(carol) and "$5,000.00" in content(carol)

    bob_now = ws.card("U_BOB", "PR-1")
    assert bob_now["ts"] == bob["ts"], "the original card is updated in place"
    assert "Escalated to <@U_CAROL>" in content(bob_now)
    assert decidable(bob_now), "the original approver may still decide"

    escalated = dms(ws, "U_ALICE", "escalated", "PR-1")
    assert len(escalated) == 1
    assert "<@U_CAROL>" in content(escalated[0])

    entry = next(e for e in await audit(ws, 1) if e.event == "escalated")
    assert entry.data["from"] == ["U_BOB"] and entry.data["to"] == ["U_CAROL"]

    await later(ws, 10 * DAY)  # escalation happens once per step
    assert (await events(ws, 1)).count("escalated") == 1
    assert len(ws.cards_of("U_CAROL")) == 1
    assert len(dms(ws, "U_ALICE", "escalated")) == 1
    assert ws.cards_of("U_DAVE") == []


async def test_whoever_decides_first_after_escalation_wins(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
    await later(ws, 48 * HOUR)
    bob, carol = ws.card("U_BOB", "PR-1"), ws.card("U_CAROL", "PR-1")

    await ws.click("U_CAROL", carol, ActionId.APPROVE)
    for user, before in (("U_BOB", bob), ("U_CAROL", carol)):
        now = ws.card(user, "PR-1")
        assert now["ts"] == before["ts"], "updated in place, not re-sent"
        assert not has_buttons(now)
        assert "Approved* by <@U_CAROL>" in content(now)
    assert len(ws.cards_of("U_CAROL")) == 1

    await ws.click("U_BOB", bob, ActionId.APPROVE)  # too late, on the card as it was
    entries = await audit(ws, 1)
    approved = [e for e in entries if e.event == "approved"]
    assert [(e.actor, e.data["step"]) for e in approved] == [("U_CAROL", 0)]
    assert any(e.event == "click_refused" and e.actor == "U_BOB" for e in entries)
    # the next level started once, with its own fresh clocks
    assert len(ws.cards_of("U_FIN1")) == 1 and len(ws.cards_of("U_FIN2")) == 1
    assert sorted((s, k) for _, s, k, _ in await timers(ws)) == [(1, "escalate"), (1, "remind")]


async def test_reject_after_escalation_updates_every_card(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await later(ws, 48 * HOUR)
    await ws.reject("U_BOB", ws.card("U_BOB", "PR-1"), "Use the old ones")
    for user in ("U_BOB", "U_CAROL"):
        card = ws.card(user, "PR-1")
        assert not has_buttons(card)
        assert "Rejected* by <@U_BOB>" in content(card)
    assert len(dms(ws, "U_ALICE", "rejected")) == 1
    assert await timers(ws) == []


async def test_escalation_to_listed_users() -> None:
    text = policy_text(escalation="{after: 2h, to: [U_X, U_Y]}")
    async with workspace(text) as ws:
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        await later(ws, 2 * HOUR)
        assert decidable(ws.card("U_X", "PR-1")) and decidable(ws.card("U_Y", "PR-1"))
        assert "Escalated to <@U_X> or <@U_Y>" in content(ws.card("U_BOB", "PR-1"))
        assert ws.cards_of("U_CAROL") == []

        await ws.click("U_Y", ws.card("U_Y", "PR-1"), ActionId.APPROVE)
        for user in ("U_BOB", "U_X", "U_Y"):
            assert not has_buttons(ws.card(user, "PR-1"))
            assert "Approved* by <@U_Y>" in content(ws.card(user, "PR-1"))
        assert len(dms(ws, "U_ALICE", "approved")) == 1


# --------------------------------------------------------------------------- decided before due


async def test_no_reminder_or_escalation_after_a_decision(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await later(ws, 3 * HOUR)
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    assert await timers(ws) == []
    await later(ws, 30 * DAY)
    assert reminders(ws, "U_BOB") == []
    assert ws.cards_of("U_CAROL") == []
    found = await events(ws, 1)
    assert "reminded" not in found and "escalated" not in found


async def test_a_timer_whose_step_was_decided_meanwhile_does_nothing(ws: Workspace) -> None:
    """A due timer row that a decision did not delete (a race) fires into a decided step."""
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await later(ws, 4 * HOUR)
    due = await ws.runtime.store.due_timers(ws.clock.now() + timedelta(hours=48))
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    for timer in due:  # claimed before the decision, fired after it
        await ws.runtime.store.fire_timer(timer, now=ws.clock.now() + timedelta(hours=48))
    await ws.settle()
    assert len(reminders(ws, "U_BOB")) == 1, "only the reminder from before the decision"
    assert ws.cards_of("U_CAROL") == []
    assert (await events(ws, 1)).count("escalated") == 0


async def test_reminders_stop_when_the_request_is_cancelled(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await later(ws, 5 * HOUR)
    assert len(reminders(ws, "U_BOB")) == 1
    await ws.command("U_ALICE", "cancel PR-1")
    assert await timers(ws) == []
    await later(ws, 30 * DAY)
    assert len(reminders(ws, "U_BOB")) == 1
    assert ws.cards_of("U_CAROL") == []
    card = ws.card("U_BOB", "PR-1")
    assert not has_buttons(card) and "Cancelled" in content(card)
    assert len(versions(ws, card)) == 2, "posted, then updated once for the cancellation"


# --------------------------------------------------------------------------- restarts


async def test_a_timer_overdue_across_a_restart_fires_on_the_first_settle(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}"
    clock = FakeClock()
    async with FakeSlack() as slack:
        first = Workspace(policy_text=policy_text(), database_url=url, slack=slack, clock=clock)
        async with first as ws:
            await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
            await later(ws, HOUR)
        clock.advance(49 * HOUR)  # the process is down while both timers fall due
        async with Workspace(policy_text=policy_text(), database_url=url, slack=slack,
                             clock=clock) as ws:
            assert reminders(ws, "U_BOB") == [] and ws.cards_of("U_CAROL") == []
            await ws.settle()
            late = reminders(ws, "U_BOB")
            assert len(late) == 1, "one reminder for the missed ones, not one per miss"
            assert_threaded_reminder(ws, late[0], "U_BOB", "PR-1", "$5,000.00", "2 days 2 hours")
            assert len(ws.cards_of("U_CAROL")) == 1
            assert "Escalated to <@U_CAROL>" in content(ws.card("U_BOB", "PR-1"))
            assert len(ws.cards_of("U_BOB")) == 1, "the restart re-sent nothing"
            # the cadence carries on from the original start: next at 52h
            await later(ws, 2 * HOUR - 2)
            assert len(reminders(ws, "U_BOB")) == 1
            await later(ws, 2)
            assert len(reminders(ws, "U_BOB")) == 2


# --------------------------------------------------------------------------- separation of duties


async def test_escalation_skips_the_requester_and_earlier_deciders() -> None:
    text = policy_text(escalation="{after: 48h, to: [U_ALICE, U_BOB, U_X]}")
    async with workspace(text) as ws:
        await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
        await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
        await later(ws, 48 * HOUR)  # the Finance step escalates
        assert decidable(ws.card("U_X", "PR-1"))
        assert ws.cards_of("U_ALICE") == [], "the requester never gets a card"
        assert len(ws.cards_of("U_BOB")) == 1, "Bob decided the Manager level"
        entry = next(e for e in await audit(ws, 1) if e.event == "escalated")
        assert entry.data["to"] == ["U_X"]


async def test_escalation_to_a_manager_who_decided_earlier_goes_up_the_directory() -> None:
    text = policy_text().replace("U_FIN1: {manager: U_CFO}", "U_FIN1: {manager: U_BOB}")
    async with workspace(text) as ws:
        await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
        await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
        await later(ws, 48 * HOUR)
        entry = next(e for e in await audit(ws, 1) if e.event == "escalated")
        assert entry.data["to"] == ["U_CAROL", "U_CFO"]
        assert decidable(ws.card("U_CAROL", "PR-1")) and decidable(ws.card("U_CFO", "PR-1"))
        assert len(ws.cards_of("U_BOB")) == 1


async def test_escalation_with_nobody_eligible_changes_nothing_visible() -> None:
    text = policy_text(escalation="{after: 48h, to: [U_ALICE]}")
    async with workspace(text) as ws:
        await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
        bob = ws.card("U_BOB", "PR-1")
        await later(ws, 48 * HOUR)
        entry = next(e for e in await audit(ws, 1) if e.event == "escalated")
        assert entry.data["to"] == [] and "nobody eligible" in entry.data["note"]
        assert dms(ws, "U_ALICE", "escalated") == []
        assert len(versions(ws, bob)) == 1, "Bob's card was not touched"
        assert ws.cards_of("U_ALICE") == []
        await later(ws, 10 * DAY)
        assert (await events(ws, 1)).count("escalated") == 1

