"""Block Kit builders: domain objects in, Slack messages and views out. Pure functions.

Each builder takes :mod:`flows.model` values (never a database session or a client) and
returns what Slack needs:

* messages -- :func:`approval_card`, :func:`question_dm`, :func:`answer_reply`,
  :func:`outcome_dm`, :func:`reminder_dm` -- as a :class:`Message` (``blocks`` plus the plain
  ``text`` fallback Slack shows in notifications). They are on the hot path (every card sent
  or updated), so their blocks are plain dicts from :mod:`bot.blocks`, with no validation at
  run time: every text is clipped to Slack's limit for its place instead, and the tests
  parse every block back through :mod:`slack_sdk.models` (``Block.parse(b).to_dict() == b``),
  which checks the structure and the limits slack_sdk knows;
* views -- :func:`request_modal`, :func:`reject_modal`, :func:`ask_modal`,
  :func:`answer_modal` -- as the ``view`` dict for ``views.open``, built with
  :class:`slack_sdk.models.views.View`, whose ``to_dict()`` checks Slack's limits on every
  block before anything is sent; :func:`home_view`, published on every change, is
  :mod:`bot.blocks` dicts like the cards, checked as they are;
* answers to ``/purchase`` -- :func:`submitted_text`, :func:`status_text`, :func:`list_text`
  -- as mrkdwn strings.

Everything a person typed (purpose, vendor, cost center, a rejection's reason) and whatever
the advisor wrote is escaped and clipped (:func:`bot.text.safe`); amounts are always shown in
full (``$120,000.00``), never abbreviated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from babel.numbers import get_currency_name
from slack_sdk.models.blocks import (
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.blocks import (
    FIELD_TEXT,
    SECTION_TEXT,
    Block,
    actions,
    button,
    context,
    divider,
    header,
    section,
)
from bot.ids import ActionId, CallbackId, InputId, RejectMetadata, RequestModalMetadata, StepValue
from bot.text import clip, duration_words, escape, quote, safe, user, users, when
from flows.machine import SYSTEM, Notice
from flows.model import Advice, Flag, Request, RequestStatus, Step, StepStatus

# Slack's limits, in characters (https://api.slack.com/reference/block-kit/blocks); those of
# the blocks in messages (SECTION_TEXT, FIELD_TEXT, ...) are in bot.blocks, which clips to them.
OPTION_TEXT = 75
VIEW_TITLE = 24
VIEW_BLOCKS = 100
FALLBACK_TEXT = 3000  # Slack takes 40,000; a notification needs far less

# Longest inputs the modals accept: what a card can show in full in one field.
PURPOSE_MAX = 2000
VENDOR_MAX = 150
COST_CENTER_MAX = 50
REASON_MAX = 2000
REASON_SHOWN = REASON_MAX + 500  # a whole reason, with room for its escaping

HOME_WAITING_MAX = 15  # each takes two blocks
HOME_MINE_MAX = 20

_RISK_MARK = {"low": "🟢", "medium": "🟠", "high": "🔴"}


@dataclass(frozen=True, slots=True)
class Message:
    """A message to post or update: ``blocks`` and the notification fallback ``text``."""

    text: str
    blocks: list[Block]

    def as_kwargs(self) -> dict[str, Any]:
        """``chat.postMessage`` / ``chat.update`` keyword arguments."""
        return {"text": self.text, "blocks": self.blocks}


def _message(text: str, blocks: list[Block]) -> Message:
    return Message(text=clip(text, FALLBACK_TEXT), blocks=blocks)


# --------------------------------------------------------------------------- shared pieces


def step_label(request: Request, step: Step) -> str:
    """``Finance, step 2 of 3`` (mrkdwn-safe)."""
    return f"{escape(step.level)}, step {step.index + 1} of {len(request.steps)}"


def _amount(request: Request) -> str:
    return escape(request.amount_text)


def _headline(request: Request) -> str:
    """``*PR-42* · *€25,000.00 (= $27,000.00)* · from <@U_ALICE>``."""
    return f"*{request.ref}* · *{_amount(request)}* · from {user(request.requester)}"


def _unroutable(request: Request) -> bool:
    return request.status is RequestStatus.REJECTED and request.ended_by == SYSTEM


def describe(request: Request) -> str:
    """Where a request stands, in one mrkdwn line: ``⏳ pending at *Finance* (step 2 of 3)…``."""
    if request.status is RequestStatus.PENDING:
        current = request.current
        if current is None:
            return "⏳ pending"
        return (f"⏳ pending at *{escape(current.level)}* (step {current.index + 1} of "
                f"{len(request.steps)}), waiting for {users(current.assignees)}")
    if request.status is RequestStatus.APPROVED:
        return "✅ approved automatically" if request.auto_approved else "✅ approved"
    if request.status is RequestStatus.CANCELLED:
        return "🚫 cancelled by the requester"
    reason = safe(request.outcome_reason or "no reason given", 500)
    if _unroutable(request):
        return f"❌ could not be routed: {reason}"
    by = f" by {user(request.ended_by)}" if request.ended_by else ""
    return f"❌ rejected{by}: {reason}"


def _decision_buttons(request: Request, step: Step) -> Block:
    value = StepValue(request_id=request.id, step=step.index).encode()
    approve = button("Approve", ActionId.APPROVE.value, value, style="primary")
    reject = button("Reject", ActionId.REJECT.value, value, style="danger")
    if step.open_question is not None:
        return actions(approve, reject)
    return actions(approve, reject, button("Ask a question", ActionId.REQUEST_INFO.value, value))


def decider(step: Step) -> str:
    """``<@BOB>``, or ``<@BOB>, on behalf of <@CAROL>`` when Bob stood in for Carol."""
    who = step.decided_by or ""
    principal = step.principal(who)
    return user(who) + (f", on behalf of {user(principal)}" if principal != who else "")


def _questions(step: Step) -> list[Block]:
    blocks: list[Block] = []
    for question in step.questions[-3:]:
        text = f"❓ {user(question.by)} asked:\n{quote(safe(question.text, 800))}"
        if question.answer is not None:
            text += f"\n💬 Answer:\n{quote(safe(question.answer, 1500))}"
        elif step.status is StepStatus.PENDING:
            text += "\n_Waiting for the requester's answer; reminders are paused._"
        blocks.append(section(text))
    return blocks


def _can_decide(step: Step, viewer: str | None) -> bool:
    return step.status is StepStatus.PENDING and viewer is not None and viewer in step.assignees


def _code(flag: Flag) -> str:
    """A flag's code as mrkdwn inline code, backticks inside removed."""
    return f"`{escape(flag.code.replace('`', '')) or 'flag'}`"


def _flag_line(flag: Flag) -> str:
    line = f"• {_code(flag)}" + (" _(AI)_" if flag.source == "llm" else "")
    if flag.detail:
        line += f": {safe(flag.detail, 500)}"
    if flag.evidence:
        line += f" _(evidence: {safe(', '.join(flag.evidence), 300)})_"
    return line


def advice_text(advice: Advice) -> str:
    """The advisor's annotation: verdict and risk at a glance, summary, then each flag;
    the LLM's commentary, or the note saying why it is missing, last."""
    risk = advice.risk.lower()
    mark = _RISK_MARK.get(risk, "⚪")
    lines = [f"*Advisor:* recommends *{escape(advice.recommendation)}* · "
             f"{mark} risk *{escape(advice.risk)}*"]
    if advice.summary:
        lines.append(safe(advice.summary, 500))
    lines.extend(_flag_line(flag) for flag in advice.flags)
    if advice.commentary:
        lines.append(f"🤖 _AI:_ {safe(advice.commentary, 700)}")
    if advice.note:
        lines.append(f"ℹ️ _{safe(advice.note, 200)}_")
    return clip("\n".join(lines), SECTION_TEXT)


def _advice_glance(advice: Advice | None) -> str:
    if advice is None:
        return ""
    flags = ", ".join(_code(f) for f in advice.flags)
    glance = f"Advisor: {escape(advice.recommendation)}, risk {escape(advice.risk)}"
    return glance + (f" · {flags}" if flags else "")


# --------------------------------------------------------------------------- approval card


def approval_card(request: Request, step: Step, *, viewer: str | None) -> Message:
    """The card for ``step`` as ``viewer`` sees it: buttons only for a pending step's assignee.

    The same builder renders the card after the step is decided, cancelled or escalated,
    so every copy of a step's card can be updated in place.
    """
    blocks = [
        header(f"{request.ref} · Purchase approval"),
        section(f"{user(request.requester)} requests *{_amount(request)}*", fields=[
            f"*Amount*\n{_amount(request)}",
            f"*Requested by*\n{user(request.requester)}",
            f"*Vendor*\n{safe(request.vendor or '—', FIELD_TEXT - 20)}",
            f"*Cost center*\n{safe(request.cost_center or '—', FIELD_TEXT - 20)}",
            f"*Level*\n{step_label(request, step)}",
            f"*Submitted*\n{when(request.created_at)}",
        ]),
        section(f"*Purpose*\n{safe(request.purpose, SECTION_TEXT - 20)}"),
    ]

    earlier = [s for s in request.steps[: step.index]
               if s.status is StepStatus.APPROVED and s.decided_by]
    if earlier:
        blocks.append(context("\n".join(
            f"✅ {escape(s.level)}: approved by {user(s.decided_by or '')}"
            + (f", {when(s.decided_at)}" if s.decided_at else "") for s in earlier)))
    if step.notes:
        blocks.append(context("\n".join(f"ℹ️ {safe(note, 300)}" for note in step.notes)))

    if request.advice is not None:
        blocks.append(section(advice_text(request.advice)))
    else:
        blocks.append(context("🤖 No advisor annotation for this request."))

    blocks.extend(_step_state(request, step, viewer))
    return _message(_card_fallback(request, step, viewer), blocks)


def _step_state(request: Request, step: Step, viewer: str | None) -> list[Block]:
    """The bottom of a card: who it waits for and the buttons, or the outcome."""
    if step.status is StepStatus.PENDING:
        out: list[Block] = []
        if step.escalated_to:
            since = f", {when(step.escalated_at)}" if step.escalated_at else ""
            out.append(context(f"⏫ Escalated to {users(step.escalated_to)}{since}"))
        since = f" since {when(step.started_at)}" if step.started_at else ""
        behalf = [f"{user(d)} for {user(p)}" for d, p in step.on_behalf.items()
                  if d in step.assignees]
        out.extend(_questions(step))
        out.append(context(f"⏳ Waiting for {users(step.assignees)}{since}"
                           + (f" ({', '.join(behalf)}, by delegation)" if behalf else "")))
        if viewer is not None and viewer not in step.assignees and viewer in (
                *step.on_behalf.values(),):
            holder = next(d for d, p in step.on_behalf.items() if p == viewer)
            out.append(context(f"↪️ Delegated to {user(holder)} while you are away."))
        if _can_decide(step, viewer):
            out.append(_decision_buttons(request, step))
        return out
    at = f" · {when(step.decided_at)}" if step.decided_at else ""
    if step.status is StepStatus.APPROVED:
        return [*_questions(step), section(f"✅ *Approved* by {decider(step)}{at}")]
    if step.status is StepStatus.REJECTED:
        reason = safe(step.reason_text or "no reason given", REASON_SHOWN)
        return [*_questions(step),
                section(f"❌ *Rejected* by {decider(step)}{at}\n{quote(reason)}")]
    if step.status is StepStatus.CANCELLED:
        if request.status is RequestStatus.CANCELLED:
            return [section(f"🚫 *Cancelled by the requester*{at}")]
        return [section(f"🚫 *Closed*: {describe(request)}")]
    return [context("⏸ This level starts once the earlier levels are approved.")]


def _card_fallback(request: Request, step: Step, viewer: str | None) -> str:
    what = (f"{request.ref}: {_amount(request)} from {user(request.requester)} "
            f"for {safe(request.purpose, 150)}")
    if step.status is StepStatus.PENDING:
        ask = "needs your approval" if _can_decide(step, viewer) else "waits for approval"
        return f"{what} {ask} ({escape(step.level)})"
    return f"{what}: {escape(step.level)} {step.status.value}"


# --------------------------------------------------------------------------- modals


def _currency_option(code: str) -> Option:
    name = get_currency_name(code, locale="en_US")  # the code itself when unknown
    label = f"{code} · {name}" if name and name != code else code
    return Option(value=code, text=clip(label, OPTION_TEXT))


def request_modal(currencies: Sequence[str], *, base_currency: str | None = None,
                  metadata: RequestModalMetadata | None = None) -> dict[str, Any]:
    """The ``/purchase`` modal (``callback_id`` ``purchase_request``).

    ``currencies`` are the accepted codes (the policy's base currency first); the select
    starts on ``base_currency``, or on the first of them.
    """
    if not currencies:
        raise ValueError("at least one currency must be accepted")
    options = [_currency_option(code) for code in list(dict.fromkeys(currencies))[:100]]
    initial = next((o for o in options if o.value == (base_currency or currencies[0])),
                   options[0])
    blocks = [
        InputBlock(
            block_id=InputId.AMOUNT.value, label="Amount",
            hint="Digits, optional thousands separators, at most two decimals: 1,200.50",
            element=PlainTextInputElement(action_id=InputId.AMOUNT.value,
                                          placeholder="1,200.50", max_length=40)),
        InputBlock(
            block_id=InputId.CURRENCY.value, label="Currency",
            element=StaticSelectElement(action_id=InputId.CURRENCY.value, options=options,
                                        initial_option=initial)),
        InputBlock(
            block_id=InputId.VENDOR.value, label="Vendor",
            element=PlainTextInputElement(action_id=InputId.VENDOR.value,
                                          placeholder="Who you are buying from",
                                          max_length=VENDOR_MAX)),
        InputBlock(
            block_id=InputId.PURPOSE.value, label="Purpose",
            hint="What is bought and why: approvers and the advisor read this.",
            element=PlainTextInputElement(action_id=InputId.PURPOSE.value, multiline=True,
                                          placeholder="Laptops for the three new hires "
                                                      "starting in May",
                                          max_length=PURPOSE_MAX)),
        InputBlock(
            block_id=InputId.COST_CENTER.value, label="Cost center", optional=True,
            element=PlainTextInputElement(action_id=InputId.COST_CENTER.value,
                                          placeholder="ENG-001", max_length=COST_CENTER_MAX)),
    ]
    view = View(type="modal", callback_id=CallbackId.PURCHASE_REQUEST.value,
                title="Purchase request", submit="Submit", close="Cancel", blocks=blocks,
                private_metadata=metadata.encode() if metadata else None)
    result: dict[str, Any] = view.to_dict()
    return result


def _text_modal(*, callback: CallbackId, title: str, submit: str, context: str,
                field: InputId, label: str, metadata: RejectMetadata, hint: str | None = None,
                placeholder: str | None = None) -> dict[str, Any]:
    """A modal about one step: what it is about, then one required multi-line input."""
    blocks = [
        SectionBlock(text=MarkdownTextObject(text=clip(context, SECTION_TEXT))),
        InputBlock(block_id=field.value, label=label, hint=hint,
                   element=PlainTextInputElement(action_id=field.value, multiline=True,
                                                 placeholder=placeholder,
                                                 max_length=REASON_MAX)),
    ]
    view = View(type="modal", callback_id=callback.value, title=clip(title, VIEW_TITLE),
                submit=submit, close="Cancel", blocks=blocks,
                private_metadata=metadata.encode())
    result: dict[str, Any] = view.to_dict()
    return result


def _step_context(request: Request, step: Step) -> str:
    return (f"{_headline(request)}\n{step_label(request, step)}\n"
            + quote(safe(request.purpose, 1000)))


def reject_modal(request: Request, step: Step, metadata: RejectMetadata) -> dict[str, Any]:
    """The modal a reject click opens (``callback_id`` ``reject_reason``)."""
    return _text_modal(callback=CallbackId.REJECT_REASON, title=f"Reject {request.ref}",
                       submit="Reject", context=_step_context(request, step),
                       field=InputId.REASON, label="Reason",
                       hint="The requester sees this reason.",
                       placeholder="Why this request is rejected", metadata=metadata)


def ask_modal(request: Request, step: Step, metadata: RejectMetadata) -> dict[str, Any]:
    """The modal ``Ask a question`` opens (``callback_id`` ``request_info``)."""
    return _text_modal(callback=CallbackId.REQUEST_INFO, title=f"Ask about {request.ref}",
                       submit="Ask", context=_step_context(request, step),
                       field=InputId.QUESTION, label="Your question",
                       hint="The requester gets it by DM. Reminders and escalation pause "
                            "until they answer.", metadata=metadata)


def answer_modal(request: Request, step: Step, metadata: RejectMetadata) -> dict[str, Any]:
    """The modal the requester answers a question in (``callback_id`` ``info_answer``)."""
    question = step.open_question
    asked = (f"{user(question.by)} asks:\n{quote(safe(question.text, 1500))}" if question
             else "_No question is open any more._")
    return _text_modal(callback=CallbackId.INFO_ANSWER, title=f"Answer about {request.ref}",
                       submit="Send", context=f"*{request.ref}* · *{_amount(request)}*\n{asked}",
                       field=InputId.ANSWER, label="Your answer", metadata=metadata)


# --------------------------------------------------------------------------- DMs


def question_dm(request: Request, step: Step, index: int) -> Message:
    """The requester's DM with an approver's question and a button to answer it."""
    question = step.questions[index]
    value = StepValue(request_id=request.id, step=step.index).encode()
    blocks: list[Block] = [
        section(f"❓ {user(question.by)} has a question about *{request.ref}* · "
                f"*{_amount(request)}* ({escape(step.level)} level):\n"
                f"{quote(safe(question.text, 2000))}"),
        actions(button("Answer", ActionId.ANSWER_INFO.value, value, style="primary")),
        context("The approval waits for your answer."),
    ]
    return _message(f"{request.ref}: a question from the {step.level} approver", blocks)


def answer_reply(request: Request, step: Step, index: int) -> Message:
    """The requester's answer, posted in the asking approver's card thread."""
    question = step.questions[index]
    blocks: list[Block] = [
        section(f"💬 {user(request.requester)} answered your question about "
                f"*{request.ref}*:\n{quote(safe(question.answer or '', 2500))}"),
        context(f"You asked: {safe(question.text, 500)}"),
    ]
    return _message(f"{request.ref}: the requester answered your question", blocks)


def outcome_dm(request: Request, notice: Notice | str, *, step: Step | None = None) -> Message:
    """The requester's DM for a notice: ``approved``, ``rejected``, ``cancelled``, ``escalated``.

    ``step`` is the step the notice is about (the escalated one); by default the current one.
    """
    notice = Notice(notice)  # an unknown notice is a bug: ValueError
    what = f"*{request.ref}* · *{_amount(request)}*"
    if request.vendor:
        what += f" · {safe(request.vendor, 200)}"
    purpose = f"*Purpose*\n{quote(safe(request.purpose, 1000))}"
    if notice is Notice.APPROVED:
        how = ("was approved automatically: it needed no approver"
               if request.auto_approved else "is approved")
        by = (f", last by {user(request.ended_by)}"
              if request.ended_by and request.ended_by != SYSTEM else "")
        head, text = f"✅ {what} {how}{by}.", f"{request.ref} is approved"
    elif notice is Notice.REJECTED:
        reason = safe(request.outcome_reason or "no reason given", REASON_SHOWN)
        if _unroutable(request):
            head = (f"❌ {what} could not be routed to an approver, so it is closed.\n"
                    f"*Reason*\n{quote(reason)}")
        else:
            decided = next((s for s in request.steps if s.status is StepStatus.REJECTED), None)
            at = f" at the {escape(decided.level)} level" if decided else ""
            by = f" by {user(request.ended_by)}" if request.ended_by else ""
            head = f"❌ {what} was rejected{by}{at}.\n*Reason*\n{quote(reason)}"
        text = f"{request.ref} was rejected"
    elif notice is Notice.CANCELLED:
        head, text = f"🚫 {what} is cancelled.", f"{request.ref} is cancelled"
    else:
        target = step or request.current
        if target is None:
            head = f"⏫ {what} was escalated."
        else:
            head = (f"⏫ {what} waited too long at the {escape(target.level)} level and was "
                    f"escalated to {users(target.escalated_to, conjunction='and')}; any of "
                    f"{users(target.assignees)} can now decide it.")
        text = f"{request.ref} was escalated"
    return _message(text, [section(f"{head}\n{purpose}")])


def reminder_dm(request: Request, step: Step, waited_seconds: int) -> Message:
    """A reminder to a waiting approver: names ``PR-<n>``, the amount and how long it waited."""
    waited = duration_words(waited_seconds)
    head = (f"⏰ *{request.ref}* has waited *{waited}* for your decision "
            f"({step_label(request, step)}).")
    body = (f"{user(request.requester)} requests *{_amount(request)}*"
            + (f" from {safe(request.vendor, 200)}" if request.vendor else "")
            + f"\n{quote(safe(request.purpose, 1000))}")
    blocks: list[Block] = [
        section(f"{head}\n{body}"),
        context("Approve or reject it on its card in this conversation, or in the App Home."),
    ]
    text = f"Reminder: {request.ref} · {_amount(request)} has waited {waited} for your decision"
    return _message(text, blocks)


# --------------------------------------------------------------------------- App Home


def _more(hidden: int, what: str) -> list[Block]:
    if hidden <= 0:
        return []
    return [context(f"…and {hidden} more {what}: `/purchase list` shows them all.")]


def home_view(waiting: Sequence[tuple[Request, Step]], mine: Sequence[Request], user_id: str,
              *, waiting_max: int = HOME_WAITING_MAX, mine_max: int = HOME_MINE_MAX,
              waiting_total: int | None = None, mine_total: int | None = None
              ) -> dict[str, Any]:
    """The App Home of ``user_id``: what waits for their decision, then their own requests.

    ``waiting_total`` and ``mine_total`` say how many there are in all when the lists given
    are only the first ones (by default, their lengths).
    At most ``waiting_max`` and ``mine_max`` are shown, each list in the order given, with
    a count of the rest, so the view stays within Slack's 100 blocks.
    """
    waiting_total = len(waiting) if waiting_total is None else waiting_total
    mine_total = len(mine) if mine_total is None else mine_total
    blocks = [
        header("Purchase approvals"),
        actions(button("New request", ActionId.OPEN_REQUEST_MODAL.value, style="primary")),
        header(f"Waiting for you ({waiting_total})"),
    ]
    if not waiting:
        blocks.append(section("_Nothing waits for your decision._"))
    for request, step in waiting[:waiting_max]:
        glance = _advice_glance(request.advice)
        blocks.append(section(
            f"{_headline(request)}\n{step_label(request, step)}"
            f"{' · ' + glance if glance else ''}\n{quote(safe(request.purpose, 300))}"))
        if _can_decide(step, user_id):
            blocks.append(_decision_buttons(request, step))
    blocks += _more(waiting_total - min(len(waiting), waiting_max), "waiting for you")
    blocks += [divider(), header(f"Your requests ({mine_total})")]
    if not mine:
        blocks.append(section("_You have no requests yet. Start one with_ `/purchase`."))
    for request in mine[:mine_max]:
        blocks.append(section(f"*{request.ref}* · *{_amount(request)}* · {describe(request)}"
                              f"\n{quote(safe(request.purpose, 200))}"))
    blocks += _more(mine_total - min(len(mine), mine_max), "of your requests")
    # plain dicts, as the cards' (the tests check them against slack_sdk's models): the
    # View model parsed every block and rendered it again, 2.5 ms a Home of 35 requests,
    # ten times the building of it
    return {"type": "home", "blocks": blocks[:VIEW_BLOCKS]}


# --------------------------------------------------------------------------- /purchase answers


def submitted_text(request: Request) -> str:
    """The requester's answer right after a submission: the new ``PR-<n>`` and what follows."""
    head = f"Submitted *{request.ref}*: *{_amount(request)}* for {safe(request.purpose, 300)}."
    if request.status is RequestStatus.PENDING and request.current is not None:
        step = request.current
        return (f"{head}\nIt waits for {users(step.assignees)} "
                f"({step_label(request, step)}). I'll DM you the outcome.")
    return clip(f"{head}\n{describe(request)}", SECTION_TEXT)


def intake_failed_text(ref: str, reason: str) -> str:
    """A DM: an acknowledged submission could not become a request after all."""
    return (f"Sorry: *{escape(ref)}* could not be created ({safe(reason, 300)}), so nobody "
            "was asked to approve it. Please submit it again.")


def _route(request: Request) -> str:
    marks = {StepStatus.WAITING: "·", StepStatus.PENDING: "⏳", StepStatus.APPROVED: "✅",
             StepStatus.REJECTED: "❌", StepStatus.CANCELLED: "🚫"}
    parts = []
    for step in request.steps:
        part = f"{marks[step.status]} {escape(step.level)}"
        if step.decided_by:
            part += f" ({user(step.decided_by)}"
            part += f", {when(step.decided_at)})" if step.decided_at else ")"
        parts.append(part)
    return " → ".join(parts)


def status_text(request: Request) -> str:
    """``/purchase status PR-42``: state, current level and who it waits for, and the route."""
    lines = [f"*{request.ref}* · {describe(request)}"]
    current = request.current
    if current is not None and current.started_at is not None:
        lines[0] += f" since {when(current.started_at)}"
    detail = f"{user(request.requester)} requests *{_amount(request)}*"
    if request.vendor:
        detail += f" from {safe(request.vendor, 200)}"
    if request.cost_center:
        detail += f" · cost center {safe(request.cost_center, 60)}"
    lines += [detail, quote(safe(request.purpose, 1000))]
    if request.steps:
        lines.append(f"Route: {_route(request)}")
    lines.append(f"Submitted {when(request.created_at)}")
    return clip("\n".join(lines), SECTION_TEXT)


def list_text(mine: Sequence[Request], waiting: Sequence[tuple[Request, Step]], *,
              limit: int = 20) -> str:
    """``/purchase list``: what waits for the user's decision, then the user's requests."""
    if not mine and not waiting:
        return ("You have no requests, and nothing waits for your decision. "
                "Start one with `/purchase`.")
    lines: list[str] = []
    if waiting:
        lines.append(f"*Waiting for your decision* ({len(waiting)})")
        lines += [f"• {_headline(r)} · {step_label(r, s)} — {safe(r.purpose, 100)}"
                  for r, s in waiting[:limit]]
        if len(waiting) > limit:
            lines.append(f"…and {len(waiting) - limit} more (see the App Home)")
    if mine:
        lines.append(f"*Your requests* ({len(mine)})")
        lines += [f"• *{r.ref}* · *{_amount(r)}* · {describe(r)} — {safe(r.purpose, 100)}"
                  for r in mine[:limit]]
        if len(mine) > limit:
            lines.append(f"…and {len(mine) - limit} more (see the App Home)")
    return clip("\n".join(lines), 12000)


__all__ = [
    "Message",
    "advice_text",
    "approval_card",
    "describe",
    "home_view",
    "list_text",
    "outcome_dm",
    "reject_modal",
    "reminder_dm",
    "request_modal",
    "status_text",
    "step_label",
    "submitted_text",
]
