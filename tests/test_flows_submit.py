"""Submission and the rules advisor, made cheaper, decide exactly as before.

``submit`` as it was (copied below, on today's models and routing) and as it is must give
equal outcomes -- the same request, field for field, the same JSON, the same fields set,
and the same effects in the same order -- for random policies, requesters, amounts,
currencies, advice and delegations. The step model's ``on_behalf`` default became a factory;
a step built with the old default is compared with one built now.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.delegation import Delegation, Delegations, resolve
from flows.errors import RequestInvalid, Unroutable
from flows.machine import (
    SYSTEM,
    Audit,
    Notice,
    Notify,
    Outcome,
    SendCard,
    SetTimer,
    Submit,
    TimerKind,
    _Builder,
    submit,
    validate_submission,
)
from flows.model import Advice, Flag, Request, RequestStatus, Step, StepStatus
from flows.policy import Policy, parse_policy
from flows.routing import PlannedLevel, plan_route, settle_assignees
from tests.test_machine_properties import POLICIES, REQUESTERS, T0, amounts

# --------------------------------------------------------------------------- the reference
# flows/machine.py's submit as of 51e0381.


def ref_submit(cmd: Submit, *, request_id: int, policy: Policy, policy_version: str,
               advice: Advice | None = None,
               delegations: Delegations | None = None) -> Outcome:
    base_amount = validate_submission(cmd, policy)
    planned = plan_route(policy, requester=cmd.requester, base_amount=base_amount,
                         needs_a_human=advice is not None and bool(advice.flags))
    steps = tuple(Step(index=i, level=p.name, reason=p.reason, listed=p.listed)
                  for i, p in enumerate(planned))
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
    if ref_auto_approves(policy, base_amount, advice):
        assert policy.auto_approve is not None
        request = request.model_copy(update={
            "status": RequestStatus.APPROVED, "auto_approved": True, "steps": (),
            "ended_by": SYSTEM})
        out.add(Audit("auto_approved", SYSTEM, {
            "under": str(policy.auto_approve.under),
            "base_amount": str(base_amount)}),
            Notify(cmd.requester, Notice.APPROVED))
        return Outcome(request, tuple(out.effects))
    if not steps:
        request = request.model_copy(update={"status": RequestStatus.APPROVED,
                                             "auto_approved": True, "ended_by": SYSTEM})
        out.add(Audit("auto_approved", SYSTEM, {"reason": "no approval level applies",
                                                "base_amount": str(base_amount)}),
                Notify(cmd.requester, Notice.APPROVED))
        return Outcome(request, tuple(out.effects))
    request = ref_start_step(request, 0, policy, cmd.at, out, delegations or {})
    return Outcome(request, tuple(out.effects))


def ref_auto_approves(policy: Policy, base_amount: Decimal, advice: Advice | None) -> bool:
    if policy.auto_approve is None or base_amount >= policy.auto_approve.under:
        return False
    return advice is None or not advice.flags


def ref_start_step(request: Request, index: int, policy: Policy, at: datetime,
                   out: _Builder, delegations: Delegations) -> Request:
    step = request.steps[index]
    try:
        settled = settle_assignees(
            policy, PlannedLevel(step.level, step.reason, step.listed),
            requester=request.requester, earlier_deciders=request.deciders)
    except Unroutable as exc:
        ended = request.with_step(
            step.model_copy(update={"status": StepStatus.CANCELLED}),
            status=RequestStatus.REJECTED, outcome_reason=str(exc), ended_by=SYSTEM,
            updated_at=at)
        out.add(Audit("rejected", SYSTEM, {"step": index, "level": step.level,
                                           "unroutable": True, "reason": str(exc)}),
                Notify(request.requester, Notice.REJECTED, index))
        return ended
    assignees, on_behalf, notes = ref_delegated(settled.assignees, request, delegations, at)
    started = step.model_copy(update={
        "status": StepStatus.PENDING, "assignees": assignees, "on_behalf": on_behalf,
        "notes": (*settled.notes, *notes), "started_at": at})
    for user in assignees:
        out.add(SendCard(index, user))
    if policy.reminders is not None:
        out.add(SetTimer(TimerKind.REMIND, index, at + policy.reminders.after))
    if policy.escalation is not None:
        out.add(SetTimer(TimerKind.ESCALATE, index, at + policy.escalation.after))
    return request.with_step(started, updated_at=at)


def ref_delegated(users: tuple[str, ...], request: Request, delegations: Delegations,
                  at: datetime) -> tuple[tuple[str, ...], dict[str, str], list[str]]:
    excluded = {request.requester, *request.deciders}
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


class OldStep(Step):
    """The step model as it was: ``on_behalf`` defaulting to a (deep-copied) ``{}``."""

    on_behalf: dict[str, str] = {}  # noqa: RUF012 - the old definition, as it was


# --------------------------------------------------------------------------- comparisons


def _shape(request: Request) -> Any:
    """What equality of pydantic models leaves out: which fields were set, model by model."""
    return (request.model_fields_set, [s.model_fields_set for s in request.steps],
            request.advice.model_fields_set if request.advice else None)


def _result(cmd: Submit, fn: Any, **kwargs: Any) -> Any:
    try:
        outcome = fn(cmd, **kwargs)
    except (RequestInvalid, Unroutable) as exc:
        return type(exc), str(exc)
    return (outcome, outcome.request.model_dump_json(), _shape(outcome.request),
            [type(e) for e in outcome.effects])


PEOPLE = ["U_ALICE", "U_BOB", "U_CAROL", "U_FIN1", "U_FIN2", "U_DIR", "U_CEO", "U_EVE"]
# a first level of listed approvers: the requester among them, or alone with nobody above
LISTED_FIRST = parse_policy("""\
version: 1
currency: USD
directory:
  U_ALICE: {manager: U_BOB}
  U_FIN2: {manager: U_CEO}
levels:
  - {name: Finance, approvers: [U_FIN1]}
  - {name: Pair, over: 500, approvers: [U_FIN1, U_FIN2]}
  - {name: Manager, over: 2000, approvers: manager}
reminders: {after: 1h, every: 1h}
""")
delegations = st.dictionaries(
    st.sampled_from(PEOPLE),
    st.builds(Delegation, delegate=st.sampled_from(PEOPLE),
              until=st.sampled_from([T0 - timedelta(hours=1), T0, T0 + timedelta(days=2)])),
    max_size=4)
advices = st.one_of(
    st.none(), st.just(Advice()),
    st.builds(Advice, recommendation=st.sampled_from(["approve", "review", "reject"]),
              risk=st.sampled_from(["low", "medium", "high"]), summary=st.text(max_size=20),
              flags=st.lists(st.builds(Flag, code=st.sampled_from(["new_vendor", "duplicate"]),
                                       detail=st.text(max_size=10),
                                       evidence=st.lists(st.text(max_size=8), max_size=2)),
                             max_size=2).map(tuple),
              sources=st.just(("rules",))))
words = st.sampled_from(["", " ", "Acme", " Acme Inc. ", "ENG-001", "  Laptops for the team  "])
purposes = st.sampled_from(["Laptops for the team", "  Monitors for the lab  ", "Acme", " "])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from([*POLICIES, LISTED_FIRST]),
       requester=st.sampled_from([*REQUESTERS, "U_EVE"]),
       amount=st.one_of(amounts, st.sampled_from([Decimal(0), Decimal("-5"), Decimal("1.005"),
                                                  Decimal("1E+13")])),
       currency=st.sampled_from(["USD", "USD", "EUR", "GBP", "JPY"]), advice=advices,
       delegations=st.none() | delegations, vendor=st.none() | words,
       cost_center=st.none() | words, purpose=purposes, request_id=st.integers(0, 10**9))
def test_submit_decides_as_before(policy: Policy, requester: str, amount: Decimal,
                                  currency: str, advice: Advice | None,
                                  delegations: dict[str, Delegation] | None, vendor: str | None,
                                  cost_center: str | None, purpose: str,
                                  request_id: int) -> None:
    cmd = Submit(requester=requester, amount=amount, currency=currency, purpose=purpose,
                 vendor=vendor, cost_center=cost_center, at=T0)
    kwargs: dict[str, Any] = {"request_id": request_id, "policy": policy,
                              "policy_version": "v1", "advice": advice,
                              "delegations": delegations}
    assert _result(cmd, submit, **kwargs) == _result(cmd, ref_submit, **kwargs)


@pytest.mark.parametrize("fields", [
    {"index": 0, "level": "Manager", "reason": "applies to every request", "listed": ("U_B",)},
    {"index": 1, "level": "Finance", "reason": "x", "listed": ["U_F1", "U_F2"],
     "on_behalf": {"U_D": "U_F1"}, "status": "pending", "assignees": ["U_D", "U_F2"]},
])
def test_a_step_is_built_as_before(fields: dict[str, Any]) -> None:
    now, old = Step(**fields), OldStep(**fields)
    assert now.model_dump_json() == old.model_dump_json()
    assert now.__dict__ == old.__dict__ and now.model_fields_set == old.model_fields_set
    assert now.on_behalf is not Step(**fields).on_behalf  # each its own dict, as before
    assert Step.model_validate_json(old.model_dump_json()) == now
