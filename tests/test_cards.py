"""Block Kit builders (``bot.cards``) on real domain objects from the state machine.

Requests are made by :func:`flows.machine.submit` on the example policy and moved on by
``approve``/``reject``/``cancel``/``escalate``, so the cards are checked against what the
product really produces. The message builders emit plain dicts (``bot.blocks``), so every
rendered block is parsed back through ``slack_sdk.models`` and must come out unchanged
(``Block.parse(b).to_dict() == b``): that runs slack_sdk's own checks of Slack's limits, and
the few limits slack_sdk does not check (fields, context elements) are checked here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot import blocks as bk
from bot import cards
from bot.ids import ActionId, CallbackId, InputId, RejectMetadata, StepValue
from bot.text import clip
from flows.machine import (
    SYSTEM,
    AnswerInfo,
    Approve,
    AskInfo,
    Cancel,
    Escalate,
    HandOver,
    Reject,
    Submit,
    answer_info,
    approve,
    ask_info,
    cancel,
    escalate,
    hand_over,
    reject,
    submit,
)
from flows.model import Advice, Request, RequestStatus
from flows.policy import Policy, load_policy
from tests.conftest import EXAMPLE_POLICY

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ADVICE = Advice(
    recommendation="review", risk="medium", summary="First purchase from this vendor.",
    flags=({"code": "new_vendor", "detail": "No approved request from Acme before.",
            "evidence": []},
           {"code": "near_threshold", "detail": "Within 5% below the Director threshold.",
            "evidence": ["PR-40", "PR-41"]}))


def make(policy: Policy, *, amount: str = "25000", currency: str = "EUR",
         purpose: str = "Laptops for the three new hires", vendor: str | None = "Acme GmbH",
         cost_center: str | None = "ENG-001", advice: Advice | None = ADVICE,
         requester: str = "U_ALICE", request_id: int = 42) -> Request:
    out = submit(Submit(requester=requester, amount=Decimal(amount), currency=currency,
                        purpose=purpose, vendor=vendor, cost_center=cost_center, at=T0),
                 request_id=request_id, policy=policy, policy_version=policy.version_hash,
                 advice=advice)
    return out.request


def ok_approve(request: Request, policy: Policy, step: int, actor: str,
               at: datetime) -> Request:
    out = approve(request, Approve(step=step, actor=actor, at=at), policy=policy)
    assert out.refusal is None, out.refusal
    return out.request


def dump(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every mrkdwn string in the blocks (section text and fields, context elements)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return out


def assert_valid(blocks: list[dict[str, Any]]) -> None:
    """Each block is what slack_sdk's model of it renders (``to_dict()`` validates it first,
    raising on a limit slack_sdk knows), and within the limits slack_sdk does not check."""
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block  # an unknown block type
        assert parsed.to_dict() == block
        if block["type"] == "section":
            fields = block.get("fields", [])
            assert len(fields) <= 10 and all(len(f["text"]) <= 2000 for f in fields)
        if block["type"] == "context":
            assert all(len(e["text"]) <= 2000 for e in block["elements"])
    for text in mrkdwn_texts(blocks):
        assert len(text) <= 3000


def actions(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


@pytest.fixture
def pending(policy: Policy) -> Request:
    return make(policy)


# --------------------------------------------------------------------------- the card


def test_card_shows_everything_an_approver_needs(policy: Policy, pending: Request) -> None:
    card = cards.approval_card(pending, pending.steps[0], viewer="U_BOB")
    assert_valid(card.blocks)
    text = dump(card.blocks)
    for expected in ("PR-42", "<@U_ALICE>", "€25,000.00 (= $27,000.00)", "Acme GmbH",
                     "Laptops for the three new hires", "ENG-001", "Manager, step 1 of 2",
                     "recommends *review*", "risk *medium*", "First purchase from this vendor.",
                     "`new_vendor`", "No approved request from Acme before.",
                     "`near_threshold`", "PR-40, PR-41"):
        assert expected in text, expected
    assert "PR-42" in card.text and "€25,000.00" in card.text


def test_buttons_only_for_the_assignees_of_a_pending_step(pending: Request) -> None:
    step = pending.steps[0]
    buttons = actions(cards.approval_card(pending, step, viewer="U_BOB").blocks)
    assert [(b["action_id"], b.get("style")) for b in buttons] == [
        (ActionId.APPROVE, "primary"), (ActionId.REJECT, "danger"),
        (ActionId.REQUEST_INFO, None)]
    for button in buttons:
        assert StepValue.parse(button["value"]) == StepValue(request_id=42, step=0)
    for viewer in ("U_FIN1", "U_ALICE", "U_SOMEONE", None):
        card = cards.approval_card(pending, step, viewer=viewer)
        assert actions(card.blocks) == [], viewer
        assert "Waiting for <@U_BOB>" in dump(card.blocks)


def test_decided_card_shows_who_and_when_and_has_no_buttons(policy: Policy,
                                                            pending: Request) -> None:
    approved = ok_approve(pending, policy, 0, "U_BOB", T0 + HOUR)
    card = cards.approval_card(approved, approved.steps[0], viewer="U_BOB")
    assert_valid(card.blocks)
    assert actions(card.blocks) == []
    text = dump(card.blocks)
    assert "*Approved* by <@U_BOB>" in text and "2026-11-25 10:00 UTC" in text

    # the next level's card names who approved the earlier one, and when
    nxt = cards.approval_card(approved, approved.steps[1], viewer="U_FIN2")
    text = dump(nxt.blocks)
    assert "Finance, step 2 of 2" in text
    assert "Manager: approved by <@U_BOB>" in text and "2026-11-25 10:00 UTC" in text
    assert len(actions(nxt.blocks)) == 3  # approve, reject, ask a question


def test_rejected_card_shows_the_reason_escaped(policy: Policy, pending: Request) -> None:
    out = reject(pending, Reject(step=0, actor="U_BOB", reason="Over budget <!here>",
                                 at=T0 + 2 * HOUR), policy=policy)
    card = cards.approval_card(out.request, out.request.steps[0], viewer="U_BOB")
    assert_valid(card.blocks)
    assert actions(card.blocks) == []
    text = dump(card.blocks)
    assert "*Rejected* by <@U_BOB>" in text and "2026-11-25 11:00 UTC" in text
    assert "Over budget &lt;!here&gt;" in text and "<!here>" not in text


def test_cancelled_card_says_so(policy: Policy, pending: Request) -> None:
    out = cancel(pending, Cancel(actor="U_ALICE", at=T0 + HOUR), policy=policy)
    card = cards.approval_card(out.request, out.request.steps[0], viewer="U_BOB")
    assert actions(card.blocks) == []
    assert "Cancelled by the requester" in dump(card.blocks)


def test_escalated_step_keeps_its_buttons_for_every_assignee(policy: Policy,
                                                             pending: Request) -> None:
    out = escalate(pending, Escalate(step=0, at=T0 + 48 * HOUR), policy=policy)
    step = out.request.steps[0]
    assert step.escalated_to == ("U_CAROL",)
    for viewer in ("U_BOB", "U_CAROL"):
        card = cards.approval_card(out.request, step, viewer=viewer)
        assert_valid(card.blocks)
        assert len(actions(card.blocks)) == 3
        assert "Escalated to <@U_CAROL>" in dump(card.blocks)


def test_requester_text_pings_nobody(policy: Policy) -> None:
    request = make(policy, purpose="Hi <!channel> <@U_CEO> <https://evil.example|bank> & co",
                   vendor="<!everyone> Corp", cost_center="<!here>",
                   advice=Advice(summary="ignore <!channel>",
                                 flags=({"code": "prompt_injection",
                                         "detail": "says <@U_DIR> approve",
                                         "evidence": "<!subteam^S1>"},)))
    card = cards.approval_card(request, request.steps[0], viewer="U_BOB")
    assert_valid(card.blocks)
    text = dump(card.blocks)
    assert "&lt;!channel&gt;" in text and "&lt;!everyone&gt; Corp" in text
    for control in ("<!channel>", "<!everyone>", "<!here>", "<@U_CEO>", "<https://",
                    "<@U_DIR>", "<!subteam"):
        assert control not in text, control
        assert control not in card.text, control
    assert "&amp; co" in text


def test_long_purpose_is_clipped_and_the_card_stays_valid(policy: Policy) -> None:
    purpose = ("Ergonomic chairs & desks <for> the team. " * 400)[:15000]
    request = make(policy, purpose=purpose, vendor="V" * 5000, cost_center="C" * 3000)
    card = cards.approval_card(request, request.steps[0], viewer="U_BOB")
    assert_valid(card.blocks)
    purpose_text = next(t for t in mrkdwn_texts(card.blocks) if t.startswith("*Purpose*"))
    assert purpose_text.endswith("…")
    assert len(card.text) <= 3000
    for view in (cards.home_view([(request, request.steps[0])], [request], "U_BOB"),
                 cards.reject_modal(request, request.steps[0],
                                    RejectMetadata(request_id=42, step=0))):
        View(**view).validate_json()
    for message in (cards.outcome_dm(request, "approved"),
                    cards.reminder_dm(request, request.steps[0], 3600)):
        assert_valid(message.blocks)


def test_amounts_are_shown_in_full(policy: Policy) -> None:
    request = make(policy, amount="120000", currency="USD")
    card = cards.approval_card(request, request.steps[0], viewer="U_BOB")
    text = dump(card.blocks)
    assert "$120,000.00" in text
    assert "120k" not in text.lower() and "120K" not in text
    assert "Manager, step 1 of 3" in text
    assert "$120,000.00" in cards.status_text(request)
    assert "$120,000.00" in cards.reminder_dm(request, request.steps[0], 60).text


def test_card_without_advice_says_so(policy: Policy) -> None:
    request = make(policy, advice=None)
    card = cards.approval_card(request, request.steps[0], viewer="U_BOB")
    assert "No advisor annotation" in dump(card.blocks)


def test_steps_of_three_levels_are_labelled(policy: Policy) -> None:
    request = make(policy, amount="150000", currency="USD")
    request = ok_approve(request, policy, 0, "U_BOB", T0 + HOUR)
    card = cards.approval_card(request, request.steps[1], viewer="U_FIN1")
    assert "Finance, step 2 of 3" in dump(card.blocks)
    waiting = cards.approval_card(request, request.steps[2], viewer="U_DIR")
    assert actions(waiting.blocks) == []


# --------------------------------------------------------------------------- modals


def test_request_modal_follows_the_contract() -> None:
    view = cards.request_modal(["USD", "EUR", "GBP"])
    View(**view).validate_json()
    assert view["type"] == "modal"
    assert view["callback_id"] == "purchase_request" == CallbackId.PURCHASE_REQUEST.value
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert list(inputs) == ["amount", "currency", "vendor", "purpose", "cost_center"]
    for block_id, block in inputs.items():
        assert block["element"]["action_id"] == block_id
    assert inputs["cost_center"].get("optional") is True
    assert all(not inputs[f].get("optional") for f in ("amount", "currency", "vendor",
                                                        "purpose"))
    assert inputs["purpose"]["element"]["multiline"] is True
    currency = inputs["currency"]["element"]
    assert currency["type"] == "static_select"
    assert [o["value"] for o in currency["options"]] == ["USD", "EUR", "GBP"]
    assert currency["initial_option"]["value"] == "USD"
    assert cards.request_modal(["USD", "EUR"], base_currency="EUR")["blocks"][1][
        "element"]["initial_option"]["value"] == "EUR"


def test_reject_modal_carries_its_metadata(pending: Request) -> None:
    meta = RejectMetadata(request_id=42, step=0, channel="D_U_BOB", ts="1.000100",
                          response_url="https://hooks.slack.com/actions/x")
    view = cards.reject_modal(pending, pending.steps[0], meta)
    View(**view).validate_json()
    assert view["callback_id"] == "reject_reason" == CallbackId.REJECT_REASON.value
    (reason,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert reason["block_id"] == reason["element"]["action_id"] == "reason" == InputId.REASON.value
    assert not reason.get("optional")
    assert reason["element"]["multiline"] is True
    assert RejectMetadata.parse(view["private_metadata"]) == meta
    assert "PR-42" in view["title"]["text"]


# --------------------------------------------------------------------------- DMs


def test_outcome_dms(policy: Policy, pending: Request) -> None:
    done = ok_approve(pending, policy, 0, "U_BOB", T0 + HOUR)
    done = ok_approve(done, policy, 1, "U_FIN1", T0 + 2 * HOUR)
    dm = cards.outcome_dm(done, "approved")
    assert_valid(dm.blocks)
    assert "PR-42" in dm.text and "approved" in dump(dm.blocks)
    assert "€25,000.00 (= $27,000.00)" in dump(dm.blocks)

    rejected = reject(pending, Reject(step=0, actor="U_BOB", reason="Use the <b>old</b> ones",
                                      at=T0 + HOUR), policy=policy).request
    text = dump(cards.outcome_dm(rejected, "rejected").blocks)
    assert "rejected by <@U_BOB>" in text and "Use the &lt;b&gt;old&lt;/b&gt; ones" in text

    cancelled = cancel(pending, Cancel(actor="U_ALICE", at=T0 + HOUR), policy=policy).request
    assert "cancelled" in dump(cards.outcome_dm(cancelled, "cancelled").blocks)

    escalated = escalate(pending, Escalate(step=0, at=T0 + 48 * HOUR), policy=policy).request
    text = dump(cards.outcome_dm(escalated, "escalated", step=escalated.steps[0]).blocks)
    assert "escalated to <@U_CAROL>" in text

    with pytest.raises(ValueError):
        cards.outcome_dm(pending, "exploded")


def test_auto_approved_dm(policy: Policy) -> None:
    request = make(policy, amount="120", currency="USD", advice=None)
    assert request.auto_approved
    assert "automatically" in dump(cards.outcome_dm(request, "approved").blocks)
    assert "approved automatically" in cards.submitted_text(request)


@pytest.mark.parametrize(("seconds", "words"), [(4 * 3600, "4 hours"), (2 * 86400, "2 days")])
def test_reminder_names_the_request_and_the_wait(pending: Request, seconds: int,
                                                 words: str) -> None:
    dm = cards.reminder_dm(pending, pending.steps[0], seconds)
    assert_valid(dm.blocks)
    assert actions(dm.blocks) == []  # the card carries the buttons; a reminder goes stale
    for text in (dm.text, dump(dm.blocks)):
        assert "PR-42" in text and words in text and "€25,000.00" in text


# --------------------------------------------------------------------------- App Home


def test_home_view_stays_within_slacks_limits(policy: Policy) -> None:
    requests = [make(policy, request_id=i) for i in range(1, 301)]
    view = cards.home_view([(r, r.steps[0]) for r in requests], requests, "U_BOB")
    View(**view).validate_json()
    assert_valid(view["blocks"])
    assert View(**view).to_dict() == view
    assert view["type"] == "home"
    assert len(view["blocks"]) <= 100
    text = dump(view["blocks"])
    assert "Waiting for you (300)" in text and "Your requests (300)" in text
    assert "and 285 more" in text and "and 280 more" in text
    approve_buttons = [a for a in actions(view["blocks"]) if a["action_id"] == "approve"]
    assert len(approve_buttons) == cards.HOME_WAITING_MAX
    assert any(a["action_id"] == ActionId.OPEN_REQUEST_MODAL for a in actions(view["blocks"]))


def test_empty_home_view(policy: Policy) -> None:
    view = cards.home_view([], [], "U_BOB")
    View(**view).validate_json()
    text = dump(view["blocks"])
    assert "Nothing waits for your decision" in text and "no requests yet" in text


def test_home_view_shows_each_requests_status(policy: Policy, pending: Request) -> None:
    approved = ok_approve(pending, policy, 0, "U_BOB", T0 + HOUR)
    view = cards.home_view([], [approved], "U_ALICE")
    assert "pending at *Finance* (step 2 of 2), waiting for <@U_FIN1> or <@U_FIN2>" in dump(
        view["blocks"])


# --------------------------------------------------------------------------- through slack_sdk


@pytest.mark.parametrize("text", ["Approve", "*b* <!channel> &amp; é🎉", "x" * 74, "x" * 75,
                                  "x" * 76, "y" * 150, "y" * 151, "z" * 2000, "z" * 2001,
                                  "w" * 3000, "w" * 3001, "&lt;" * 1000])
def test_block_constructors_render_what_slack_sdk_renders(text: str) -> None:
    """``bot.blocks`` makes exactly slack_sdk's dicts, the text clipped to Slack's limit."""
    fields = [text, "*Amount*\n$1.00"]
    assert bk.header(text) == HeaderBlock(text=clip(text, 150)).to_dict()
    assert bk.section(text) == SectionBlock(
        text=MarkdownTextObject(text=clip(text, 3000))).to_dict()
    assert bk.section(text, fields=fields) == SectionBlock(
        text=MarkdownTextObject(text=clip(text, 3000)),
        fields=[MarkdownTextObject(text=clip(f, 2000)) for f in fields]).to_dict()
    assert bk.context(text) == ContextBlock(
        elements=[MarkdownTextObject(text=clip(text, 2000))]).to_dict()
    assert bk.divider() == DividerBlock().to_dict()
    buttons = [bk.button(text, "approve", '{"r":1,"s":0}', style="primary"),
               bk.button(text, "reject", style="danger"), bk.button(text, "ask", "v")]
    models = [ButtonElement(text=clip(text, 75), action_id="approve", value='{"r":1,"s":0}',
                            style="primary"),
              ButtonElement(text=clip(text, 75), action_id="reject", style="danger"),
              ButtonElement(text=clip(text, 75), action_id="ask", value="v")]
    assert buttons == [m.to_dict() for m in models]
    assert bk.actions(*buttons) == ActionsBlock(elements=models).to_dict()
    for block in (bk.header(text), bk.section(text, fields=fields), bk.context(text),
                  bk.actions(*buttons), bk.divider()):
        assert_valid([block])
        parsed = Block.parse(block)
        assert parsed is not None  # the same keys in the same order: the same JSON is sent
        assert json.dumps(block) == json.dumps(parsed.to_dict())

POLICY = load_policy(EXAMPLE_POLICY)
CROWD = tuple(f"U_PERSON{i:03d}" for i in range(60))  # enough mentions to need clipping


def histories(request: Request, texts: dict[str, Any]) -> list[Request]:
    """``request`` (pending) in every state a card can show, with ``texts`` typed in."""
    def moved(out: Any) -> Request | None:
        return None if out.refusal is not None else out.request

    p, first = POLICY, request.steps[0]
    reason, question, answer = texts["reason"], texts["question"], texts["answer"]
    approved = moved(approve(request, Approve(step=0, actor="U_BOB", at=T0 + HOUR), policy=p))
    assert approved is not None
    out: list[Request | None] = [
        request, approved,
        request.with_step(first.model_copy(update={
            "notes": texts["notes"], "assignees": (*first.assignees, *CROWD),
            "escalated_to": CROWD, "escalated_at": T0 + HOUR})),
        moved(reject(request, Reject(step=0, actor="U_BOB", reason=reason, at=T0 + HOUR),
                     policy=p)),
        moved(cancel(request, Cancel(actor="U_ALICE", at=T0 + HOUR), policy=p)),
        moved(escalate(request, Escalate(step=0, at=T0 + 48 * HOUR), policy=p)),
        request.model_copy(update={"status": RequestStatus.REJECTED, "ended_by": SYSTEM,
                                   "outcome_reason": reason}),
    ]
    current = approved.current
    if current is not None:
        out.append(moved(reject(approved, Reject(step=current.index, actor=current.assignees[0],
                                                 reason=reason, at=T0 + 2 * HOUR), policy=p)))
    delegated = moved(hand_over(request, HandOver(step=0, frm="U_BOB", to="U_DAVE",
                                                  at=T0 + HOUR), policy=p))
    assert delegated is not None
    out += [delegated, moved(approve(delegated, Approve(step=0, actor="U_DAVE", at=T0 + 2 * HOUR),
                                     policy=p))]
    asked = moved(ask_info(request, AskInfo(step=0, actor="U_BOB", question=question,
                                            at=T0 + HOUR), policy=p))
    if asked is not None:
        answered = moved(answer_info(asked, AnswerInfo(step=0, actor="U_ALICE", answer=answer,
                                                       at=T0 + 2 * HOUR), policy=p))
        out.append(asked)
        if answered is not None:
            again = moved(ask_info(answered, AskInfo(step=0, actor="U_BOB", question=question,
                                                     at=T0 + 3 * HOUR), policy=p))
            out += [answered, again,
                    moved(approve(answered, Approve(step=0, actor="U_BOB", at=T0 + 4 * HOUR),
                                  policy=p))]
            if again is not None:
                out.append(moved(reject(again, Reject(step=0, actor="U_BOB", reason=reason,
                                                      at=T0 + 4 * HOUR), policy=p)))
    level = texts["level"]
    return [r.model_copy(update={"steps": tuple(s.model_copy(update={"level": level})
                                                for s in r.steps)}) if level else r
            for r in out if r is not None]


def every_message(request: Request) -> list[cards.Message]:
    """Every message the builders make about ``request``, for every viewer."""
    out = [cards.outcome_dm(request, notice) for notice in ("approved", "rejected", "cancelled",
                                                            "escalated")]
    for step in request.steps:
        out += [cards.approval_card(request, step, viewer=viewer)
                for viewer in ("U_BOB", "U_FIN1", "U_ALICE", "U_DAVE", CROWD[0], None)]
        out += [cards.reminder_dm(request, step, 2 * 86400),
                cards.outcome_dm(request, "escalated", step=step)]
        for index, question in enumerate(step.questions):
            out.append(cards.question_dm(request, step, index))
            if question.answer is not None:
                out.append(cards.answer_reply(request, step, index))
    return out


def check_every_block(texts: dict[str, Any],
                      routes: tuple[tuple[str, str], ...] = (("25000", "EUR"),
                                                             ("150000", "USD"))) -> None:
    advice = Advice(recommendation="reject", risk="high", summary=texts["advice"],
                    commentary=texts["advice"], note=texts["advice"],
                    flags=({"code": texts["advice"], "detail": texts["advice"],
                            "evidence": [texts["advice"]] * 3, "source": "llm"},) * 6)
    for amount, currency in routes:
        request = make(POLICY, amount=amount, currency=currency, purpose=texts["purpose"],
                       vendor=texts["vendor"], cost_center=texts["cost_center"], advice=advice)
        requests = histories(request, texts)
        for one in requests:
            for message in every_message(one):
                assert_valid(message.blocks)
                assert 0 < len(message.text) <= cards.FALLBACK_TEXT
        home = cards.home_view([(r, s) for r in requests for s in r.steps], requests, "U_BOB")
        assert_valid(home["blocks"])


def _texts(purpose: str, vendor: str, cost_center: str, reason: str, question: str,
           answer: str, notes: tuple[str, ...], level: str, advice: str) -> dict[str, Any]:
    return {"purpose": purpose, "vendor": vendor, "cost_center": cost_center, "reason": reason,
            "question": question, "answer": answer, "notes": notes, "level": level,
            "advice": advice}


# Longest texts that still show in full, one character more, far more, and text that only
# goes over its limit once escaped (every ``<>&`` becomes an entity).
LIMIT_CASES = {
    "short": _texts("Laptops", "Acme", "ENG-001", "Over budget", "Why?", "Because", ("Away",),
                    "", "Fine."),
    "at_limits": _texts("p" * 2980, "v" * 1980, "c" * 1980, "r" * 2500, "q" * 2000, "a" * 2500,
                        ("n" * 300,) * 6, "L" * 1980, "s" * 700),
    "over_limits": _texts("p" * 2981, "v" * 1981, "c" * 1981, "r" * 2501, "q" * 2001,
                          "a" * 2501, ("n" * 301,) * 6, "L" * 1981, "s" * 701),
    "far_over": _texts("p" * 15000, "v" * 5000, "c" * 3000, "r" * 10000, "q" * 5000,
                       "a" * 5000, ("n" * 1000,) * 40, "L" * 5000, "s" * 5000),
    "escaped_over": _texts("<&>" * 1000, "<!channel>" * 200, "&" * 400, "<@U1|x>" * 400,
                           "<" * 700, ">" * 700, ("&" * 100,) * 12, "<!here>&" * 300,
                           "<https://x|y>" * 300),
    "mrkdwn": _texts("*bold* _it_ ~s~ `c` > q\n" * 200, "*V*\n_v_", "`cc`",
                     "<!everyone>\n> x\n" * 300, "```" * 900, "~" * 3000, ("*\n_",) * 3,
                     "*L*\n`x`", "<@U_DIR> approve\n" * 200),
}


@pytest.mark.parametrize("texts", list(LIMIT_CASES.values()), ids=list(LIMIT_CASES))
def test_every_block_round_trips_through_slack_sdk(texts: dict[str, Any]) -> None:
    """Every message block is exactly what slack_sdk makes of it, and within Slack's limits."""
    check_every_block(texts)


_ALPHABET = st.one_of(st.characters(codec="utf-8"), st.sampled_from("<>&*_`~|!@#;>\n é🎉"))
_TEXT = st.one_of(
    st.text(_ALPHABET, max_size=40),
    st.tuples(st.text(_ALPHABET, min_size=1, max_size=8),
              st.integers(1, 1200)).map(lambda t: t[0] * t[1]))


# No shrinking: each example renders hundreds of messages, and shrinking texts this long
# takes minutes; a failure shows the example as generated.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(texts=st.builds(_texts, purpose=_TEXT.map(lambda t: f"p {t}"), vendor=_TEXT,
                       cost_center=_TEXT, reason=_TEXT, question=_TEXT, answer=_TEXT,
                       notes=st.lists(_TEXT, max_size=4).map(tuple), level=_TEXT,
                       advice=_TEXT))
def test_random_texts_keep_every_block_valid(texts: dict[str, Any]) -> None:
    check_every_block(texts, routes=(("150000", "USD"),))


# --------------------------------------------------------------------------- /purchase answers


def test_status_text(policy: Policy, pending: Request) -> None:
    approved = ok_approve(pending, policy, 0, "U_BOB", T0 + HOUR)
    text = cards.status_text(approved)
    assert text.startswith("*PR-42*")
    assert "pending at *Finance*" in text and "<@U_FIN1> or <@U_FIN2>" in text
    assert "✅ Manager (<@U_BOB>" in text and "⏳ Finance" in text
    assert len(text) <= 3000


def test_list_text(policy: Policy, pending: Request) -> None:
    other = make(policy, requester="U_BOB", request_id=43, amount="900", currency="USD",
                 purpose="Monitor <!channel>")
    text = cards.list_text([pending], [(other, other.steps[0])])
    assert "*Waiting for your decision* (1)" in text and "*PR-43*" in text
    assert "*Your requests* (1)" in text and "*PR-42*" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text
    assert "no requests" in cards.list_text([], [])
    many = cards.list_text([pending] * 30, [], limit=20)
    assert "and 10 more" in many


def test_submitted_text_tells_the_new_id(pending: Request) -> None:
    text = cards.submitted_text(pending)
    assert "*PR-42*" in text and "<@U_BOB>" in text and "Manager, step 1 of 2" in text
