"""Properties of the state machine under random sequences of commands.

A request of a random amount and currency is submitted, then hit by random approvals,
rejections, cancellations, reminders and escalations from a small pool of people (the
requester, listed approvers, managers, strangers), on random or current steps, with time
moving forward. After every command the invariants below must hold, and the audit effects of
the whole history must form a hash chain that verifies and that breaks where it is tampered.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flows.audit import GENESIS, Entry, make_entry, verify
from flows.errors import Unroutable
from flows.machine import (
    AnswerInfo,
    Approve,
    AskInfo,
    Audit,
    Cancel,
    Command,
    Escalate,
    HandOver,
    Outcome,
    Reject,
    Remind,
    SendCard,
    Submit,
    apply,
    submit,
)
from flows.model import Advice, Request, RequestStatus, StepStatus
from flows.policy import Policy, parse_policy

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

# Listed approvers overlap across levels and with managers, so separation of duties bites.
_DIRECTORY = """\
directory:
  U_ALICE: {manager: U_BOB}
  U_BOB: {manager: U_CAROL}
  U_FIN1: {manager: U_CAROL}
  U_FIN2: {manager: U_BOB}
  U_DIR: {manager: U_CEO}
  U_CAROL: {manager: U_CEO}
levels:
  - {name: Manager, approvers: manager}
  - {name: Finance, over: 1000, approvers: [U_FIN1, U_FIN2, U_BOB]}
  - {name: Director, over: 5000, approvers: [U_DIR, U_CAROL]}
  - {name: Board, over: 20000, approvers: [U_CAROL]}
"""
POLICIES = [
    parse_policy("version: 1\ncurrency: USD\nrates: {EUR: 1.08, GBP: 1.27}\n" + _DIRECTORY
                 + "auto_approve: {under: 100}\nreminders: {after: 1h, every: 2h}\n"
                 "escalation: {after: 3h, to: manager}\n"),
    parse_policy("version: 1\ncurrency: EUR\nrates: {USD: 0.93}\n" + _DIRECTORY
                 + "escalation: {after: 30m, to: [U_CEO, U_ALICE, U_FIN2]}\n"),
]
PEOPLE = ["U_ALICE", "U_BOB", "U_CAROL", "U_FIN1", "U_FIN2", "U_DIR", "U_CEO", "U_STRANGER",
          "system"]
REQUESTERS = ["U_ALICE", "U_BOB", "U_FIN1", "U_FIN2", "U_DIR", "U_CAROL", "U_CEO"]
FLAG = {"code": "new_vendor", "detail": "first order from Acme", "evidence": []}


@dataclass(frozen=True)
class Move:
    """A command before it meets the request: who and which step may be resolved late."""

    kind: str
    actor: str | int  # a person, or the index of one of the current step's assignees
    step: int | None  # None: the current step
    later: timedelta
    reason: str = ""


# amounts around every threshold (100, 1000, 5000, 20000 in either base currency), and any
cents = st.integers(min_value=1, max_value=6_000_000).map(lambda c: Decimal(c) / 100)
near = st.builds(lambda t, d: t + Decimal(d) / 100, st.sampled_from(
    [Decimal(t) for t in ("100", "1000", "5000", "20000", "925.93", "4629.63", "18518.52")]),
    st.integers(min_value=-2, max_value=2))
amounts = st.one_of(cents, near, st.integers(min_value=20001, max_value=60000).map(Decimal))
# an assignee of the current step (an index) is likelier than anyone else
actors = st.one_of(st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=3),
                   st.sampled_from(PEOPLE))
moves = st.builds(
    Move,
    kind=st.sampled_from(["approve", "approve", "approve", "reject", "cancel", "remind",
                          "escalate", "ask", "answer", "handover"]),
    actor=actors,
    step=st.one_of(st.none(), st.none(), st.integers(min_value=-1, max_value=4)),
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=8)),
    reason=st.sampled_from(["", "  ", "over budget", "not needed"]),
)


def _command(request: Request, move: Move, at: datetime) -> Command:
    current = request.current
    step = move.step if move.step is not None else (current.index if current else 0)
    actor = move.actor
    if isinstance(actor, int):
        actor = current.assignees[actor % len(current.assignees)] if current else "U_STRANGER"
    if move.kind == "approve":
        return Approve(step=step, actor=actor, at=at)
    if move.kind == "reject":
        return Reject(step=step, actor=actor, reason=move.reason, at=at)
    if move.kind == "cancel":
        return Cancel(actor=actor, at=at)
    if move.kind == "remind":
        return Remind(step=step, due_at=at - move.later / 2, at=at)
    if move.kind == "ask":
        return AskInfo(step=step, actor=actor, question=move.reason or "which model?", at=at)
    if move.kind == "answer":
        return AnswerInfo(step=step, actor=actor, answer=move.reason, at=at)
    if move.kind == "handover":
        frm = current.assignees[0] if current else "U_BOB"
        return HandOver(step=step, frm=frm, to=actor, at=at)
    return Escalate(step=step, at=at)


@dataclass
class History:
    request: Request
    audits: list[tuple[Audit, datetime]]


def _check(request: Request) -> None:
    """The invariants that hold for every state a request can be in."""
    assert isinstance(request.status, RequestStatus)
    assert sum(request.status is status for status in RequestStatus) == 1
    pending = [s for s in request.steps if s.status is StepStatus.PENDING]
    assert len(pending) <= 1
    if request.status is RequestStatus.PENDING:
        assert len(pending) == 1 and not request.auto_approved
    else:
        assert not pending
        assert request.ended_by is not None
    deciders = [s.decided_by for s in request.steps if s.decided_by is not None]
    assert len(deciders) == len(set(deciders)), "someone decided two levels"
    assert request.requester not in deciders, "the requester decided"
    principals = [s.principal(s.decided_by) for s in request.steps if s.decided_by]
    assert len(set(deciders) | set(principals)) == len(deciders) + len(
        [p for p, d in zip(principals, deciders, strict=True) if p != d]), \
        "someone decided two levels, in person or through a delegate"
    for step in request.steps:
        if step.status in {StepStatus.APPROVED, StepStatus.REJECTED}:
            assert step.decided_by is not None and step.decided_at is not None
            assert step.decided_by in step.assignees
        else:
            assert step.decided_by is None
        if step.status is not StepStatus.WAITING:
            earlier = {s.decided_by for s in request.steps[:step.index]} | {
                s.principal(s.decided_by) for s in request.steps[:step.index] if s.decided_by}
            assert request.requester not in step.assignees
            assert not earlier & set(step.assignees)
        if step.paused_at is not None:
            assert step.status is StepStatus.PENDING and step.open_question is not None
    for before, after in pairwise(request.steps):
        if after.status is not StepStatus.WAITING:
            assert before.status is StepStatus.APPROVED, "a level started out of order"


def _run(policy: Policy, requester: str, amount: Decimal, currency: str, flagged: bool,
         script: list[Move]) -> History | None:
    advice = Advice(flags=(FLAG,)) if flagged else None
    cmd = Submit(requester=requester, amount=amount, currency=currency,
                 purpose="Laptops for new hires", vendor="Acme", at=T0)
    try:
        outcome = submit(cmd, request_id=1, policy=policy, policy_version="v1", advice=advice)
    except Unroutable:
        assert policy.manager_of(requester) is None
        return None
    request, at = outcome.request, T0
    audits = [(e, at) for e in outcome.effects if isinstance(e, Audit)]
    _check_effects(request, outcome)
    _check(request)
    for move in script:
        at += move.later
        before = request
        command = _command(request, move, at)
        outcome = apply(request, command, policy=policy)
        request = outcome.request
        paused = before.current is not None and before.current.paused_at is not None
        if paused and isinstance(command, Remind | Escalate):
            assert not outcome.effects, "a paused clock fired"
        if outcome.refusal is not None or not outcome.effects:
            assert request == before, "a refused or idle command changed the request"
            assert all(isinstance(e, Audit) and e.event == "click_refused"
                       for e in outcome.effects)
        if isinstance(command, AnswerInfo) and outcome.refusal is None:
            assert command.actor == requester
        for step in before.steps:
            if step.decided_by is not None:
                assert request.steps[step.index].decided_by == step.decided_by
                assert request.steps[step.index].status is step.status
        if before.status is not RequestStatus.PENDING:
            assert request == before, "an ended request changed"
        _check_effects(request, outcome)
        _check(request)
        audits += [(e, at) for e in outcome.effects if isinstance(e, Audit)]
    decided = Counter(a.data["step"] for a, _ in audits if a.event in {"approved", "rejected"})
    assert all(count == 1 for count in decided.values()), "a step was decided twice"
    assert all(a.actor != requester for a, _ in audits if a.event in {"approved", "rejected"})
    event(f"ended {request.status}, {len(decided)} of {len(request.steps)} steps decided")
    event("escalated" if any(a.event == "escalated" for a, _ in audits) else "not escalated")
    return History(request, audits)


def _check_effects(request: Request, outcome: Outcome) -> None:
    for effect in outcome.effects:
        if isinstance(effect, SendCard):
            step = request.steps[effect.step]
            assert effect.user != request.requester
            assert effect.user in step.assignees
            assert effect.user not in request.deciders


def _chain(history: History) -> list[Entry]:
    entries: list[Entry] = []
    prev = GENESIS
    for seq, (audit, at) in enumerate(history.audits, start=1):
        entry = make_entry(seq=seq, prev_hash=prev, request="PR-1", event=audit.event,
                           actor=audit.actor, at=at, data=audit.data)
        entries.append(entry)
        prev = entry.hash
    return entries


PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(policy=st.sampled_from(POLICIES), requester=st.sampled_from(REQUESTERS),
       amount=amounts, currency=st.sampled_from(["USD", "EUR"]), flagged=st.booleans(),
       script=st.lists(moves, max_size=30))
def test_invariants_hold_after_every_command(policy: Policy, requester: str, amount: Decimal,
                                             currency: str, flagged: bool,
                                             script: list[Move]) -> None:
    _run(policy, requester, amount, currency, flagged, script)


@PROPERTY
@given(policy=st.sampled_from(POLICIES), requester=st.sampled_from(REQUESTERS[:-1]),
       amount=amounts, currency=st.sampled_from(["USD", "EUR"]),
       script=st.lists(moves, min_size=1, max_size=20), data=st.data())
def test_audit_effects_form_a_chain_that_verifies_and_breaks_where_tampered(
        policy: Policy, requester: str, amount: Decimal, currency: str, script: list[Move],
        data: st.DataObject) -> None:
    history = _run(policy, requester, amount, currency, False, script)
    assert history is not None
    entries = _chain(history)
    assert entries[0].event == "submitted" and entries[0].actor == requester
    head = (entries[-1].seq, entries[-1].hash)
    assert verify(entries, head=head) is None
    assert verify([], head=None) is None

    index = data.draw(st.integers(min_value=0, max_value=len(entries) - 1), label="entry")
    seq = index + 1
    victim = entries[index]

    altered = [*entries]
    change = data.draw(st.sampled_from(["data", "event", "actor", "at"]), label="change")
    if change == "data":
        altered[index] = replace(victim, data={**victim.data, "tampered": True})
    elif change == "event":
        altered[index] = replace(victim, event="approved" if victim.event != "approved"
                                 else "rejected")
    elif change == "actor":
        altered[index] = replace(victim, actor="U_MALLORY")
    else:
        altered[index] = replace(victim, at="2000-01-01T00:00:00.000000+00:00")
    broken = verify(altered, head=head)
    assert broken is not None and broken.seq == seq, broken

    dropped = entries[:index] + entries[index + 1:]
    broken = verify(dropped, head=head)
    assert broken is not None and broken.seq == seq, broken

    if index + 1 < len(entries):
        swapped = [*entries]
        swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
        broken = verify(swapped, head=head)
        assert broken is not None and broken.seq == seq, broken
        # the same swap with the sequence numbers rewritten to look consecutive
        renumbered = [replace(e, seq=i) for i, e in enumerate(swapped, start=1)]
        broken = verify(renumbered, head=head)
        assert broken is not None and broken.seq == seq, broken
