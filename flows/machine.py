"""The approval state machine: pure transitions from (state, command) to (state, effects).

Every transition takes the current :class:`~flows.model.Request`, one command (a frozen
model per user action or timer) and the policy the request is pinned to, and returns an
:class:`Outcome`: the new request, the effects a shell must carry out (audit entries,
cards, DMs, timers) and, when the command is refused, a :class:`Refusal` saying why.
Nothing here reads a clock, a database or Slack; time arrives as ``at`` on each command.
That is what lets a Slack listener, a timer tick, a CLI or a Temporal workflow drive the
same core the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from flows.delegation import Delegations, resolve
from flows.errors import RequestInvalid, Unroutable
from flows.model import Advice, Question, Request, RequestStatus, Step, StepStatus
from flows.money import MAX_AMOUNT, convert
from flows.policy import Policy
from flows.routing import PlannedLevel, first_eligible_above, plan_route, settle_assignees

SYSTEM = "system"

# --------------------------------------------------------------------------- commands


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Submit(_Command):
    requester: str
    amount: Decimal
    currency: str
    purpose: str
    vendor: str | None = None
    cost_center: str | None = None
    at: datetime


class Approve(_Command):
    step: int
    actor: str
    at: datetime


class Reject(_Command):
    step: int
    actor: str
    reason: str
    at: datetime


class Cancel(_Command):
    actor: str
    at: datetime


class Remind(_Command):
    step: int
    due_at: datetime
    at: datetime


class Escalate(_Command):
    step: int
    at: datetime


class HandOver(_Command):
    """Move ``step`` from assignee ``frm`` to ``to`` (a delegation starting or ending)."""

    step: int
    frm: str
    to: str
    at: datetime


class AskInfo(_Command):
    """An assignee asks the requester a question; the step's clocks pause."""

    step: int
    actor: str
    question: str
    at: datetime


class AnswerInfo(_Command):
    """The requester answers the open question; the step's clocks resume."""

    step: int
    actor: str
    answer: str
    at: datetime


# --------------------------------------------------------------------------- effects


class TimerKind(StrEnum):
    REMIND = "remind"
    ESCALATE = "escalate"


class Notice(StrEnum):
    """What a requester is told by DM."""

    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"


@dataclass(frozen=True, slots=True)
class Audit:
    event: str
    actor: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendCard:
    """Send an approval card for ``step`` to ``user``."""

    step: int
    user: str


@dataclass(frozen=True, slots=True)
class UpdateCards:
    """Update every card already sent for ``step`` to show its current state."""

    step: int


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell ``user`` (the requester) about an outcome."""

    user: str
    notice: Notice
    step: int | None = None


@dataclass(frozen=True, slots=True)
class SendReminder:
    step: int
    user: str
    waited_seconds: int


@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: TimerKind
    step: int
    due_at: datetime


@dataclass(frozen=True, slots=True)
class CancelTimers:
    step: int


@dataclass(frozen=True, slots=True)
class AskRequester:
    """DM the requester question ``question`` of ``step``, with a button to answer."""

    step: int
    question: int


@dataclass(frozen=True, slots=True)
class DeliverAnswer:
    """Post the requester's answer to question ``question`` in the asker's card thread."""

    step: int
    question: int


Effect = (Audit | SendCard | UpdateCards | Notify | SendReminder | SetTimer | CancelTimers
          | AskRequester | DeliverAnswer)


class RefusalCode(StrEnum):
    NOT_ASSIGNEE = "not_assignee"
    STEP_NOT_PENDING = "step_not_pending"
    REQUEST_NOT_PENDING = "request_not_pending"
    NOT_REQUESTER = "not_requester"
    REASON_REQUIRED = "reason_required"
    SEPARATION_OF_DUTIES = "separation_of_duties"
    QUESTION_OPEN = "question_open"
    NO_QUESTION = "no_question"
    TEXT_REQUIRED = "text_required"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: RefusalCode
    message: str


@dataclass(frozen=True, slots=True)
class Outcome:
    request: Request
    effects: tuple[Effect, ...] = ()
    refusal: Refusal | None = None

    @property
    def changed(self) -> bool:
        return self.refusal is None and bool(self.effects)


@dataclass(slots=True)
class _Builder:
    effects: list[Effect] = field(default_factory=list)

    def add(self, *effects: Effect) -> None:
        self.effects.extend(effects)


# --------------------------------------------------------------------------- submit


def validate_submission(cmd: Submit, policy: Policy) -> Decimal:
    """Check a submission's input; return its amount in the base currency."""
    if not cmd.amount.is_finite() or cmd.amount <= 0:
        raise RequestInvalid("amount", "the amount must be more than zero")
    if cmd.amount > MAX_AMOUNT:
        raise RequestInvalid("amount", "the amount must be at most 1,000,000,000,000")
    exponent = cmd.amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and cmd.amount != cmd.amount.quantize(
            Decimal("0.01")):
        raise RequestInvalid("amount", "use at most two decimals")
    if not cmd.purpose.strip():
        raise RequestInvalid("purpose", "say what is bought and why")
    return convert(cmd.amount, cmd.currency, base=policy.currency, rates=policy.rates)


def submit(cmd: Submit, *, request_id: int, policy: Policy, policy_version: str,
           advice: Advice | None = None, delegations: Delegations | None = None) -> Outcome:
    """Create request ``request_id``: route it, auto-approve it or start its first level.

    Raises :class:`RequestInvalid` for bad input and :class:`Unroutable` when a level the
    request needs has no way to find an approver; nothing is created then.
    """
    base_amount = validate_submission(cmd, policy)
    planned = plan_route(policy, requester=cmd.requester, base_amount=base_amount,
                         needs_a_human=advice is not None and bool(advice.flags))
    auto = _auto_approves(policy, base_amount, advice)
    # the first level starts at once: built started, rather than built and then copied
    first = (_first_started(planned[0], cmd.requester, policy, cmd.at, delegations or {})
             if planned and not auto else None)
    steps = tuple(Step(index=i, level=p.name, reason=p.reason, listed=p.listed)
                  for i, p in enumerate(planned) if i or first is None)
    if first is not None:
        steps = (first[0], *steps)
    request = Request(
        id=request_id, requester=cmd.requester, amount=cmd.amount, currency=cmd.currency,
        base_amount=base_amount, base_currency=policy.currency,
        vendor=(cmd.vendor or "").strip() or None, purpose=cmd.purpose.strip(),
        cost_center=(cmd.cost_center or "").strip() or None, policy_version=policy_version,
        steps=steps, created_at=cmd.at, updated_at=cmd.at, advice=advice)
    out = _Builder()
    out.add(Audit("submitted", cmd.requester, {
        "amount": str(cmd.amount), "currency": cmd.currency,
        "base_amount": str(base_amount), "base_currency": policy.currency,
        "vendor": request.vendor, "purpose": request.purpose,
        "cost_center": request.cost_center, "policy_version": policy_version,
        "route": [{"level": s.level, "reason": s.reason, "approvers": list(s.listed)}
                  for s in steps],
    }))
    if advice is not None:
        out.add(Audit("annotated", SYSTEM, advice.model_dump(mode="json")))
    if auto:
        assert policy.auto_approve is not None
        request = request.model_copy(update={
            "status": RequestStatus.APPROVED, "auto_approved": True, "steps": (),
            "ended_by": SYSTEM})
        out.add(Audit("auto_approved", SYSTEM, {
            "under": str(policy.auto_approve.under),
            "base_amount": str(base_amount)}),
            Notify(cmd.requester, Notice.APPROVED))
        return Outcome(request, tuple(out.effects))
    if not steps:  # no level applies to this amount: nobody has anything to decide
        request = request.model_copy(update={"status": RequestStatus.APPROVED,
                                             "auto_approved": True, "ended_by": SYSTEM})
        out.add(Audit("auto_approved", SYSTEM, {"reason": "no approval level applies",
                                                "base_amount": str(base_amount)}),
                Notify(cmd.requester, Notice.APPROVED))
        return Outcome(request, tuple(out.effects))
    if first is None:  # nobody may decide the first level: ended as a level that starts
        request = _start_step(request, 0, policy, cmd.at, out, delegations or {})
    else:
        out.add(*first[1])
    return Outcome(request, tuple(out.effects))


def _auto_approves(policy: Policy, base_amount: Decimal, advice: Advice | None) -> bool:
    """Below ``auto_approve.under`` (strict) and no advisor flag: the advisor's veto hook."""
    if policy.auto_approve is None or base_amount >= policy.auto_approve.under:
        return False
    return advice is None or not advice.flags


def _first_started(level: PlannedLevel, requester: str, policy: Policy, at: datetime,
                   delegations: Delegations) -> tuple[Step, list[Effect]] | None:
    """A new request's first level, started as :func:`_start_step` starts a level (nobody
    decided anything yet), with its effects; ``None`` when nobody may decide it."""
    try:
        settled = settle_assignees(policy, level, requester=requester, earlier_deciders=())
    except Unroutable:
        return None
    assignees, on_behalf, notes = _delegated(settled.assignees, delegations, at,
                                             requester=requester, deciders=())
    started = Step(index=0, level=level.name, reason=level.reason, listed=level.listed,
                   status=StepStatus.PENDING, assignees=assignees, on_behalf=on_behalf,
                   notes=(*settled.notes, *notes), started_at=at)
    return started, _started_effects(0, assignees, policy, at)


def _start_step(request: Request, index: int, policy: Policy, at: datetime,
                out: _Builder, delegations: Delegations) -> Request:
    """Start level ``index``: settle who decides it, send cards, set its timers."""
    step = request.steps[index]
    deciders = request.deciders
    try:
        settled = settle_assignees(
            policy, _planned(step), requester=request.requester, earlier_deciders=deciders)
    except Unroutable as exc:
        ended = request.with_step(
            step.model_copy(update={"status": StepStatus.CANCELLED}),
            status=RequestStatus.REJECTED, outcome_reason=str(exc), ended_by=SYSTEM,
            updated_at=at)
        out.add(Audit("rejected", SYSTEM, {"step": index, "level": step.level,
                                           "unroutable": True, "reason": str(exc)}),
                Notify(request.requester, Notice.REJECTED, index))
        return ended
    assignees, on_behalf, notes = _delegated(settled.assignees, delegations, at,
                                             requester=request.requester, deciders=deciders)
    started = step.model_copy(update={
        "status": StepStatus.PENDING, "assignees": assignees, "on_behalf": on_behalf,
        "notes": (*settled.notes, *notes), "started_at": at})
    out.add(*_started_effects(index, assignees, policy, at))
    return request.with_step(started, updated_at=at)


def _started_effects(index: int, assignees: tuple[str, ...], policy: Policy,
                     at: datetime) -> list[Effect]:
    """A level starting: a card to each assignee (delegates of those away), its timers."""
    effects: list[Effect] = [SendCard(index, user) for user in assignees]
    if policy.reminders is not None:
        effects.append(SetTimer(TimerKind.REMIND, index, at + policy.reminders.after))
    if policy.escalation is not None:
        effects.append(SetTimer(TimerKind.ESCALATE, index, at + policy.escalation.after))
    return effects


def _excluded(request: Request) -> set[str]:
    return {request.requester, *request.deciders}


def _delegated(users: tuple[str, ...], delegations: Delegations, at: datetime, *,
               requester: str, deciders: tuple[str, ...]
               ) -> tuple[tuple[str, ...], dict[str, str], list[str]]:
    """``users`` with each away approver replaced by their delegate (where eligible: not
    the requester, nor anyone in ``deciders``)."""
    if not delegations:  # nobody is away: what the loop below gives then
        return tuple(dict.fromkeys(users)), {}, []
    excluded = {requester, *deciders}
    out: list[str] = []
    on_behalf: dict[str, str] = {}
    notes: list[str] = []
    for user in users:
        stand_in = resolve(user, delegations, at=at, excluded=excluded)
        if stand_in != user:
            on_behalf.setdefault(stand_in, user)
            notes.append(f"{user} is away; {stand_in} decides on their behalf")
        if stand_in not in out:
            out.append(stand_in)
    return tuple(out), on_behalf, notes


def _planned(step: Step) -> PlannedLevel:
    return PlannedLevel(step.level, step.reason, step.listed)


# --------------------------------------------------------------------------- decisions


def _check_decision(request: Request, step_index: int, actor: str) -> Refusal | Step:
    step = request.step(step_index)
    if step is None:
        return Refusal(RefusalCode.STEP_NOT_PENDING,
                       f"{request.ref} has no such approval step any more.")
    if step.status is not StepStatus.PENDING:
        return Refusal(RefusalCode.STEP_NOT_PENDING, _why_not_pending(request, step))
    if request.status is not RequestStatus.PENDING:  # pragma: no cover - implied above
        return Refusal(RefusalCode.REQUEST_NOT_PENDING, f"{request.ref} is {request.status}.")
    if actor == request.requester:
        return Refusal(RefusalCode.SEPARATION_OF_DUTIES,
                       f"You requested {request.ref}; you cannot decide it.")
    if actor not in step.assignees:
        return Refusal(RefusalCode.NOT_ASSIGNEE,
                       f"You are not an approver of the {step.level} step of {request.ref}.")
    if actor in request.deciders:
        return Refusal(RefusalCode.SEPARATION_OF_DUTIES,
                       f"You already decided a level of {request.ref}; "
                       "one person decides at most one level.")
    return step


def may_decide(request: Request, step_index: int, actor: str) -> Refusal | None:
    """Why ``actor`` may not decide step ``step_index`` now, or ``None`` when they may."""
    checked = _check_decision(request, step_index, actor)
    return checked if isinstance(checked, Refusal) else None


def refusal_audit(refusal: Refusal, *, actor: str, action: str, step: int | None) -> Audit:
    """The ``click_refused`` entry for a refusal found outside a transition."""
    data: dict[str, Any] = {"action": action, "code": refusal.code.value,
                            "reason": refusal.message}
    if step is not None:
        data["step"] = step
    return Audit("click_refused", actor, data)


def _why_not_pending(request: Request, step: Step) -> str:
    if step.status in {StepStatus.APPROVED, StepStatus.REJECTED}:
        when = step.decided_at.strftime("%Y-%m-%d %H:%M UTC") if step.decided_at else ""
        return (f"The {step.level} step of {request.ref} was already {step.status} by "
                f"{step.decided_by} {when}.".replace("  ", " ").replace(" .", "."))
    if step.status is StepStatus.WAITING:
        return f"The {step.level} step of {request.ref} has not started yet."
    return f"{request.ref} is {request.status}; nothing is waiting for a decision."


def _behalf(step: Step, actor: str) -> dict[str, str]:
    principal = step.principal(actor)
    return {"on_behalf_of": principal} if principal != actor else {}


def _refused(request: Request, refusal: Refusal, actor: str, action: str,
             step: int | None) -> Outcome:
    return Outcome(request, (refusal_audit(refusal, actor=actor, action=action, step=step),),
                   refusal)


def approve(request: Request, cmd: Approve, *, policy: Policy,
            delegations: Delegations | None = None) -> Outcome:
    checked = _check_decision(request, cmd.step, cmd.actor)
    if isinstance(checked, Refusal):
        return _refused(request, checked, cmd.actor, "approve", cmd.step)
    step = checked.model_copy(update={"status": StepStatus.APPROVED, "decided_by": cmd.actor,
                                      "decided_at": cmd.at, "paused_at": None})
    request = request.with_step(step, updated_at=cmd.at)
    out = _Builder()
    out.add(Audit("approved", cmd.actor, {"step": step.index, "level": step.level,
                                          **_behalf(step, cmd.actor)}),
            CancelTimers(step.index), UpdateCards(step.index))
    delegations = delegations or {}
    following = step.index + 1
    if following < len(request.steps):
        request = _start_step(request, following, policy, cmd.at, out, delegations)
    else:
        request = request.model_copy(update={"status": RequestStatus.APPROVED,
                                             "ended_by": cmd.actor})
        out.add(Notify(request.requester, Notice.APPROVED, step.index))
    return Outcome(request, tuple(out.effects))


def reject(request: Request, cmd: Reject, *, policy: Policy) -> Outcome:
    del policy  # same signature as every transition
    checked = _check_decision(request, cmd.step, cmd.actor)
    if isinstance(checked, Refusal):
        return _refused(request, checked, cmd.actor, "reject", cmd.step)
    reason = cmd.reason.strip()
    if not reason:
        return Outcome(request, (), Refusal(RefusalCode.REASON_REQUIRED,
                                            "A rejection needs a reason."))
    step = checked.model_copy(update={"status": StepStatus.REJECTED, "decided_by": cmd.actor,
                                      "decided_at": cmd.at, "reason_text": reason,
                                      "paused_at": None})
    request = request.with_step(step, status=RequestStatus.REJECTED, updated_at=cmd.at,
                                outcome_reason=reason, ended_by=cmd.actor)
    return Outcome(request, (
        Audit("rejected", cmd.actor, {"step": step.index, "level": step.level,
                                      "reason": reason, **_behalf(step, cmd.actor)}),
        CancelTimers(step.index), UpdateCards(step.index),
        Notify(request.requester, Notice.REJECTED, step.index)))


def cancel(request: Request, cmd: Cancel, *, policy: Policy) -> Outcome:
    del policy
    if cmd.actor != request.requester:
        refusal = Refusal(RefusalCode.NOT_REQUESTER,
                          f"Only the requester can cancel {request.ref}.")
        return _refused(request, refusal, cmd.actor, "cancel", None)
    if request.status is not RequestStatus.PENDING:
        refusal = Refusal(RefusalCode.REQUEST_NOT_PENDING,
                          f"{request.ref} is already {request.status}; it cannot be cancelled.")
        return _refused(request, refusal, cmd.actor, "cancel", None)
    current = request.current
    effects: list[Effect] = [Audit("cancelled", cmd.actor,
                                   {"step": current.index if current else None})]
    if current is not None:
        request = request.with_step(current.model_copy(update={
            "status": StepStatus.CANCELLED, "decided_at": cmd.at, "paused_at": None}))
        effects += [CancelTimers(current.index), UpdateCards(current.index)]
    request = request.model_copy(update={"status": RequestStatus.CANCELLED,
                                         "updated_at": cmd.at, "ended_by": cmd.actor})
    effects.append(Notify(request.requester, Notice.CANCELLED))
    return Outcome(request, tuple(effects))


# --------------------------------------------------------------------------- timers


def _open_step(request: Request, index: int) -> Step | None:
    step = request.step(index)
    if request.status is not RequestStatus.PENDING or step is None or not step.is_open:
        return None
    return step


def remind(request: Request, cmd: Remind, *, policy: Policy) -> Outcome:
    """Remind every assignee still waiting; schedule the next reminder on the cadence."""
    step = _open_step(request, cmd.step)
    if step is None or policy.reminders is None or step.started_at is None \
            or step.paused_at is not None:
        return Outcome(request)  # decided (or paused) meanwhile: the timer does nothing
    seconds = int(waited(step, cmd.at).total_seconds())  # time spent on questions excluded
    effects: list[Effect] = [SendReminder(step.index, user, seconds) for user in step.assignees]
    effects.append(Audit("reminded", SYSTEM, {"step": step.index, "level": step.level,
                                              "to": list(step.assignees),
                                              "waited_seconds": seconds}))
    effects.append(SetTimer(TimerKind.REMIND, step.index,
                            next_on_cadence(cmd.due_at, policy.reminders.every, cmd.at)))
    return Outcome(request, tuple(effects))


def next_on_cadence(due_at: datetime, every: timedelta, now: datetime) -> datetime:
    """The first time after ``now`` on the cadence ``due_at + k * every`` (k >= 1)."""
    if now < due_at + every:
        return due_at + every
    missed = (now - due_at) // every
    return due_at + (missed + 1) * every


def escalation_targets(request: Request, step: Step, policy: Policy, *,
                       delegations: Delegations | None = None,
                       at: datetime | None = None) -> tuple[str, ...]:
    """Who a step escalates to, with separation of duties (and delegation) applied."""
    assert policy.escalation is not None
    excluded = _excluded(request)
    targets: list[str] = []
    if policy.escalation.to == "manager":
        for user in step.assignees:
            boss = policy.manager_of(step.principal(user))
            if boss is not None and boss in excluded:
                boss = first_eligible_above(policy, boss, excluded=excluded)
            if boss is not None:
                targets.append(boss)
    else:
        targets.extend(u for u in policy.escalation.to if u not in excluded)
    if delegations and at is not None:
        targets = [resolve(u, delegations, at=at, excluded=excluded) for u in targets]
    return tuple(u for u in dict.fromkeys(targets) if u not in step.assignees)


def escalate(request: Request, cmd: Escalate, *, policy: Policy,
             delegations: Delegations | None = None) -> Outcome:
    """Add the escalation targets to the step's assignees, once per step."""
    step = _open_step(request, cmd.step)
    if step is None or policy.escalation is None or step.escalated_at is not None \
            or step.paused_at is not None:
        return Outcome(request)
    targets = escalation_targets(request, step, policy, delegations=delegations, at=cmd.at)
    escalated = step.model_copy(update={"assignees": (*step.assignees, *targets),
                                        "escalated_to": targets, "escalated_at": cmd.at})
    request = request.with_step(escalated, updated_at=cmd.at)
    effects: list[Effect] = [Audit("escalated", SYSTEM, {
        "step": step.index, "level": step.level, "from": list(step.assignees),
        "to": list(targets),
        **({} if targets else {"note": "nobody eligible to escalate to"})})]
    if targets:
        effects += [UpdateCards(step.index), *(SendCard(step.index, u) for u in targets),
                    Notify(request.requester, Notice.ESCALATED, step.index)]
    return Outcome(request, tuple(effects))


# --------------------------------------------------------------------------- dispatch

# --------------------------------------------------------------------------- delegation


def hand_over(request: Request, cmd: HandOver, *, policy: Policy) -> Outcome:
    """Give ``cmd.frm``'s place on a pending step to ``cmd.to`` (or hand it back)."""
    del policy
    step = _open_step(request, cmd.step)
    if step is None or cmd.frm not in step.assignees or cmd.frm == cmd.to:
        return Outcome(request)
    if cmd.to in _excluded(request):
        return Outcome(request)  # separation of duties wins: the step stays where it is
    principal = step.principal(cmd.frm)
    on_behalf = {k: v for k, v in step.on_behalf.items() if k != cmd.frm}
    if cmd.to != principal:
        on_behalf[cmd.to] = principal
    assignees = tuple(dict.fromkeys(cmd.to if u == cmd.frm else u for u in step.assignees))
    moved = step.model_copy(update={"assignees": assignees, "on_behalf": on_behalf})
    request = request.with_step(moved, updated_at=cmd.at)
    return Outcome(request, (
        Audit("delegated", SYSTEM, {"step": step.index, "level": step.level,
                                    "from": cmd.frm, "to": cmd.to,
                                    "on_behalf_of": principal}),
        UpdateCards(step.index), SendCard(step.index, cmd.to)))


# --------------------------------------------------------------------------- more information


def ask_info(request: Request, cmd: AskInfo, *, policy: Policy) -> Outcome:
    """An assignee asks the requester a question; reminders and escalation pause."""
    del policy
    checked = _check_decision(request, cmd.step, cmd.actor)
    if isinstance(checked, Refusal):
        return _refused(request, checked, cmd.actor, "request_info", cmd.step)
    question = cmd.question.strip()
    if not question:
        return Outcome(request, (), Refusal(RefusalCode.TEXT_REQUIRED, "Ask a question."))
    if checked.open_question is not None:
        refusal = Refusal(RefusalCode.QUESTION_OPEN,
                          f"{request.ref} already waits for the requester's answer to "
                          f"{checked.open_question.by}'s question.")
        return _refused(request, refusal, cmd.actor, "request_info", cmd.step)
    asked = checked.model_copy(update={
        "questions": (*checked.questions, Question(by=cmd.actor, text=question,
                                                   asked_at=cmd.at)),
        "paused_at": cmd.at})
    request = request.with_step(asked, updated_at=cmd.at)
    return Outcome(request, (
        Audit("info_requested", cmd.actor, {"step": asked.index, "level": asked.level,
                                            "question": question}),
        CancelTimers(asked.index), UpdateCards(asked.index),
        AskRequester(asked.index, len(asked.questions) - 1)))


def answer_info(request: Request, cmd: AnswerInfo, *, policy: Policy) -> Outcome:
    """The requester answers; the asker gets the answer and the clocks resume."""
    refusal = may_answer(request, cmd.step, cmd.actor)
    if refusal is not None:
        return _refused(request, refusal, cmd.actor, "answer_info", cmd.step)
    step = request.steps[cmd.step]
    assert step.open_question is not None  # checked by may_answer
    answer = cmd.answer.strip()
    if not answer:
        return Outcome(request, (), Refusal(RefusalCode.TEXT_REQUIRED, "Write an answer."))
    paused = step.paused_at or cmd.at
    answered = step.open_question.model_copy(update={"answer": answer,
                                                     "answered_at": cmd.at})
    resumed = step.model_copy(update={
        "questions": (*step.questions[:-1], answered), "paused_at": None,
        "paused_seconds": step.paused_seconds + (cmd.at - paused).total_seconds()})
    request = request.with_step(resumed, updated_at=cmd.at)
    effects: list[Effect] = [
        Audit("info_answered", cmd.actor, {"step": step.index, "level": step.level,
                                           "question": answered.text, "answer": answer,
                                           "paused_seconds": int((cmd.at - paused)
                                                                 .total_seconds())}),
        DeliverAnswer(step.index, len(resumed.questions) - 1), UpdateCards(step.index)]
    effects += resume_timers(resumed, policy, cmd.at)
    return Outcome(request, tuple(effects))


def may_answer(request: Request, step_index: int, actor: str) -> Refusal | None:
    """Why ``actor`` may not answer the open question of step ``step_index`` now, or ``None``."""
    if actor != request.requester:
        return Refusal(RefusalCode.NOT_REQUESTER,
                       f"Only the requester can answer questions about {request.ref}.")
    step = _open_step(request, step_index)
    if step is None or step.open_question is None:
        return Refusal(RefusalCode.NO_QUESTION,
                       f"No question about {request.ref} waits for an answer any more.")
    return None


def waited(step: Step, at: datetime) -> timedelta:
    """How long ``step`` has waited for a decision, not counting time spent on questions."""
    assert step.started_at is not None
    paused = timedelta(seconds=step.paused_seconds)
    if step.paused_at is not None:
        paused += at - step.paused_at
    return at - step.started_at - paused


def resume_timers(step: Step, policy: Policy, at: datetime) -> list[Effect]:
    """Timers that continue the step's clocks from where the question paused them."""
    effects: list[Effect] = []
    elapsed = waited(step, at)
    if policy.reminders is not None:
        first, every = policy.reminders.after, policy.reminders.every
        if elapsed < first:
            due = at + (first - elapsed)
        else:
            due = at + (first + ((elapsed - first) // every + 1) * every - elapsed)
        effects.append(SetTimer(TimerKind.REMIND, step.index, due))
    if policy.escalation is not None and step.escalated_at is None:
        left = policy.escalation.after - elapsed
        effects.append(SetTimer(TimerKind.ESCALATE, step.index,
                                at + max(left, timedelta(0))))
    return effects


# --------------------------------------------------------------------------- dispatch

Command = Approve | Reject | Cancel | Remind | Escalate | HandOver | AskInfo | AnswerInfo


def apply(request: Request, cmd: Command, *, policy: Policy,
          delegations: Delegations | None = None) -> Outcome:
    """Run the transition for ``cmd``: the one entry point every shell uses.

    ``delegations`` are the active out-of-office hand-overs, for steps that start (or
    escalate) during this transition.
    """
    if isinstance(cmd, Approve):
        return approve(request, cmd, policy=policy, delegations=delegations)
    if isinstance(cmd, Reject):
        return reject(request, cmd, policy=policy)
    if isinstance(cmd, Cancel):
        return cancel(request, cmd, policy=policy)
    if isinstance(cmd, Remind):
        return remind(request, cmd, policy=policy)
    if isinstance(cmd, HandOver):
        return hand_over(request, cmd, policy=policy)
    if isinstance(cmd, AskInfo):
        return ask_info(request, cmd, policy=policy)
    if isinstance(cmd, AnswerInfo):
        return answer_info(request, cmd, policy=policy)
    return escalate(request, cmd, policy=policy, delegations=delegations)
