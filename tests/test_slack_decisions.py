"""Decisions through the real app: the seed flows, rejections, refused and racing clicks,
Slack faults and the audit trail they leave.

People click the buttons of the cards the stand-in Slack received (``Workspace.click``),
forge button values (``click_value``) and race each other (``asyncio.gather`` of signed
requests); time moves only on the :class:`~bot.clock.FakeClock`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot.ids import ActionId, CallbackId, RejectMetadata, StepValue
from bot.standin.workspace import Workspace, button_value, has_buttons
from flows.model import RequestStatus, StepStatus
from tests.slack_support import (
    ack_text,
    audit,
    block_text,
    card_sends,
    click_in_home,
    click_keeping_url,
    create,
    dm_content,
    errors_of,
    events_of,
    failed_calls,
    is_plain_ack,
    non_card_dms,
    refusals,
    workspace,
)

APPROVERS = ("U_BOB", "U_CAROL", "U_FIN1", "U_FIN2", "U_DIR")


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


def card_counts(ws: Workspace) -> dict[str, int]:
    return {user: len(ws.cards_of(user)) for user in APPROVERS}


def outcome_dms(ws: Workspace, user: str = "U_ALICE") -> list[str]:
    return [block_text(m) for m in non_card_dms(ws, user)]


async def approve(ws: Workspace, user: str, ref: str = "PR-1") -> None:
    await ws.click(user, ws.card(user, ref), ActionId.APPROVE)


def assert_decided_in_place(ws: Workspace, user: str, ref: str, says: str) -> None:
    """``user``'s card for ``ref`` was updated (not re-sent): no buttons, the outcome."""
    request_id = int(ref.removeprefix("PR-"))
    [card] = [c for c in ws.cards_of(user)
              if ((c.get("metadata") or {}).get("event_payload") or {}).get("request")
              == request_id]
    versions = ws.slack.versions(card["channel"], card["ts"])
    assert len(versions) >= 2, f"{user}'s card for {ref} was never updated"
    assert has_buttons(versions[0]) and not has_buttons(card)
    assert says in block_text(card), block_text(card)


# --------------------------------------------------------------------------- the seed flows


async def test_9000_dollars_needs_the_manager_only(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 0, "U_FIN2": 0, "U_DIR": 0}
    card = ws.card("U_BOB", "PR-1")
    assert has_buttons(card) and "$9,000.00" in block_text(card)

    await approve(ws, "U_BOB")

    assert_decided_in_place(ws, "U_BOB", "PR-1", "Approved* by <@U_BOB>")
    assert card_counts(ws)["U_FIN1"] == 0
    [told] = outcome_dms(ws)
    assert "PR-1" in told and "approved" in told and "<@U_BOB>" in told
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.APPROVED
    assert await events_of(ws, 1) == ["submitted", "card_sent", "approved"]


async def test_25000_euros_goes_to_the_manager_then_either_finance_approver(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 0, "U_FIN2": 0, "U_DIR": 0}

    await approve(ws, "U_BOB")
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 1, "U_FIN2": 1, "U_DIR": 0}
    for finance in ("U_FIN1", "U_FIN2"):
        card = ws.card(finance, "PR-1")
        assert has_buttons(card)
        assert "Finance, step 2 of 2" in block_text(card)
        assert "Manager: approved by <@U_BOB>" in block_text(card)
    assert outcome_dms(ws) == []
    updates_before = len(ws.slack.calls("chat.update"))

    await approve(ws, "U_FIN2")

    # both Finance cards are updated in place, naming who decided, and nothing new is sent
    assert len(ws.slack.calls("chat.update")) == updates_before + 2
    for finance in ("U_FIN1", "U_FIN2"):
        assert_decided_in_place(ws, finance, "PR-1", "Approved* by <@U_FIN2>")
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 1, "U_FIN2": 1, "U_DIR": 0}
    [told] = outcome_dms(ws)
    assert "€25,000.00" in told and "approved" in told and "<@U_FIN2>" in told
    assert await events_of(ws, 1) == ["submitted", "card_sent", "approved", "card_sent",
                                      "card_sent", "approved"]


async def test_120000_dollars_takes_three_levels(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$120,000 Servers for the new region")

    await approve(ws, "U_BOB")
    await approve(ws, "U_FIN1")
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 1, "U_FIN2": 1, "U_DIR": 1}
    director = ws.card("U_DIR", "PR-1")
    assert "Director, step 3 of 3" in block_text(director)
    assert "$120,000.00" in block_text(director)
    assert outcome_dms(ws) == []

    await approve(ws, "U_DIR")

    assert_decided_in_place(ws, "U_DIR", "PR-1", "Approved* by <@U_DIR>")
    [told] = outcome_dms(ws)
    assert "$120,000.00" in told and "approved" in told and "<@U_DIR>" in told
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.APPROVED
    assert [s.decided_by for s in request.steps] == ["U_BOB", "U_FIN1", "U_DIR"]


async def test_small_requests_are_approved_automatically_with_no_card(ws: Workspace) -> None:
    text = "$120 Replacement keyboard because the old one broke"
    answer = ack_text(await ws.command("U_ALICE", text))

    assert "PR-1" in answer and "approved automatically" in answer
    assert all(ws.cards_of(user) == [] for user in APPROVERS)
    assert card_sends(ws, "U_BOB") == []
    [told] = outcome_dms(ws)
    assert "PR-1" in told and "approved automatically" in told
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.APPROVED
    assert request.auto_approved
    assert await events_of(ws, 1) == ["submitted", "auto_approved"]
    # just at the threshold is not under it
    await create(ws, "U_ALICE", "$500 Conference ticket")
    assert len(ws.cards_of("U_BOB")) == 1


# --------------------------------------------------------------------------- rejection


async def test_reject_opens_a_modal_that_requires_a_reason(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    card = ws.card("U_BOB", "PR-1")

    await ws.click("U_BOB", card, ActionId.REJECT)

    modal = ws.slack.last_view("U_BOB")
    assert modal is not None and modal["callback_id"] == CallbackId.REJECT_REASON.value
    [reason] = [b for b in modal["blocks"] if b["type"] == "input"]
    assert reason["block_id"] == "reason" and reason["element"]["action_id"] == "reason"
    assert not reason.get("optional", False)
    assert "PR-1" in block_text(modal) or "PR-1" in str(modal.get("title"))
    metadata = str(modal["private_metadata"])
    for empty in ("", "   \n  ", None):
        response = await ws.submit("U_BOB", CallbackId.REJECT_REASON,
                                   texts={"reason": empty}, private_metadata=metadata)
        assert "reason" in errors_of(response)
    # nothing was decided: the card still has its buttons, the requester heard nothing
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.PENDING
    assert has_buttons(ws.card("U_BOB", "PR-1"))
    assert outcome_dms(ws) == []
    assert "rejected" not in await events_of(ws, 1)


async def test_a_rejection_records_the_reason_updates_the_cards_and_tells_the_requester(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await approve(ws, "U_BOB")

    response = await ws.reject("U_FIN1", ws.card("U_FIN1", "PR-1"), "Over budget for Q4")

    assert is_plain_ack(response)
    for finance in ("U_FIN1", "U_FIN2"):
        assert_decided_in_place(ws, finance, "PR-1", "Rejected* by <@U_FIN1>")
        assert "Over budget for Q4" in block_text(ws.card(finance, "PR-1"))
    [told] = outcome_dms(ws)
    assert "rejected" in told and "<@U_FIN1>" in told and "Over budget for Q4" in told
    assert "Finance" in told
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.REJECTED
    trail = await ws.runtime.store.audit_for(1)
    [rejected] = [e for e in trail if e.event == "rejected"]
    assert rejected.actor == "U_FIN1" and rejected.data["reason"] == "Over budget for Q4"
    assert card_counts(ws)["U_DIR"] == 0


async def test_a_rejection_modal_submitted_after_the_step_was_decided_is_refused(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await approve(ws, "U_BOB")
    await ws.click("U_FIN1", ws.card("U_FIN1", "PR-1"), ActionId.REJECT)
    modal = ws.slack.last_view("U_FIN1")
    assert modal is not None
    await approve(ws, "U_FIN2")  # while FIN1 is still typing

    response = await ws.submit("U_FIN1", CallbackId.REJECT_REASON,
                               texts={"reason": "Too expensive"},
                               private_metadata=str(modal["private_metadata"]))

    assert "already approved" in errors_of(response)["reason"]
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.APPROVED
    assert [e.event for e in await ws.runtime.store.audit_for(1)].count("rejected") == 0


async def test_a_forged_rejection_modal_is_refused(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    metadata = RejectMetadata(request_id=1, step=0).encode()

    for user, raw in [("U_EVE", metadata), ("U_ALICE", metadata), ("U_BOB", "{garbage")]:
        response = await ws.submit(user, CallbackId.REJECT_REASON, texts={"reason": "No"},
                                   private_metadata=raw)
        assert "reason" in errors_of(response)

    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.PENDING
    assert [(e.actor, e.data["code"]) for e in await refusals(ws)] == [
        ("U_EVE", "not_assignee"), ("U_ALICE", "separation_of_duties")]


# --------------------------------------------------------------------------- refused clicks


async def test_a_stranger_cannot_approve_or_reject_and_is_told_why(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    card = ws.card("U_BOB", "PR-1")
    updates = len(ws.slack.calls("chat.update"))

    for action in (ActionId.APPROVE, ActionId.REJECT):
        response, url = await click_keeping_url(ws, "U_EVE", card, action)
        assert response.status_code == 200
        [answer] = ws.slack.responses(url)
        assert answer["response_type"] == "ephemeral"
        assert not answer.get("replace_original")
        assert "not an approver" in answer["text"] and "PR-1" in answer["text"]

    assert ws.slack.calls("views.open") == []  # no rejection form for a stranger
    assert len(ws.slack.calls("chat.update")) == updates
    assert has_buttons(ws.card("U_BOB", "PR-1"))
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.PENDING
    assert [(e.request, e.actor, e.data["action"], e.data["code"])
            for e in await refusals(ws)] == [
        ("PR-1", "U_EVE", "approve", "not_assignee"),
        ("PR-1", "U_EVE", "reject", "not_assignee")]


async def test_the_requester_cannot_decide_their_own_request(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    value = StepValue(request_id=1, step=0)

    for action in (ActionId.APPROVE, ActionId.REJECT):
        await ws.click_value("U_ALICE", action, value)
        [answer] = ws.answers()
        assert "you cannot decide it" in answer

    request = await ws.runtime.store.get(1)
    assert request is not None and request.steps[0].status is StepStatus.PENDING
    assert [(e.actor, e.data["code"]) for e in await refusals(ws)] == [
        ("U_ALICE", "separation_of_duties"), ("U_ALICE", "separation_of_duties")]


async def test_separation_of_duties_holds_when_a_policy_lists_the_requester(
        ws: Workspace) -> None:
    """U_FIN1 requests; the Finance level leaves them out, so only U_FIN2 gets a card and
    U_FIN1's forged click on the step is refused."""
    policy = ws.policy_text.replace("U_ALICE: {manager: U_BOB}",
                                    "U_ALICE: {manager: U_BOB}\n  U_FIN1: {manager: U_BOB}")
    async with workspace(policy) as own:
        await create(own, "U_FIN1", "€25,000 Finance tooling licences")
        await approve(own, "U_BOB")
        assert own.cards_of("U_FIN1") == [] and len(own.cards_of("U_FIN2")) == 1

        await own.click_value("U_FIN1", ActionId.APPROVE, StepValue(request_id=1, step=1))

        assert "you cannot decide it" in own.answers()[0]
        request = await own.runtime.store.get(1)
        assert request is not None and request.steps[1].status is StepStatus.PENDING


async def test_a_click_on_a_step_already_decided_changes_nothing(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    old_card = ws.card("U_BOB", "PR-1")  # as first posted, with its buttons
    await ws.click("U_BOB", old_card, ActionId.APPROVE)
    await approve(ws, "U_FIN1")
    fin2_card = ws.cards_of("U_FIN2")[0]
    calls = len(ws.slack.calls())
    before = await audit(ws)

    # a second look at the old card (Slack can show a stale copy) and the other approver
    await ws.click("U_BOB", ws.slack.versions(old_card["channel"], old_card["ts"])[0],
                   ActionId.APPROVE)
    assert "already approved by U_BOB" in ws.answers()[0]
    fin2_value = button_value(ws.slack.versions(fin2_card["channel"], fin2_card["ts"])[0],
                              "approve")
    await ws.click_value("U_FIN2", ActionId.APPROVE, fin2_value, channel=fin2_card["channel"],
                         ts=fin2_card["ts"])
    assert "already approved by U_FIN1" in ws.answers()[0]
    await ws.click_value("U_FIN2", ActionId.REJECT, fin2_value, channel=fin2_card["channel"],
                         ts=fin2_card["ts"])
    assert "already approved by U_FIN1" in ws.answers()[0]

    after = await audit(ws)
    assert [e.event for e in after[len(before):]] == ["click_refused"] * 3
    assert {e.data["code"] for e in after[len(before):]} == {"step_not_pending"}
    assert [c.method for c in ws.slack.calls()[calls:]
            if c.method in {"chat.postMessage", "chat.update", "views.open"}] == []
    assert [e.event for e in after].count("approved") == 2


FORGED_VALUES = ["garbage", "", "{}", '{"r":1}', '{"r":1,"s":-1}', '{"r":"1","s":0}',
                 '{"r":1,"s":0,"x":1}', "[1,0]", "null", "x" * 5000]


async def test_a_forged_button_value_is_refused_and_audited(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")

    for value in FORGED_VALUES:
        for action in (ActionId.APPROVE, ActionId.REJECT):
            response = await ws.click_value("U_BOB", action, value)
            assert response.status_code == 200
            [answer] = ws.answers()
            assert "out of date" in answer, (value, action)

    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.PENDING
    assert has_buttons(ws.card("U_BOB", "PR-1"))
    refused = await refusals(ws)
    assert [(e.request, e.actor, e.data["action"], e.data["code"]) for e in refused] == [
        (None, "U_BOB", "approve", "unknown_step"),
        (None, "U_BOB", "reject", "unknown_step")] * len(FORGED_VALUES)
    assert all(len(str(e.data["value"])) <= 200 for e in refused)
    assert ws.slack.calls("views.open") == []
    assert await ws.runtime.store.verify_audit() is None


async def test_a_card_from_before_a_restart_names_a_request_that_does_not_exist(
        ws: Workspace) -> None:
    value = StepValue(request_id=99, step=0)

    await ws.click_value("U_BOB", ActionId.APPROVE, value)
    assert "out of date" in ws.answers()[0]
    await ws.click_value("U_BOB", ActionId.REJECT, value)
    assert "PR-99" in ws.answers()[0]
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    await ws.click_value("U_BOB", ActionId.APPROVE, StepValue(request_id=1, step=5))
    assert "no such approval step" in ws.answers()[0]

    assert [(e.actor, e.data["action"], e.data["code"]) for e in await refusals(ws)] == [
        ("U_BOB", "approve", "unknown_step"), ("U_BOB", "reject", "step_not_pending"),
        ("U_BOB", "approve", "step_not_pending")]
    assert ws.slack.calls("views.open") == []
    assert failed_calls(ws) == []


async def test_a_refusal_without_a_response_url_goes_by_dm(ws: Workspace) -> None:
    from bot.standin import signing

    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    card = ws.card("U_BOB", "PR-1")
    value = button_value(card, "approve")
    response = await ws.send(signing.block_actions(
        ws.secret, user_id="U_EVE", action_id="approve", value=value, message=card))
    await ws.settle()

    assert response.status_code == 200
    assert any("not an approver" in text for text in dm_content(ws, "U_EVE"))
    assert [e.actor for e in await refusals(ws)] == ["U_EVE"]


# --------------------------------------------------------------------------- races


async def test_two_assignees_approving_at_once_record_one_decision(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$120,000 Servers for the new region")
    await approve(ws, "U_BOB")
    fin1, fin2 = ws.card("U_FIN1", "PR-1"), ws.card("U_FIN2", "PR-1")

    (_, url1), (_, url2) = await asyncio.gather(
        click_keeping_url(ws, "U_FIN1", fin1, ActionId.APPROVE),
        click_keeping_url(ws, "U_FIN2", fin2, ActionId.APPROVE))
    await ws.settle()

    request = await ws.runtime.store.get(1)
    assert request is not None and request.steps[1].status is StepStatus.APPROVED
    winner = request.steps[1].decided_by
    loser = "U_FIN2" if winner == "U_FIN1" else "U_FIN1"
    trail = await ws.runtime.store.audit_for(1)
    assert [e.actor for e in trail if e.event == "approved"] == ["U_BOB", winner]
    assert [(e.actor, e.data["code"]) for e in trail if e.event == "click_refused"] == [
        (loser, "step_not_pending")]
    loser_answers = ws.slack.responses(url2 if loser == "U_FIN2" else url1)
    assert len(loser_answers) == 1 and "already approved" in loser_answers[0]["text"]
    assert ws.slack.responses(url1 if loser == "U_FIN2" else url2) == []
    assert len(card_sends(ws, "U_DIR")) == 1 and len(ws.cards_of("U_DIR")) == 1
    for finance in ("U_FIN1", "U_FIN2"):
        assert not has_buttons(ws.card(finance, "PR-1"))


async def test_a_double_click_records_one_decision(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    card = ws.card("U_BOB", "PR-1")

    await asyncio.gather(ws.click("U_BOB", card, ActionId.APPROVE),
                         ws.click("U_BOB", card, ActionId.APPROVE),
                         ws.click("U_BOB", card, ActionId.APPROVE))
    await ws.settle()

    events = await events_of(ws, 1)
    assert events.count("approved") == 1 and events.count("click_refused") == 2
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 1, "U_FIN2": 1, "U_DIR": 0}
    assert len(card_sends(ws, "U_FIN1")) == len(card_sends(ws, "U_FIN2")) == 1


async def test_an_approval_racing_a_rejection_records_one_decision(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await approve(ws, "U_BOB")
    await ws.click("U_FIN2", ws.card("U_FIN2", "PR-1"), ActionId.REJECT)
    modal = ws.slack.last_view("U_FIN2")
    assert modal is not None

    rejected, _ = await asyncio.gather(
        ws.submit("U_FIN2", CallbackId.REJECT_REASON, texts={"reason": "Not now"},
                  private_metadata=str(modal["private_metadata"])),
        approve(ws, "U_FIN1"))
    await ws.settle()

    request = await ws.runtime.store.get(1)
    assert request is not None and request.status in {RequestStatus.APPROVED,
                                                      RequestStatus.REJECTED}
    events = await events_of(ws, 1)
    assert events.count("approved") + events.count("rejected") == 2  # Manager + one Finance
    assert len(outcome_dms(ws)) == 1
    if request.status is RequestStatus.APPROVED:
        assert "reason" in errors_of(rejected)
    else:
        assert is_plain_ack(rejected)


# --------------------------------------------------------------------------- timers


async def test_reminders_and_escalation_reach_slack_and_the_escalation_target_decides(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    card = ws.card("U_BOB", "PR-1")

    ws.clock.advance(timedelta(hours=4, seconds=1))
    await ws.settle()
    [reminder] = [m for m in ws.slack.messages_to("U_BOB") if m.get("thread_ts") == card["ts"]
                  and m["ts"] != card["ts"]]
    assert "PR-1" in block_text(reminder) and "4 hours" in block_text(reminder)

    ws.clock.advance(timedelta(hours=44))
    await ws.settle()
    [escalated] = ws.cards_of("U_CAROL")
    assert has_buttons(escalated)
    assert "Escalated to <@U_CAROL>" in block_text(ws.card("U_BOB", "PR-1"))
    assert has_buttons(ws.card("U_BOB", "PR-1"))  # Bob may still decide
    assert any("escalated" in text for text in outcome_dms(ws))

    await approve(ws, "U_CAROL")

    for user in ("U_BOB", "U_CAROL"):
        assert_decided_in_place(ws, user, "PR-1", "Approved* by <@U_CAROL>")
    assert len(ws.cards_of("U_FIN1")) == len(ws.cards_of("U_FIN2")) == 1
    events = await events_of(ws, 1)
    assert events[:6] == ["submitted", "card_sent", "reminded", "reminded", "escalated",
                          "card_sent"]
    assert events.count("approved") == 1


# --------------------------------------------------------------------------- Slack faults


async def settle_until_quiet(ws: Workspace, *, step: float = 31, rounds: int = 60) -> None:
    """Tick with the clock moved on until the outbox holds nothing pending."""
    for _ in range(rounds):
        await ws.settle()
        counts = await ws.runtime.store.outbox_counts()
        if not counts.get("pending"):
            return
        ws.clock.advance(step)
    raise AssertionError(f"the outbox never emptied: {counts}")


async def test_cards_arrive_once_after_429_with_retry_after(ws: Workspace) -> None:
    ws.slack.fail("chat.postMessage", status=429, times=3, retry_after=30)

    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    assert ws.cards_of("U_BOB") == []
    ws.clock.advance(10)  # before Retry-After: the worker waits
    await ws.settle()
    assert ws.cards_of("U_BOB") == []
    assert len(ws.slack.calls("chat.postMessage")) == 1
    ws.clock.advance(21)
    await ws.settle()  # the second attempt is refused again
    assert ws.cards_of("U_BOB") == []
    await settle_until_quiet(ws)

    assert len(ws.cards_of("U_BOB")) == 1 and len(card_sends(ws, "U_BOB")) == 1
    assert (await events_of(ws, 1)).count("card_sent") == 1
    assert len(ws.slack.calls("chat.postMessage")) == 4


async def test_every_card_arrives_exactly_once_through_500s_and_429s(ws: Workspace) -> None:
    ws.slack.fail("chat.postMessage", status=500, times=2)  # Bob's card fails twice for sure
    ws.slack.fail("chat.postMessage", status=429, rate=0.4, retry_after=20)
    ws.slack.fail("chat.postMessage", status=500, rate=0.3)
    ws.slack.fail("chat.update", status=429, rate=0.4, retry_after=5)
    ws.slack.fail("views.publish", status=500, rate=0.3)

    await create(ws, "U_ALICE", "$120,000 Servers for the new region")
    for approver in ("U_BOB", "U_FIN2", "U_DIR"):
        await settle_until_quiet(ws)
        await approve(ws, approver)
    await settle_until_quiet(ws)

    assert any(c.error == "injected" for c in ws.slack.calls("chat.postMessage"))
    assert card_counts(ws) == {"U_BOB": 1, "U_CAROL": 0, "U_FIN1": 1, "U_FIN2": 1, "U_DIR": 1}
    for user in ("U_BOB", "U_FIN1", "U_FIN2", "U_DIR"):
        assert len(card_sends(ws, user)) == 1
        assert not has_buttons(ws.card(user, "PR-1"))
    [told] = outcome_dms(ws)
    assert "approved" in told
    assert (await events_of(ws, 1)).count("card_sent") == 4
    assert await ws.runtime.store.outbox_counts() == {
        "sent": sum((await ws.runtime.store.outbox_counts()).values())}
    assert failed_calls(ws) == []


async def test_a_card_decided_before_it_could_be_sent_is_not_sent_late(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    ws.slack.fail("chat.postMessage", status=500, times=1)  # U_FIN1's card, the first sent
    await approve(ws, "U_BOB")
    assert ws.cards_of("U_FIN1") == []

    # U_FIN2 decides from the App Home before U_FIN1's card could be sent again
    await ws.open_home("U_FIN2")
    await click_in_home(ws, "U_FIN2", ActionId.APPROVE, StepValue(request_id=1, step=1).encode())
    await settle_until_quiet(ws)

    assert ws.cards_of("U_FIN1") == []  # decided already: nobody needs that card now
    assert all(not has_buttons(card) for card in ws.cards_of("U_FIN2"))
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.APPROVED
    assert failed_calls(ws) == []


async def delete_message(ws: Workspace, message: dict[str, Any]) -> None:
    """The message disappears from Slack (a retention policy, an admin): as if deleted
    through a ``response_url`` with ``delete_original``."""
    url = ws.slack.response_url(channel=message["channel"], ts=message["ts"])
    async with httpx.AsyncClient() as http:
        (await http.post(url, json={"delete_original": True})).raise_for_status()
    assert ws.slack.message(message["channel"], message["ts"]) is None


async def test_a_card_gone_from_slack_holds_nothing_up(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    bob_card = ws.card("U_BOB", "PR-1")
    await delete_message(ws, bob_card)

    await ws.click("U_BOB", bob_card, ActionId.APPROVE)  # as from a copy still on screen

    # the next level's cards go out at once, not after the dead card's retries
    assert len(ws.cards_of("U_FIN1")) == len(ws.cards_of("U_FIN2")) == 1
    await delete_message(ws, ws.card("U_FIN1", "PR-1"))
    await approve(ws, "U_FIN2")

    assert_decided_in_place(ws, "U_FIN2", "PR-1", "Approved* by <@U_FIN2>")  # not skipped
    assert any("approved" in text for text in outcome_dms(ws))
    assert (await ws.runtime.store.outbox_counts()).get("pending", 0) == 0


# --------------------------------------------------------------------------- the audit trail


async def test_the_trail_of_a_working_day_verifies_and_names_every_event(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")        # PR-1: approved
    await approve(ws, "U_BOB")
    await approve(ws, "U_FIN1")
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")    # PR-2: rejected
    await ws.reject("U_BOB", ws.card("U_BOB", "PR-2"), "Reuse the old ones")
    await create(ws, "U_ALICE", "$2,000 Team offsite")                    # PR-3: cancelled
    await ws.command("U_ALICE", "cancel PR-3")
    await create(ws, "U_ALICE", "$120 New keyboard because mine broke")    # PR-4: auto
    cancelled = ws.card("U_BOB", "PR-3")
    first = ws.slack.versions(cancelled["channel"], cancelled["ts"])[0]
    await ws.click("U_EVE", first, ActionId.APPROVE)                     # refused

    assert await ws.runtime.store.verify_audit() is None
    assert await events_of(ws, 1) == ["submitted", "card_sent", "approved", "card_sent",
                                      "card_sent", "approved"]
    assert await events_of(ws, 2) == ["submitted", "card_sent", "rejected"]
    assert await events_of(ws, 3) == ["submitted", "card_sent", "cancelled", "click_refused"]
    assert await events_of(ws, 4) == ["submitted", "auto_approved"]
    trail = await audit(ws)
    assert {"submitted", "card_sent", "approved", "rejected", "cancelled", "auto_approved",
            "click_refused"} <= {e.event for e in trail}
    actors: dict[str, set[str]] = {}
    for entry in trail:
        actors.setdefault(entry.event, set()).add(entry.actor)
    assert actors["approved"] == {"U_BOB", "U_FIN1"}
    assert actors["rejected"] == {"U_BOB"} and actors["cancelled"] == {"U_ALICE"}
    assert actors["card_sent"] == {"system"}
    sent: list[dict[str, Any]] = [e.data for e in trail if e.event == "card_sent"]
    assert {(d["to"], d["level"]) for d in sent} == {
        ("U_BOB", "Manager"), ("U_FIN1", "Finance"), ("U_FIN2", "Finance")}
    assert all(d["channel"] and d["ts"] for d in sent)
    assert failed_calls(ws) == []
