"""What route a request would take under a policy, worked out without creating anything.

:func:`explain` answers ``approvals policy explain``: it converts the amount, picks the levels
with :func:`flows.routing.plan_route`, and settles each level's approvers with
:func:`flows.routing.settle_assignees` exactly as the state machine does when the level
starts. Who decides an earlier level is not known in advance, so a level with a single
assignee is assumed decided by that person (and that person is left out of later levels);
a level with several possible deciders only says that whoever decides it is left out later.
Escalation targets come from :func:`flows.machine.escalation_targets`, the machine's rule.
Pure: policy and numbers in, an :class:`Explanation` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from flows.durations import format_duration
from flows.errors import Unroutable
from flows.machine import escalation_targets
from flows.model import Request, Step, StepStatus
from flows.money import convert, format_money
from flows.policy import Policy
from flows.routing import PlannedLevel, level_applies, plan_route, settle_assignees

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LevelRoute:
    """One level the request would go through."""

    name: str
    reason: str
    listed: tuple[str, ...]
    assignees: tuple[str, ...]  # empty when nobody eligible is left (see ``unroutable``)
    notes: tuple[str, ...]  # exclusions and substitutions, in words
    escalates_to: tuple[str, ...]
    unroutable: str | None = None
    manager_of: str | None = None  # set when the level is the requester's manager


@dataclass(frozen=True, slots=True)
class Explanation:
    amount: Decimal
    currency: str
    base_amount: Decimal
    base_currency: str
    rate: Decimal | None  # None when the amount is in the base currency
    requester: str
    levels: tuple[LevelRoute, ...]
    skipped: tuple[tuple[str, str], ...]  # (level, why it does not apply)
    auto_approved: bool  # approved with no human unless the advisor raises a flag
    auto_reason: str
    reminders: str
    escalation: str

    @property
    def amount_text(self) -> str:
        """``€25,000.00 at 1.08 = $27,000.00``, or ``$9,000.00``."""
        text = format_money(self.amount, self.currency)
        if self.rate is not None:
            text += f" at {self.rate} = {format_money(self.base_amount, self.base_currency)}"
        return text

    @property
    def unroutable(self) -> str | None:
        """Why the request would end as unroutable, if it would."""
        return next((level.unroutable for level in self.levels if level.unroutable), None)


def explain(policy: Policy, *, amount: Decimal, currency: str, requester: str) -> Explanation:
    """The route a request of ``amount`` ``currency`` by ``requester`` would take.

    Raises :class:`~flows.errors.RequestInvalid` for a currency the policy does not accept
    and :class:`~flows.errors.Unroutable` when submission itself would be refused.
    """
    base = convert(amount, currency, base=policy.currency, rates=policy.rates)
    planned = plan_route(policy, requester=requester, base_amount=base)
    auto_approved, auto_reason = _auto(policy, base, planned)
    return Explanation(
        amount=amount, currency=currency, base_amount=base, base_currency=policy.currency,
        rate=policy.rates[currency] if currency != policy.currency else None,
        requester=requester,
        levels=_settle_all(policy, planned, requester=requester),
        skipped=tuple((level.name, f"{_money(policy, base)} is not over "
                                   f"{_money(policy, level.over)}")
                      for level in policy.levels
                      if level.over is not None and not level_applies(level, base)),
        auto_approved=auto_approved,
        auto_reason=auto_reason,
        reminders=_reminders(policy),
        escalation=_escalation(policy),
    )


def _money(policy: Policy, value: Decimal) -> str:
    return format_money(value, policy.currency)


def _auto(policy: Policy, base: Decimal,
          planned: tuple[PlannedLevel, ...]) -> tuple[bool, str]:
    if policy.auto_approve is not None and base < policy.auto_approve.under:
        return True, (f"{_money(policy, base)} is under "
                      f"{_money(policy, policy.auto_approve.under)}: auto-approved if the "
                      "advisor raises no flag; otherwise it takes the route below")
    if not planned:
        return True, "no level applies to this amount: approved with no human decision"
    if policy.auto_approve is None:
        return False, "the policy has no auto-approval"
    return False, (f"no auto-approval: {_money(policy, base)} is not under "
                   f"{_money(policy, policy.auto_approve.under)}")


def _settle_all(policy: Policy, planned: tuple[PlannedLevel, ...], *,
                requester: str) -> tuple[LevelRoute, ...]:
    deciders: list[str] = []  # earlier levels with a single assignee: that person decides
    open_levels: list[tuple[str, tuple[str, ...]]] = []  # earlier levels with several
    routes: list[LevelRoute] = []
    managed = {level.name for level in policy.levels if level.uses_manager}
    for position, level in enumerate(planned):
        manager_of = requester if level.name in managed else None
        try:
            settled = settle_assignees(policy, level, requester=requester,
                                       earlier_deciders=deciders)
        except Unroutable as exc:
            routes.append(LevelRoute(level.name, level.reason, level.listed, (), (),
                                     (), unroutable=str(exc), manager_of=manager_of))
            break
        notes = list(settled.notes)
        for earlier, candidates in open_levels:
            notes += _if_they_decide(policy, level, requester, deciders, earlier,
                                     [u for u in settled.assignees if u in candidates])
        later = position + 1 < len(planned)
        if len(settled.assignees) > 1 and later:
            notes.append(f"whoever decides {level.name} is left out of later levels")
        routes.append(LevelRoute(
            level.name, level.reason, level.listed, settled.assignees, tuple(notes),
            _escalation_targets(policy, requester, deciders, settled.assignees),
            manager_of=manager_of))
        if len(settled.assignees) == 1:
            deciders.append(settled.assignees[0])
        else:
            open_levels.append((level.name, settled.assignees))
    return tuple(routes)


def _if_they_decide(policy: Policy, level: PlannedLevel, requester: str, deciders: list[str],
                    earlier: str, overlap: list[str]) -> list[str]:
    """Notes for people who may or may not have decided an earlier level."""
    notes: list[str] = []
    for user in overlap:
        note = f"if {user} decides {earlier}, {user} is left out here"
        try:
            alternative = settle_assignees(policy, level, requester=requester,
                                           earlier_deciders=[*deciders, user])
        except Unroutable:
            note += " and nobody eligible is left: the request would end as unroutable"
        else:
            if alternative.assignees and set(alternative.assignees).isdisjoint(
                    level.listed):
                note += f" and {', '.join(alternative.assignees)} takes the level"
        notes.append(note)
    return notes


def _escalation_targets(policy: Policy, requester: str, deciders: list[str],
                        assignees: tuple[str, ...]) -> tuple[str, ...]:
    """Ask the machine's own rule, on a stand-in request with the earlier levels decided."""
    if policy.escalation is None:
        return ()
    decided = [Step(index=i, level=f"level {i}", reason="", listed=(user,), assignees=(user,),
                    status=StepStatus.APPROVED, decided_by=user)
               for i, user in enumerate(deciders)]
    step = Step(index=len(decided), level="this", reason="", listed=assignees,
                assignees=assignees, status=StepStatus.PENDING)
    request = Request(id=0, requester=requester, amount=Decimal(1), currency=policy.currency,
                      base_amount=Decimal(1), base_currency=policy.currency, purpose="explain",
                      policy_version="", steps=(*decided, step), created_at=_EPOCH,
                      updated_at=_EPOCH)
    return escalation_targets(request, step, policy)


def _reminders(policy: Policy) -> str:
    if policy.reminders is None:
        return "none: the policy sets no reminders"
    return (f"first after {format_duration(policy.reminders.after)} of waiting, then every "
            f"{format_duration(policy.reminders.every)}, to every approver still waiting")


def _escalation(policy: Policy) -> str:
    if policy.escalation is None:
        return "none: the policy sets no escalation"
    to = ("the manager of each waiting approver" if policy.escalation.to == "manager"
          else ", ".join(policy.escalation.to))
    return (f"once per level, after {format_duration(policy.escalation.after)} of waiting, "
            f"to {to}; whoever decides first wins")
