"""The App Home and what every message looks like, through the real app.

``app_home_opened`` deliveries (and Slack's retries of them), clicks on the App Home's
buttons (a ``block_actions`` with a ``view`` and no ``response_url``), and mrkdwn escaping
and clipping checked on every call the stand-in Slack received.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bot.delivery import HOME_BURST, HOMES_PER_ROUND, HomeBudget
from bot.ids import ActionId, CallbackId, StepValue
from bot.standin import signing
from bot.standin.workspace import Workspace, has_buttons
from flows.model import RequestStatus, StepStatus
from tests.conftest import T0
from tests.slack_support import (
    POLICY,
    ack_text,
    block_text,
    click_in_home,
    create,
    dm_content,
    failed_calls,
    home_buttons,
    refusals,
    showing_calls,
    shown,
    workspace,
)


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


def publishes_for(ws: Workspace, user: str) -> int:
    return sum(1 for c in ws.slack.calls("views.publish")
               if c.params.get("user_id") == user and c.error is None)


def home(ws: Workspace, user: str) -> str:
    view = ws.slack.home_of(user)
    assert view is not None, f"no App Home published for {user}"
    return block_text(view)


# --------------------------------------------------------------------------- the App Home


async def test_opening_the_app_home_shows_what_waits_and_own_requests(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await create(ws, "U_BOB", "$2,000 Offsite catering")

    response = await ws.open_home("U_BOB")

    assert response.status_code == 200
    view = ws.slack.home_of("U_BOB")
    assert view is not None and view["type"] == "home"
    text = block_text(view)
    assert "Waiting for you (1)" in text and "Your requests (1)" in text
    waiting, mine = text.split("Your requests")
    assert "PR-1" in waiting and "€25,000.00" in waiting and "Manager" in waiting
    assert "PR-2" in mine and "pending" in mine and "<@U_CAROL>" in mine
    assert home_buttons(view, ActionId.APPROVE) == [StepValue(request_id=1, step=0).encode()]
    assert home_buttons(view, ActionId.REJECT) == [StepValue(request_id=1, step=0).encode()]

    await ws.open_home("U_EVE")
    assert "Nothing waits for your decision" in home(ws, "U_EVE")
    assert "You have no requests yet" in home(ws, "U_EVE")


async def test_a_crowded_app_home_stays_within_slacks_limits(ws: Workspace) -> None:
    for n in range(1, 22):  # more than the view shows of either list; delivered at the end
        response = await ws.send(signing.slash_command(
            ws.secret, text=f"${1000 + n:,} Monitor number {n} for the design team",
            user_id="U_ALICE", response_url=ws.slack.response_url()))
        assert f"PR-{n}" in ack_text(response)
    await ws.settle()

    await ws.open_home("U_BOB")
    await ws.open_home("U_ALICE")

    assert failed_calls(ws) == []  # the stand-in checks views as Slack does (<= 100 blocks)
    bob = ws.slack.home_of("U_BOB")
    assert bob is not None and len(bob["blocks"]) <= 100
    assert "Waiting for you (21)" in block_text(bob) and "more waiting for you" in block_text(bob)
    assert len(home_buttons(bob, ActionId.APPROVE)) < 21
    alice = home(ws, "U_ALICE")
    assert "Your requests (21)" in alice and "more of your requests" in alice


async def test_a_retried_event_delivery_is_handled_once(ws: Workspace) -> None:
    first = await ws.open_home("U_ALICE", event_id="Ev0HOME1")
    again = await ws.open_home("U_ALICE", event_id="Ev0HOME1", retry_num=1)
    twice = await ws.open_home("U_ALICE", event_id="Ev0HOME1", retry_num=2)

    assert first.status_code == again.status_code == twice.status_code == 200
    assert publishes_for(ws, "U_ALICE") == 1
    await ws.open_home("U_ALICE", event_id="Ev0HOME2")  # a new opening is a new event
    assert publishes_for(ws, "U_ALICE") == 2


async def test_the_messages_tab_publishes_nothing(ws: Workspace) -> None:
    response = await ws.send(signing.app_home_opened(ws.secret, user_id="U_ALICE",
                                                     tab="messages"))
    await ws.settle()
    assert response.status_code == 200 and publishes_for(ws, "U_ALICE") == 0


async def test_the_home_is_refreshed_when_something_changes_for_the_user(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await ws.open_home("U_BOB")
    await ws.open_home("U_ALICE")
    assert "Waiting for you (1)" in home(ws, "U_BOB")
    before = {u: publishes_for(ws, u) for u in ("U_ALICE", "U_BOB", "U_FIN1", "U_FIN2")}

    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)

    for user in ("U_ALICE", "U_BOB", "U_FIN1", "U_FIN2"):
        assert publishes_for(ws, user) > before[user], user
    assert "Waiting for you (0)" in home(ws, "U_BOB")
    assert "Waiting for you (1)" in home(ws, "U_FIN1")
    assert home_buttons(ws.slack.home_of("U_FIN2") or {}, ActionId.APPROVE) == [
        StepValue(request_id=1, step=1).encode()]
    assert "Finance" in home(ws, "U_ALICE")

    await ws.click("U_FIN1", ws.card("U_FIN1", "PR-1"), ActionId.APPROVE)
    assert "Waiting for you (0)" in home(ws, "U_FIN2")
    assert "approved" in home(ws, "U_ALICE")


async def test_approving_from_the_app_home_decides_and_updates_the_card(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await ws.open_home("U_BOB")
    [value] = home_buttons(ws.slack.home_of("U_BOB") or {}, ActionId.APPROVE)

    response = await click_in_home(ws, "U_BOB", ActionId.APPROVE, value)

    assert response.status_code == 200
    request = await ws.runtime.store.get(1)
    assert request is not None and request.steps[0].decided_by == "U_BOB"
    card = ws.card("U_BOB", "PR-1")
    assert not has_buttons(card) and "Approved* by <@U_BOB>" in block_text(card)
    assert len(ws.cards_of("U_FIN1")) == len(ws.cards_of("U_FIN2")) == 1
    assert "Waiting for you (0)" in home(ws, "U_BOB")

    # the same App Home button again, before the view was refreshed: refused by DM
    await click_in_home(ws, "U_BOB", ActionId.APPROVE, value)
    told = dm_content(ws, "U_BOB")
    assert any("already approved" in text for text in told)
    assert [(e.actor, e.data["code"]) for e in await refusals(ws)] == [
        ("U_BOB", "step_not_pending")]
    assert ws.slack.calls("chat.postEphemeral") == []  # not reachable in someone's DM anyway


async def test_a_refused_app_home_click_is_answered_by_dm(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await ws.open_home("U_EVE")
    value = StepValue(request_id=1, step=0).encode()

    await click_in_home(ws, "U_EVE", ActionId.APPROVE, value)
    await click_in_home(ws, "U_EVE", ActionId.APPROVE, "not-a-step")

    told = dm_content(ws, "U_EVE")
    assert len(told) == 2
    assert "not an approver" in told[0] and "out of date" in told[1]
    request = await ws.runtime.store.get(1)
    assert request is not None and request.steps[0].status is StepStatus.PENDING
    assert len(await refusals(ws)) == 2


async def test_rejecting_from_the_app_home_updates_the_card_too(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the design team")
    await ws.open_home("U_BOB")
    [value] = home_buttons(ws.slack.home_of("U_BOB") or {}, ActionId.REJECT)

    await click_in_home(ws, "U_BOB", ActionId.REJECT, value)
    modal = ws.slack.last_view("U_BOB")
    assert modal is not None and modal["callback_id"] == CallbackId.REJECT_REASON.value
    await ws.submit("U_BOB", CallbackId.REJECT_REASON, texts={"reason": "Old ones still work"},
                    private_metadata=str(modal["private_metadata"]))

    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.REJECTED
    card = ws.card("U_BOB", "PR-1")
    assert not has_buttons(card) and "Old ones still work" in block_text(card)
    assert "rejected" in home(ws, "U_ALICE")


async def test_new_request_from_the_app_home_opens_the_modal(ws: Workspace) -> None:
    await ws.open_home("U_ALICE")
    await click_in_home(ws, "U_ALICE", ActionId.OPEN_REQUEST_MODAL, "")
    modal = ws.slack.last_view("U_ALICE")
    assert modal is not None and modal["callback_id"] == CallbackId.PURCHASE_REQUEST.value


# --------------------------------------------------------------------------- what people see

HOSTILE = "<!channel> <@U_BOB> <https://evil.example|click> R&D kit"
_BARE_AMP = re.compile(r"&(?!amp;|lt;|gt;)")


def assert_escaped_everywhere(ws: Workspace, *, extra: list[str]) -> int:
    """No raw control sequence of the hostile purpose in anything a person was shown."""
    texts = [text for call in showing_calls(ws) for text in shown(call)] + extra
    for response_text in (t for t in texts):
        assert "<!channel>" not in response_text, response_text
        assert "<https://evil" not in response_text, response_text
        assert "<@U_BOB> <https" not in response_text, response_text
    escaped = [t for t in texts if "&lt;!channel&gt;" in t]
    for text in escaped:  # every copy of the purpose is the escaped one
        assert "&lt;@U_BOB&gt; &lt;https://evil.example|click&gt; R&amp;D kit" in text
    for text in texts:
        if "R&" in text or "kit" in text:
            assert not _BARE_AMP.search(text), text
    return len(escaped)


async def test_hostile_text_is_escaped_in_every_message_and_view(ws: Workspace) -> None:
    # Slack sends a command's &, < and > as entities: the app keeps the text as typed
    typed = HOSTILE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    acks = [ack_text(await ws.command("U_ALICE", f"€25,000 {typed}"))]
    await ws.submit("U_ALICE", CallbackId.PURCHASE_REQUEST,
                    texts={"amount": "9,000", "vendor": "<!here> & Sons", "purpose": HOSTILE},
                    selects={"currency": "USD"})
    request = await ws.runtime.store.get(1)
    assert request is not None and request.purpose == HOSTILE

    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    await ws.reject("U_FIN1", ws.card("U_FIN1", "PR-1"), "No <!everyone> & no <@U_FIN2>")
    await ws.click("U_BOB", ws.card("U_BOB", "PR-2"), ActionId.REJECT)  # the reject modal
    for user in ("U_ALICE", "U_BOB", "U_FIN1"):
        await ws.open_home(user)
    acks += [ack_text(await ws.command("U_ALICE", text))
             for text in ("status PR-1", "status PR-2", "list")]

    copies = assert_escaped_everywhere(ws, extra=acks)
    assert copies >= 10
    everything = " ".join(t for call in showing_calls(ws) for t in shown(call))
    assert "<!here>" not in everything and "&lt;!here&gt; &amp; Sons" in everything
    assert "<!everyone>" not in everything and "&lt;!everyone&gt;" in everything
    assert "no &lt;@U_FIN2&gt;" in everything
    assert failed_calls(ws) == []


async def test_a_very_long_purpose_is_clipped_and_every_message_accepted(
        ws: Workspace) -> None:
    purpose = "Ergonomic chairs & desks for everyone " + "x" * 10_000
    answer = ack_text(await ws.command("U_ALICE", f"$120,000 {purpose}"))
    assert "PR-1" in answer and "…" in answer and len(answer) < 3000
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    await ws.click("U_FIN1", ws.card("U_FIN1", "PR-1"), ActionId.REJECT)
    modal = ws.slack.last_view("U_FIN1")
    assert modal is not None
    await ws.submit("U_FIN1", CallbackId.REJECT_REASON, texts={"reason": "y" * 2000},
                    private_metadata=str(modal["private_metadata"]))
    for user in ("U_ALICE", "U_BOB", "U_FIN1"):
        await ws.open_home(user)
    status = ack_text(await ws.command("U_ALICE", "status PR-1"))

    assert failed_calls(ws) == []  # the stand-in validates blocks as Slack does
    calls = list(showing_calls(ws))
    assert len(calls) >= 10
    for call in calls:
        assert all(len(text) <= 3000 for text in shown(call)), call.method
        if call.method in {"chat.postMessage", "chat.update"}:
            assert any("…" in text for text in shown(call)), call.params.get("text")
    assert "…" in status and len(status) <= 3000
    request = await ws.runtime.store.get(1)
    assert request is not None and request.purpose == purpose  # stored in full
    trail = await ws.runtime.store.audit_for(1)
    assert trail[0].data["purpose"] == purpose


@pytest.mark.parametrize(("typed", "echoed"), [
    ("1&lt;!channel&gt; Laptops", "1&lt;!channel&gt;"),          # not an amount
    ("&lt;!channel&gt; Laptops", "&lt;!channel&gt;"),             # not a subcommand
    ("<!channel> Laptops", "&lt;!channel&gt;"),                    # as sent with escaping on
    ("status &lt;!here&gt;", "&lt;!here&gt;"),                    # not a request ID
    ("cancel &lt;https://evil.example|PR-1&gt;", "&lt;https://evil.example|PR-1&gt;"),
    ("1&amp;2 Laptops", "1&amp;2"),
])
async def test_answers_that_echo_what_was_typed_escape_it(ws: Workspace, typed: str,
                                                          echoed: str) -> None:
    answer = ack_text(await ws.command("U_ALICE", typed))

    assert echoed in answer, answer
    assert "<" not in answer and ">" not in answer, answer  # no mention, link or ping
    assert not _BARE_AMP.search(answer), answer
    assert await ws.runtime.store.get(1) is None


# --------------------------------------------------------------------------- Slack's limit


def test_the_home_budget_refills_at_its_rate_up_to_its_burst() -> None:
    budget = HomeBudget(per_minute=90, burst=15)
    assert budget.available(T0) == 15
    budget.spend(15)
    assert budget.available(T0) == 0
    assert budget.available(T0 + timedelta(seconds=2)) == 3, "1.5 a second"
    budget.spend(4)  # one more than it had: a Home someone opened
    assert budget.available(T0 + timedelta(seconds=2)) == 0
    assert budget.available(T0 + timedelta(seconds=60)) == 15, "never more than the burst"


# forty requesters, all reporting to U_BOB
_ALICE = "  U_ALICE: {manager: U_BOB}\n"
FORTY_UNDER_BOB = POLICY.replace(_ALICE, _ALICE + "".join(
    f"  U_R{n:02d}: {{manager: U_BOB}}\n" for n in range(40)))


async def forty_requests(ws: Workspace, *, apart: timedelta = timedelta(0)) -> None:
    """Each of the forty sends ``/purchase`` for a monitor, ``apart`` from the last."""
    for n in range(40):
        await ws.send(signing.slash_command(
            ws.secret, text=f"$2,{n:03d} Monitor number {n} for the design team",
            user_id=f"U_R{n:02d}", response_url=ws.slack.response_url()))
        ws.clock.advance(apart)


async def test_a_burst_of_changes_publishes_homes_within_slacks_rate_oldest_first() -> None:
    """Slack takes about 100 views.publish a minute per workspace: forty people's Homes
    changed at once go out over the next half minute, the longest waiting first, and
    every one of them shows the change in the end."""
    async with Workspace(policy_text=FORTY_UNDER_BOB) as ws:
        await forty_requests(ws, apart=timedelta(milliseconds=10))
        await ws.settle()
        people = {f"U_R{n:02d}" for n in range(40)} | {"U_BOB"}
        first = {c.params["user_id"] for c in ws.slack.calls("views.publish")}
        assert len(first) == HOME_BURST, "a burst's worth at once, no more"
        assert "U_R00" in first and "U_R39" not in first, "those waiting longest first"
        assert len(ws.cards_of("U_BOB")) == 40, "cards are not held back"
        for _ in range(20):
            ws.clock.advance(timedelta(seconds=2))
            await ws.settle()
        published = [c for c in ws.slack.calls("views.publish")]
        assert {c.params["user_id"] for c in published} == people
        assert len(published) == len(people), "each Home once"
        assert "Waiting for you (40)" in home(ws, "U_BOB")
        assert "Your requests (1)" in home(ws, "U_R39")


async def test_a_round_publishes_few_homes_and_counts_its_cards_as_sent_before_them() -> None:
    """A Home is rendered from its owner's waiting list, which is slow for a busy
    approver: a round of cards carries at most HOMES_PER_ROUND of them, and the room its
    cards made (which lets new requests be created) is announced before its Homes go
    out, not after."""
    async with Workspace(policy_text=FORTY_UNDER_BOB) as ws:
        await forty_requests(ws)
        store, deliverer = ws.runtime.store, ws.runtime.deliverer
        while await store.process_intake(ws.clock.now()):
            pass  # created, their cards and Home refreshes waiting together
        published_when_sent: list[tuple[int, int]] = []
        deliverer.on_sent = lambda count: published_when_sent.append(
            (count, len(ws.slack.calls("views.publish"))))
        assert await deliverer.drain(max_rounds=1, homes=True) == 40 + HOMES_PER_ROUND
        assert len(ws.cards_of("U_BOB")) == 40, "every card in the one round"
        assert len(ws.slack.calls("views.publish")) == HOMES_PER_ROUND
        assert published_when_sent == [(40, 0)], "the cards counted before any Home"
        await deliverer.drain(max_rounds=1, homes=True)
        assert len(ws.slack.calls("views.publish")) == 2 * HOMES_PER_ROUND
        assert published_when_sent == [(40, 0)], "a round of Homes alone makes no room"
        await deliverer.drain(max_rounds=100, homes=True)
        assert len(ws.slack.calls("views.publish")) == HOME_BURST, "the burst, over rounds"
