"""Delegation (out of office) through the real app: ``/purchase delegate @user until DATE``
and ``/purchase delegate off``, new and pending steps, chains, loops, the window's end and
separation of duties.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bot.ids import ActionId, StepValue
from bot.standin.workspace import Workspace, has_buttons
from tests.durable_support import (
    HOUR,
    ack_text,
    audit,
    card_posts,
    content,
    create,
    decidable,
    later,
    versions,
    workspace,
)


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


async def delegate(ws: Workspace, user: str, to: str, until: str = "2026-12-24") -> str:
    return ack_text(await ws.command(user, f"delegate <@{to}|{to.lower()}> until {until}"))


async def delegations_in_audit(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    return [(e.actor, e.data) async for e in ws.runtime.store.audit_entries()
            if e.event == "delegated" and e.request is None]


# --------------------------------------------------------------------------- new steps


async def test_a_new_step_goes_to_the_delegate(ws: Workspace) -> None:
    answer = await delegate(ws, "U_BOB", "U_CAROL")
    assert "2026-12-24" in answer and "<@U_CAROL>" in answer
    assert await delegations_in_audit(ws) == [("U_BOB", {"to": "U_CAROL",
                                                         "until": "2026-12-25T00:00:00+00:00"})]

    ack = ack_text(await ws.command("U_ALICE", "$5,000 Laptops for the new hires"))
    assert "It waits for <@U_CAROL>" in ack, "the acknowledgement names who decides"
    assert ws.cards_of("U_BOB") == [], "the away approver gets no card"
    carol = ws.card("U_CAROL", "PR-1")
    assert decidable(carol)
    assert "behalf" in content(carol) and "<@U_BOB>" in content(carol)

    await ws.click("U_CAROL", carol, ActionId.APPROVE)
    card = ws.card("U_CAROL", "PR-1")
    assert not has_buttons(card)
    assert "Approved* by <@U_CAROL>, on behalf of <@U_BOB>" in content(card)
    approved = next(e for e in await audit(ws, 1) if e.event == "approved")
    assert approved.actor == "U_CAROL" and approved.data["on_behalf_of"] == "U_BOB"


# --------------------------------------------------------------------------- pending steps


async def test_pending_steps_are_handed_over_when_the_delegation_is_set(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    bob = ws.card("U_BOB", "PR-1")
    answer = await delegate(ws, "U_BOB", "U_CAROL")
    assert "1 pending step" in answer

    bob_now = ws.card("U_BOB", "PR-1")
    assert bob_now["ts"] == bob["ts"] and not has_buttons(bob_now)
    assert "Delegated to <@U_CAROL>" in content(bob_now)
    carol = ws.card("U_CAROL", "PR-1")
    assert decidable(carol) and "<@U_BOB>" in content(carol)
    entry = next(e for e in await audit(ws, 1) if e.event == "delegated")
    assert (entry.data["from"], entry.data["to"], entry.data["on_behalf_of"]) == (
        "U_BOB", "U_CAROL", "U_BOB")

    await ws.click("U_BOB", bob, ActionId.APPROVE)  # his old buttons no longer decide
    assert "approved" not in [e.event for e in await audit(ws, 1)]
    await ws.click("U_CAROL", carol, ActionId.APPROVE)
    approved = next(e for e in await audit(ws, 1) if e.event == "approved")
    assert approved.data["on_behalf_of"] == "U_BOB"
    for user in ("U_BOB", "U_CAROL"):
        assert "on behalf of <@U_BOB>" in content(ws.card(user, "PR-1"))
    assert card_posts(ws)[("U_BOB", "PR-1")] == 1 and card_posts(ws)[("U_CAROL", "PR-1")] == 1


async def test_a_delegation_with_nothing_to_hand_over_says_so(ws: Workspace) -> None:
    answer = await delegate(ws, "U_BOB", "U_CAROL")
    assert "pending step" not in answer


# --------------------------------------------------------------------------- chains and loops


async def test_chains_resolve_to_the_end(ws: Workspace) -> None:
    await delegate(ws, "U_BOB", "U_ERIN")
    await delegate(ws, "U_ERIN", "U_FRANK")
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    assert ws.cards_of("U_BOB") == [] and ws.cards_of("U_ERIN") == []
    await ws.click("U_FRANK", ws.card("U_FRANK", "PR-1"), ActionId.APPROVE)
    approved = next(e for e in await audit(ws, 1) if e.event == "approved")
    assert approved.actor == "U_FRANK" and approved.data["on_behalf_of"] == "U_BOB"


async def test_a_pending_step_follows_a_chain_made_later(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await delegate(ws, "U_BOB", "U_ERIN")
    assert decidable(ws.card("U_ERIN", "PR-1"))
    assert "1 pending step" in await delegate(ws, "U_ERIN", "U_FRANK")
    assert not has_buttons(ws.card("U_ERIN", "PR-1"))
    await ws.click("U_FRANK", ws.card("U_FRANK", "PR-1"), ActionId.APPROVE)
    approved = next(e for e in await audit(ws, 1) if e.event == "approved")
    assert approved.data["on_behalf_of"] == "U_BOB", "still on behalf of the original approver"


async def test_loops_are_refused_when_set(ws: Workspace) -> None:
    await delegate(ws, "U_BOB", "U_CAROL")
    await delegate(ws, "U_CAROL", "U_DAVE")
    answer = await delegate(ws, "U_DAVE", "U_BOB")
    assert "loop" in answer
    answer = await delegate(ws, "U_CAROL", "U_BOB")
    assert "loop" in answer
    assert [a for a, _ in await delegations_in_audit(ws)] == ["U_BOB", "U_CAROL"]
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    assert decidable(ws.card("U_DAVE", "PR-1")), "the chain still works"


async def test_delegating_to_oneself_or_into_the_past_is_refused(ws: Workspace) -> None:
    assert "yourself" in await delegate(ws, "U_BOB", "U_BOB")
    assert "future" in await delegate(ws, "U_BOB", "U_CAROL", until="2026-11-24")
    assert "not a date" in await delegate(ws, "U_BOB", "U_CAROL", until="tomorrow")
    assert await delegations_in_audit(ws) == []
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    assert decidable(ws.card("U_BOB", "PR-1"))


# --------------------------------------------------------------------------- the end of it


async def test_delegate_off_hands_pending_steps_back(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    bob = ws.card("U_BOB", "PR-1")
    await delegate(ws, "U_BOB", "U_CAROL")
    carol = ws.card("U_CAROL", "PR-1")

    answer = ack_text(await ws.command("U_BOB", "delegate off"))
    assert "1 pending step" in answer
    bob_now = ws.card("U_BOB", "PR-1")
    assert bob_now["ts"] == bob["ts"] and decidable(bob_now), "his old card comes alive again"
    assert not has_buttons(ws.card("U_CAROL", "PR-1"))
    assert card_posts(ws) == {("U_BOB", "PR-1"): 1, ("U_CAROL", "PR-1"): 1}, \
        "nothing posted twice"

    await ws.click("U_CAROL", carol, ActionId.APPROVE)  # her stale buttons decide nothing
    await ws.click("U_BOB", bob_now, ActionId.APPROVE)
    approved = [e for e in await audit(ws, 1) if e.event == "approved"]
    assert [(e.actor, e.data.get("on_behalf_of")) for e in approved] == [("U_BOB", None)]
    assert "Approved* by <@U_BOB>" in content(ws.card("U_CAROL", "PR-1"))
    shown = [decidable(v) for v in versions(ws, bob)]
    assert shown[0] and not shown[1] and shown[-2] and not shown[-1], \
        "posted, handed over, handed back, decided: all in one message"

    assert "no delegation" in ack_text(await ws.command("U_BOB", "delegate off"))


async def test_new_steps_go_to_the_delegator_again_when_the_window_ends(
        ws: Workspace) -> None:
    await delegate(ws, "U_BOB", "U_CAROL", until="2026-11-26")  # to 2026-11-27 00:00 UTC
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    assert decidable(ws.card("U_CAROL", "PR-1"))

    end = datetime(2026, 11, 27, tzinfo=UTC)
    await later(ws, (end - ws.clock.now()).total_seconds() - 1)
    await create(ws, "U_ALICE", "$6,000 Monitors for the new hires")
    assert decidable(ws.card("U_CAROL", "PR-2")), "a second before the end: still Carol"

    await later(ws, 1)
    await create(ws, "U_ALICE", "$7,000 Chairs for the new hires")
    assert decidable(ws.card("U_BOB", "PR-3"))
    assert not any("PR-3" in content(m) for m in ws.cards_of("U_CAROL"))


async def test_when_the_window_ends_the_steps_come_back_by_themselves(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await delegate(ws, "U_BOB", "U_CAROL", until="2026-11-26")
    await later(ws, 40 * HOUR)  # past the window (before escalation): the tick hands it back
    assert decidable(ws.card("U_BOB", "PR-1"))
    assert not has_buttons(ws.card("U_CAROL", "PR-1"))
    ended = [e for e in [entry async for entry in ws.runtime.store.audit_entries()]
             if e.event == "delegated" and e.data.get("ended")]
    assert [(e.actor, e.data["from"]) for e in ended] == [("system", "U_BOB")]
    answer = ack_text(await ws.command("U_BOB", "delegate off"))
    assert "no delegation to end" in answer


# --------------------------------------------------------------------------- separation of duties


async def test_a_delegate_who_is_the_requester_is_skipped(ws: Workspace) -> None:
    await delegate(ws, "U_BOB", "U_ALICE")
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    assert ws.cards_of("U_ALICE") == []
    assert decidable(ws.card("U_BOB", "PR-1")), "the step stays with Bob"


async def test_a_delegate_who_decided_an_earlier_level_is_skipped(ws: Workspace) -> None:
    await delegate(ws, "U_FIN1", "U_BOB")
    await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    assert len(ws.cards_of("U_BOB")) == 1, "Bob decided the Manager level: no Finance card"
    assert decidable(ws.card("U_FIN1", "PR-1")) and decidable(ws.card("U_FIN2", "PR-1"))


async def test_a_pending_step_is_not_handed_to_an_earlier_decider(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    fin1 = ws.card("U_FIN1", "PR-1")
    answer = await delegate(ws, "U_FIN1", "U_BOB")
    assert "pending step" not in answer, "nothing was handed over"
    assert decidable(ws.card("U_FIN1", "PR-1"))
    assert len(versions(ws, fin1)) == 1
    assert len(ws.cards_of("U_BOB")) == 1
    await ws.click_value("U_BOB", ActionId.APPROVE, StepValue(request_id=1, step=1))
    assert "already decided" in " ".join(ws.answers()) or \
        "not an approver" in " ".join(ws.answers())
    assert [e.actor for e in await audit(ws, 1) if e.event == "approved"] == ["U_BOB"]
