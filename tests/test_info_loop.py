"""The request-information loop through the real app: an approver asks, the requester
answers, and the step's reminder and escalation clocks pause in between.

Buttons are clicked and modals submitted as signed requests (``Workspace``); time moves
only on the fake clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.ids import ActionId, CallbackId, RejectMetadata
from bot.standin.workspace import Workspace, has_buttons
from tests.durable_support import (
    DAY,
    HOUR,
    audit,
    buttons,
    content,
    create,
    decidable,
    dms,
    events,
    later,
    reminders,
    timers,
    workspace,
)


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


async def ask(ws: Workspace, user: str, ref: str, question: str) -> httpx.Response:
    """``user`` clicks *Ask a question* on their card and submits ``question``."""
    await ws.click(user, ws.card(user, ref), ActionId.REQUEST_INFO)
    modal = ws.slack.last_view(user)
    assert modal is not None and modal["callback_id"] == CallbackId.REQUEST_INFO.value
    assert any(b.get("block_id") == "question" for b in modal["blocks"])
    return await ws.submit(user, CallbackId.REQUEST_INFO, texts={"question": question},
                           private_metadata=modal["private_metadata"])


def question_dm(ws: Workspace, ref: str = "PR-1", user: str = "U_ALICE") -> dict[str, Any]:
    found = dms(ws, user, "question", ref)
    assert len(found) == 1, f"{user} got {len(found)} question DMs about {ref}"
    return found[0]


async def answer(ws: Workspace, text: str, *, user: str = "U_ALICE",
                 ref: str = "PR-1") -> httpx.Response:
    """The requester clicks *Answer* on the question DM and submits ``text``."""
    await ws.click(user, question_dm(ws, ref, user), ActionId.ANSWER_INFO)
    modal = ws.slack.last_view(user)
    assert modal is not None and modal["callback_id"] == CallbackId.INFO_ANSWER.value
    assert any(b.get("block_id") == "answer" for b in modal["blocks"])
    return await ws.submit(user, CallbackId.INFO_ANSWER, texts={"answer": text},
                           private_metadata=modal["private_metadata"])


def form_errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    if not response.content:
        return {}
    body = response.json()
    return dict(body.get("errors") or {}) if body.get("response_action") == "errors" else {}


def told(ws: Workspace) -> str:
    """What the app answered the latest click, ephemerally."""
    return " ".join(ws.answers())


# --------------------------------------------------------------------------- the loop


async def test_question_and_answer_round_trip(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    card = ws.card("U_BOB", "PR-1")
    assert "request_info" in buttons(card)

    assert form_errors(await ask(ws, "U_BOB", "PR-1", "Which model, and why 5?")) == {}
    dm = question_dm(ws)
    assert "answer_info" in buttons(dm)
    assert "PR-1" in content(dm) and "Which model, and why 5?" in content(dm)
    bob = ws.card("U_BOB", "PR-1")
    assert bob["ts"] == card["ts"]
    assert "Which model, and why 5?" in content(bob)
    assert decidable(bob), "the approver may still decide while the question is open"
    assert "request_info" not in buttons(bob), "one open question at a time"

    assert form_errors(await answer(ws, "ThinkPad T14, one per new hire")) == {}
    replies = [m for m in ws.slack.messages_to("U_BOB") if m.get("thread_ts") == card["ts"]
               and m["ts"] != card["ts"]]
    assert len(replies) == 1
    assert "ThinkPad T14, one per new hire" in content(replies[0])
    assert "PR-1" in content(replies[0])
    bob = ws.card("U_BOB", "PR-1")
    assert "ThinkPad T14, one per new hire" in content(bob)
    assert "request_info" in buttons(bob), "a new question may be asked again"

    entries = await audit(ws, 1)
    asked = next(e for e in entries if e.event == "info_requested")
    answered = next(e for e in entries if e.event == "info_answered")
    assert asked.actor == "U_BOB" and asked.data["question"] == "Which model, and why 5?"
    assert answered.actor == "U_ALICE"
    assert answered.data["answer"] == "ThinkPad T14, one per new hire"

    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    assert len(dms(ws, "U_ALICE", "approved", "PR-1")) == 1
    assert len(dms(ws, "U_ALICE", "question")) == 1


async def test_clocks_pause_while_waiting_and_resume_after(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await later(ws, HOUR)
    await ask(ws, "U_BOB", "PR-1", "Which model?")
    assert await timers(ws) == [], "no clock runs while the requester is asked"

    await later(ws, 10 * DAY)  # far past 4h (reminder) and 48h (escalation)
    assert reminders(ws, "U_BOB") == []
    assert ws.cards_of("U_CAROL") == []
    assert "reminded" not in await events(ws, 1)

    await answer(ws, "ThinkPad T14")
    # 1h had passed before the question: 3h to the first reminder, 47h to escalation
    await later(ws, 3 * HOUR - 2)
    assert reminders(ws, "U_BOB") == []
    await later(ws, 2)
    first = reminders(ws, "U_BOB")
    assert len(first) == 1
    assert "has waited 4 hours for" in first[0]["text"], "time spent on the question excluded"
    assert first[0]["thread_ts"] == ws.card("U_BOB", "PR-1")["ts"]

    await later(ws, 24 * HOUR)  # the cadence carries on: 28h of waiting
    assert len(reminders(ws, "U_BOB")) == 2
    assert "has waited 1 day 4 hours for" in reminders(ws, "U_BOB")[1]["text"]
    await later(ws, 20 * HOUR - 2)  # 47h of waiting, 48h with the hour before the question
    assert ws.cards_of("U_CAROL") == []
    await later(ws, 2)
    assert len(ws.cards_of("U_CAROL")) == 1
    reminded = [e.data["waited_seconds"] for e in await audit(ws, 1) if e.event == "reminded"]
    assert reminded == [4 * HOUR, 28 * HOUR]
    answered = next(e for e in await audit(ws, 1) if e.event == "info_answered")
    assert answered.data["paused_seconds"] == 10 * DAY


async def test_a_second_question_asked_later_pauses_again(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await ask(ws, "U_BOB", "PR-1", "Which model?")
    await later(ws, DAY)
    await answer(ws, "T14")
    await later(ws, 2 * HOUR)
    await ask(ws, "U_BOB", "PR-1", "And the price each?")
    await later(ws, 5 * DAY)
    assert reminders(ws, "U_BOB") == []
    assert len(dms(ws, "U_ALICE", "question")) == 2
    await ws.click("U_ALICE", dms(ws, "U_ALICE", "question")[1], ActionId.ANSWER_INFO)
    modal = ws.slack.last_view("U_ALICE")
    assert modal is not None
    await ws.submit("U_ALICE", CallbackId.INFO_ANSWER, texts={"answer": "$1,000"},
                    private_metadata=modal["private_metadata"])
    await later(ws, 2 * HOUR)  # 2h + 2h of waiting: the first reminder at 4h
    assert len(reminders(ws, "U_BOB")) == 1


# --------------------------------------------------------------------------- who may


async def test_only_an_assignee_may_ask(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    card = ws.card("U_BOB", "PR-1")
    views_before = len(ws.slack.calls("views.open"))

    await ws.click("U_CAROL", card, ActionId.REQUEST_INFO)
    assert "not an approver" in told(ws)
    await ws.click("U_ALICE", card, ActionId.REQUEST_INFO)
    assert "you cannot decide it" in told(ws)
    assert len(ws.slack.calls("views.open")) == views_before, "no modal opened for them"

    # a forged submission of the question modal is refused too
    forged = RejectMetadata(request_id=1, step=0).encode()
    response = await ws.submit("U_CAROL", CallbackId.REQUEST_INFO,
                               texts={"question": "Why?"}, private_metadata=forged)
    assert "question" in form_errors(response)
    assert dms(ws, "U_ALICE", "question") == []
    assert "info_requested" not in await events(ws, 1)
    refused = [e for e in await audit(ws, 1) if e.event == "click_refused"]
    assert {e.actor for e in refused} == {"U_CAROL", "U_ALICE"}


async def test_only_the_requester_may_answer(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    await ask(ws, "U_BOB", "PR-1", "Which model?")
    dm = question_dm(ws)
    views_before = len(ws.slack.calls("views.open"))
    await ws.click("U_BOB", dm, ActionId.ANSWER_INFO)
    assert "Only the requester" in told(ws)
    assert len(ws.slack.calls("views.open")) == views_before
    refused = [e for e in await audit(ws, 1) if e.event == "click_refused"]
    assert [(e.actor, e.data["action"], e.data["code"]) for e in refused] == [
        ("U_BOB", "answer_info", "not_requester")]

    forged = RejectMetadata(request_id=1, step=0).encode()
    response = await ws.submit("U_BOB", CallbackId.INFO_ANSWER,
                               texts={"answer": "Answering myself"}, private_metadata=forged)
    assert "Only the requester" in form_errors(response).get("answer", "")
    assert "info_answered" not in await events(ws, 1)
    await later(ws, 10 * DAY)
    assert reminders(ws, "U_BOB") == [], "still paused: nobody answered"


async def test_a_second_question_while_one_is_open_is_refused() -> None:
    async with workspace() as ws:
        await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
        await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
        fin2_card = ws.card("U_FIN2", "PR-1")  # as it was, with its Ask button
        await ask(ws, "U_FIN1", "PR-1", "Which cost center?")
        assert "request_info" not in buttons(ws.card("U_FIN2", "PR-1"))

        await ws.click("U_FIN2", fin2_card, ActionId.REQUEST_INFO)  # a stale button
        modal = ws.slack.last_view("U_FIN2")
        metadata = (modal or {}).get("private_metadata") or RejectMetadata(
            request_id=1, step=1).encode()
        response = await ws.submit("U_FIN2", CallbackId.REQUEST_INFO,
                                   texts={"question": "And the vendor?"},
                                   private_metadata=metadata)
        assert "already waits" in form_errors(response).get("question", "") or \
            "already waits" in told(ws)
        assert len(dms(ws, "U_ALICE", "question")) == 1
        assert (await events(ws, 1)).count("info_requested") == 1
        refused = [e for e in await audit(ws, 1) if e.event == "click_refused"]
        assert [e.data["code"] for e in refused] == ["question_open"]


async def test_approve_while_a_question_is_open(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$25,000 Standing desks for the team")
    await ask(ws, "U_BOB", "PR-1", "Is this for the whole floor?")
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    bob = ws.card("U_BOB", "PR-1")
    assert not has_buttons(bob) and "Approved* by <@U_BOB>" in content(bob)
    assert "Is this for the whole floor?" in content(bob)
    assert "reminders are paused" not in content(bob), "a decided step waits for nothing"
    assert len(ws.cards_of("U_FIN1")) == 1 and len(ws.cards_of("U_FIN2")) == 1
    # the next level runs its own clocks
    assert sorted((s, k) for _, s, k, _ in await timers(ws)) == [(1, "escalate"), (1, "remind")]
    await later(ws, 4 * HOUR)
    assert len(reminders(ws, "U_FIN1")) == 1

    # answering afterwards is refused, and restarts no clock of the decided step
    views_before = len(ws.slack.calls("views.open"))
    await ws.click("U_ALICE", question_dm(ws), ActionId.ANSWER_INFO)
    assert "No question" in told(ws)
    assert len(ws.slack.calls("views.open")) == views_before, "no answer form for a decided step"
    assert "info_answered" not in await events(ws, 1)
    assert all(step == 1 for _, step, _, _ in await timers(ws))


async def test_empty_question_is_refused_in_the_modal(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$5,000 Laptops for the new hires")
    response = await ask(ws, "U_BOB", "PR-1", "   ")
    assert "question" in form_errors(response)
    assert dms(ws, "U_ALICE", "question") == []
    assert len(await timers(ws)) == 2, "the clocks keep running"
