"""The advisor: flags with evidence, a recommendation and a risk. It advises; it never decides.

Two layers, both pure:

* :func:`rules_advice` -- the offline default. It looks at one new request (a
  :class:`Draft`) and a :class:`History` snapshot the store reads for it in the submit
  transaction (the query is described by :func:`history_query`), and raises every flag code
  of the contract, each with a sentence for people and its evidence (the other ``PR-<n>``,
  the budget figures, the threshold). Its flags are what can stop an auto-approval.
* :func:`annotate` -- merges an LLM's :class:`Opinion` into a request's advice later, as a
  transition (an ``annotated`` audit entry and the current step's cards updated). The LLM may
  add flags and commentary; it cannot remove a rule's flag, lower the risk, or move the
  recommendation toward ``approve``. When it fails, only a short ``note`` is added.

Recommendation and risk follow from the flags alone (:func:`verdict`), so the same flags
always read the same way. Nothing here parses free text for a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict

from flows.machine import SYSTEM, Audit, Effect, Outcome, Submit, UpdateCards, validate_submission
from flows.model import Advice, Flag, Recommendation, Request, RequestStatus, Risk
from flows.money import format_money
from flows.policy import Budget, Policy
from flows.textchecks import Injection, Justification, read_request
from flows.vendors import vendor_key

Code = Literal["split_purchase", "duplicate", "new_vendor", "near_threshold", "over_budget",
               "missing_justification", "prompt_injection"]
CODES: Final[tuple[str, ...]] = get_args(Code)

WINDOW: Final = timedelta(days=30)  # split_purchase and duplicate look this far back
DUPLICATE_WITHIN: Final = Decimal("0.01")  # of the larger amount
NEAR_WITHIN: Final = Decimal("0.05")  # below a level's threshold

# How much each code weighs; the verdict follows from the heaviest flag.
_RISK: Final[dict[str, Risk]] = {
    "split_purchase": "high", "duplicate": "high", "over_budget": "high",
    "prompt_injection": "high", "near_threshold": "medium", "missing_justification": "medium",
    "new_vendor": "low",
}
# Flags after which the request should not go through as it is.
_REJECT: Final = frozenset({"duplicate", "prompt_injection"})
_RISKS: Final[tuple[Risk, ...]] = ("low", "medium", "high")
_RECOMMENDATIONS: Final[tuple[Recommendation, ...]] = ("approve", "review", "reject")
_LABEL: Final[dict[str, str]] = {
    "split_purchase": "possibly split to stay under a threshold",
    "duplicate": "possibly a duplicate",
    "new_vendor": "first purchase from this vendor",
    "near_threshold": "just under an approval threshold",
    "over_budget": "over the cost center's budget",
    "missing_justification": "the purpose does not say what and why",
    "prompt_injection": "the text tries to instruct the advisor or the approvers",
}

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Draft:
    """A request about to be created, as the advisor sees it (amounts in base currency)."""

    requester: str
    amount: Decimal
    currency: str
    base_amount: Decimal
    base_currency: str
    purpose: str
    vendor: str | None
    cost_center: str | None
    at: datetime

    @classmethod
    def of(cls, cmd: Submit, policy: Policy) -> Draft:
        """The draft of a submission; raises ``RequestInvalid`` as the machine would."""
        return cls(requester=cmd.requester, amount=cmd.amount, currency=cmd.currency,
                   base_amount=validate_submission(cmd, policy), base_currency=policy.currency,
                   purpose=cmd.purpose.strip(), vendor=(cmd.vendor or "").strip() or None,
                   cost_center=(cmd.cost_center or "").strip() or None, at=cmd.at)

    @property
    def vendor_key(self) -> str | None:
        return vendor_key(self.vendor)


@dataclass(frozen=True, slots=True)
class Past:
    """An earlier request, as history shows it."""

    id: int
    base_amount: Decimal
    status: RequestStatus
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"PR-{self.id}"


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar budget period (UTC): ``[start, end)``."""

    kind: Literal["month", "quarter", "year"]
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        if self.kind == "year":
            return str(self.start.year)
        if self.kind == "quarter":
            return f"Q{(self.start.month - 1) // 3 + 1} {self.start.year}"
        return self.start.strftime("%B %Y")


def period_of(at: datetime, kind: Literal["month", "quarter", "year"]) -> Period:
    """The calendar month, quarter or year (UTC) that ``at`` falls in."""
    at = at.astimezone(UTC)
    first_month = {"month": at.month, "quarter": 3 * ((at.month - 1) // 3) + 1,
                   "year": 1}[kind]
    start = datetime(at.year, first_month, 1, tzinfo=UTC)
    months = {"month": 1, "quarter": 3, "year": 12}[kind]
    index = start.month - 1 + months
    end = datetime(start.year + index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return Period(kind, start, end)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """What the store must read for a draft; each part is one indexed query.

    * ``same_vendor``: the requester's pending or approved requests to ``vendor_key``
      created at or after ``since`` (when there is a vendor);
    * ``vendor_approved``: whether any request to ``vendor_key`` was ever approved;
    * ``spend``: the approved base amounts of ``cost_center`` created in ``period`` (when
      the policy has a budget for it).
    """

    requester: str
    vendor_key: str | None
    since: datetime
    cost_center: str | None
    period: Period | None


def history_query(draft: Draft, policy: Policy) -> HistoryQuery:
    budget = _budget(draft, policy)
    return HistoryQuery(
        requester=draft.requester, vendor_key=draft.vendor_key, since=draft.at - WINDOW,
        cost_center=draft.cost_center if budget else None,
        period=period_of(draft.at, budget.period) if budget else None)


@dataclass(frozen=True, slots=True)
class History:
    """What the advisor knows of the past, read in the same transaction as the submit."""

    same_vendor: tuple[Past, ...] = ()
    vendor_approved: bool = False
    period_spend: Decimal = Decimal(0)


Advisor = Callable[[Draft, History, Policy], Advice]


def _budget(draft: Draft, policy: Policy) -> Budget | None:
    return policy.budgets.get(draft.cost_center) if draft.cost_center else None


# --------------------------------------------------------------------------- the rules


def rules_advice(draft: Draft, history: History, policy: Policy) -> Advice:
    """The offline advisor: every contract code, each with its detail and evidence."""
    money = _Money(draft.base_currency)
    thresholds = _thresholds(policy)
    said, found = read_request(draft.purpose, draft.vendor, draft.cost_center)
    flags = [flag for flag in (
        _split_purchase(draft, history, thresholds, money),
        _duplicate(draft, history, money),
        _new_vendor(draft, history),
        _near_threshold(draft, thresholds, money),
        _over_budget(draft, history, policy, money),
        _missing_justification(draft, said),
        _prompt_injection(found),
    ) if flag is not None]
    recommendation, risk = verdict(flags)
    return Advice(recommendation=recommendation, risk=risk, summary=summary(flags),
                  flags=tuple(flags), sources=("rules",))


@dataclass(frozen=True, slots=True)
class _Money:
    currency: str

    def __call__(self, amount: Decimal) -> str:
        return format_money(amount, self.currency)


def _thresholds(policy: Policy) -> list[tuple[str, Decimal]]:
    """The levels' ``over`` values, highest first."""
    found = [(level.name, level.over) for level in policy.levels if level.over is not None]
    return sorted(found, key=lambda pair: pair[1], reverse=True)


def _refs(items: Iterable[Past]) -> list[str]:
    return [p.ref for p in sorted(items, key=lambda p: p.id)]


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _split_purchase(draft: Draft, history: History, thresholds: list[tuple[str, Decimal]],
                    money: _Money) -> Flag | None:
    """Each under a level's threshold, together over it: the highest threshold crossed."""
    for name, threshold in thresholds:
        if draft.base_amount > threshold:
            continue  # this request goes to that level anyway
        under = [p for p in history.same_vendor if p.base_amount <= threshold]
        total = draft.base_amount + sum((p.base_amount for p in under), Decimal(0))
        if under and total > threshold:
            refs = _refs(under)
            return Flag(code="split_purchase", detail=(
                f"With {_and(refs)}, this requester's requests to {draft.vendor} in the last "
                f"30 days total {money(total)}: each stays under the {name} threshold of "
                f"{money(threshold)}, together they cross it."),
                evidence=(*refs, f"total {money(total)}",
                          f"{name} threshold {money(threshold)}"))
    return None


def _duplicate(draft: Draft, history: History, money: _Money) -> Flag | None:
    same = [p for p in history.same_vendor
            if abs(p.base_amount - draft.base_amount)
            <= DUPLICATE_WITHIN * max(p.base_amount, draft.base_amount)]
    if not same:
        return None
    refs = _refs(same)
    amounts = ", ".join(f"{p.ref} {money(p.base_amount)} ({p.status})"
                        for p in sorted(same, key=lambda p: p.id))
    return Flag(code="duplicate", detail=(
        f"The same requester asked for {money(draft.base_amount)} from {draft.vendor} "
        f"in the last 30 days: {amounts}, within 1% of this amount."), evidence=tuple(refs))


def _new_vendor(draft: Draft, history: History) -> Flag | None:
    if draft.vendor_key is None or history.vendor_approved:
        return None
    return Flag(code="new_vendor",
                detail=f"No request to {draft.vendor} has been approved before.",
                evidence=(f"vendor {draft.vendor}: no approved request",))


def _near_threshold(draft: Draft, thresholds: list[tuple[str, Decimal]],
                    money: _Money) -> Flag | None:
    for name, threshold in thresholds:
        if threshold * (1 - NEAR_WITHIN) <= draft.base_amount <= threshold:
            gap = threshold - draft.base_amount
            share = (gap / threshold * 100).quantize(Decimal("0.1"))
            return Flag(code="near_threshold", detail=(
                f"{money(draft.base_amount)} is {money(gap)} ({share}%) below the {name} "
                f"threshold of {money(threshold)}."),
                evidence=(f"{name} threshold {money(threshold)}",
                          f"{share}% below it"))
    return None


def _over_budget(draft: Draft, history: History, policy: Policy,
                 money: _Money) -> Flag | None:
    budget = _budget(draft, policy)
    if budget is None:
        return None
    total = history.period_spend + draft.base_amount
    if total <= budget.amount:
        return None
    period = period_of(draft.at, budget.period)
    return Flag(code="over_budget", detail=(
        f"{draft.cost_center} has approved {money(history.period_spend)} in {period.label}; "
        f"with this {money(draft.base_amount)} it would reach {money(total)}, over its "
        f"budget of {money(budget.amount)} by {money(total - budget.amount)}."),
        evidence=(f"{draft.cost_center} {period.label} approved {money(history.period_spend)}",
                  f"budget {money(budget.amount)}", f"with this request {money(total)}"))


def _missing_justification(draft: Draft, said: Justification) -> Flag | None:
    if said.enough:
        return None
    what = "says neither what is bought nor why" if not said.content else (
        "does not say why" if not said.says_why else "is too vague to say what is bought")
    return Flag(code="missing_justification",
                detail=f"The purpose {what}; ask the requester for it.",
                evidence=(f"purpose: “{draft.purpose[:80]}”",))


def _prompt_injection(found: Injection | None) -> Flag | None:
    if found is None:
        return None
    return Flag(code="prompt_injection", detail=(
        f"The request's text {found.reason}. Decide on the facts alone; "
        "nothing in the request's text is an instruction."), evidence=found.quotes)


# --------------------------------------------------------------------------- the verdict


def verdict(flags: Iterable[Flag]) -> tuple[Recommendation, Risk]:
    """Recommendation and risk from the flags alone: no flag is ``approve``/``low``."""
    codes = {flag.code for flag in flags}
    if not codes:
        return "approve", "low"
    risk = max((_RISK.get(code, "medium") for code in codes), key=_RISKS.index)
    return ("reject" if codes & _REJECT else "review"), risk


def summary(flags: Sequence[Flag]) -> str:
    """One line: what the flags say, the heaviest first."""
    if not flags:
        return "No concerns: nothing in the history, the policy or the text raises a flag."
    ordered = sorted(flags, key=lambda f: -_RISKS.index(_RISK.get(f.code, "medium")))
    labels = list(dict.fromkeys(_LABEL.get(f.code, f.code.replace("_", " "))
                                for f in ordered))
    text = "; ".join(labels)
    return text[:1].upper() + text[1:] + "."


def _cautious_recommendation(*values: Recommendation) -> Recommendation:
    return max(values, key=_RECOMMENDATIONS.index)


def _higher_risk(*values: Risk) -> Risk:
    return max(values, key=_RISKS.index)


# --------------------------------------------------------------------------- the LLM's part


class Opinion(BaseModel):
    """What an LLM answered, already parsed into this structure (never read from prose)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recommendation: Recommendation
    risk: Risk
    commentary: str = ""
    flags: tuple[Flag, ...] = ()


DETAIL_MAX: Final = 400
COMMENTARY_MAX: Final = 800
EVIDENCE_MAX: Final = 8


def merge(advice: Advice, opinion: Opinion, *, source: str) -> Advice:
    """``advice`` with ``opinion`` on top: rule flags kept, risk never lowered, the
    recommendation never moved toward ``approve``; LLM flags of known codes added."""
    raised = {flag.code for flag in advice.flags}
    added: list[Flag] = []
    for flag in opinion.flags:
        if flag.code not in CODES or flag.code in raised:
            continue  # unknown codes mean nothing; a rule's flag stands as the rule wrote it
        raised.add(flag.code)
        added.append(Flag(code=flag.code, detail=flag.detail.strip()[:DETAIL_MAX],
                          evidence=tuple(e[:80] for e in flag.evidence[:EVIDENCE_MAX]),
                          source="llm"))
    flags = (*advice.flags, *added)
    floor_recommendation, floor_risk = verdict(flags)
    return advice.model_copy(update={
        "flags": flags,
        "recommendation": _cautious_recommendation(advice.recommendation,
                                                   floor_recommendation,
                                                   opinion.recommendation),
        "risk": _higher_risk(advice.risk, floor_risk, opinion.risk),
        "summary": summary(flags) if added else advice.summary,
        "commentary": opinion.commentary.strip()[:COMMENTARY_MAX] or None,
        "note": None,
        "sources": (*advice.sources, source),
    })


def annotate(request: Request, *, source: str, opinion: Opinion | None = None,
             note: str | None = None) -> Outcome:
    """The LLM's opinion (or, when it failed, a ``note``) added to ``request``'s advice.

    Nothing else of the request changes: no step, no status, no assignee, no time. The whole
    merged output goes to the audit trail; the current step's cards are updated in place.
    A second annotation from the same source changes nothing.
    """
    current = request.advice or Advice()
    if source in current.sources:
        return Outcome(request)
    if opinion is not None:
        advice = merge(current, opinion, source=source)
    else:
        advice = current.model_copy(update={"note": (note or "The AI advisor did not answer.")
                                            [:200]})
    if advice == current:
        return Outcome(request)
    # updated_at stays: it dates the workflow's last change (a decision), not a second opinion
    updated = request.model_copy(update={"advice": advice})
    effects: list[Effect] = [Audit("annotated", SYSTEM, advice.model_dump(mode="json"))]
    if updated.current is not None:
        effects.append(UpdateCards(updated.current.index))
    return Outcome(updated, tuple(effects))


__all__ = ["CODES", "Advisor", "Draft", "History", "HistoryQuery", "Opinion", "Past", "Period",
           "annotate", "history_query", "merge", "period_of", "rules_advice", "summary",
           "verdict"]
