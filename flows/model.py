"""The domain objects: a purchase request and its steps, as immutable values.

A :class:`Request` is the whole state of one purchase request; transitions in
:mod:`flows.machine` take one and return a new one. It serialises to JSON losslessly
(``model_dump_json`` / ``model_validate_json``), which is how storage keeps it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from flows.money import format_money

Money = Annotated[Decimal, PlainSerializer(str, return_type=str)]


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    WAITING = "waiting"  # a later level, not started yet
    PENDING = "pending"  # waiting for one of its assignees
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # the request was cancelled or ended while this step waited


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Question(_Value):
    """An approver's question to the requester, and its answer once given."""

    by: str
    text: str
    asked_at: datetime
    answer: str | None = None
    answered_at: datetime | None = None


class Step(_Value):
    index: int
    level: str
    reason: str
    listed: tuple[str, ...]
    status: StepStatus = StepStatus.WAITING
    assignees: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    started_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason_text: str | None = None  # a rejection's reason
    escalated_to: tuple[str, ...] = ()
    escalated_at: datetime | None = None
    # delegate -> the approver they stand in for (a factory: a {} default is deep-copied)
    on_behalf: dict[str, str] = Field(default_factory=dict)
    questions: tuple[Question, ...] = ()
    paused_at: datetime | None = None  # waiting for the requester's answer since
    paused_seconds: float = 0.0  # time spent waiting for answers before paused_at

    @property
    def open_question(self) -> Question | None:
        last = self.questions[-1] if self.questions else None
        return last if last is not None and last.answer is None else None

    def principal(self, user: str) -> str:
        """The approver ``user`` decides for: themself, or whoever delegated to them."""
        return self.on_behalf.get(user, user)

    @property
    def label(self) -> str:
        return self.level

    @property
    def is_open(self) -> bool:
        return self.status is StepStatus.PENDING


Recommendation = Literal["approve", "review", "reject"]
Risk = Literal["low", "medium", "high"]


def _evidence(value: object) -> object:
    """Evidence is a list of short texts (``PR-7``, ``budget $250,000.00``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    return value


class Flag(_Value):
    """One concern: a contract ``code``, a sentence for people, and what it rests on."""

    code: str
    detail: str = ""
    evidence: Annotated[tuple[str, ...], BeforeValidator(_evidence)] = ()
    source: Literal["rules", "llm"] = "rules"


class Advice(_Value):
    """What the advisor said; only its ``flags`` can veto an auto-approval.

    ``commentary`` is the LLM's, once it has answered; ``note`` says why it has not (it
    failed or timed out); ``sources`` names who contributed (``rules``, ``llm:<model>``).
    """

    recommendation: Recommendation = "review"
    risk: Risk = "low"
    summary: str = ""
    flags: tuple[Flag, ...] = ()
    commentary: str | None = None
    note: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(flag.code for flag in self.flags))


class Request(_Value):
    id: int
    requester: str
    amount: Money
    currency: str
    base_amount: Money
    base_currency: str
    vendor: str | None = None
    purpose: str
    cost_center: str | None = None
    policy_version: str
    status: RequestStatus = RequestStatus.PENDING
    steps: tuple[Step, ...] = ()
    created_at: datetime
    updated_at: datetime
    auto_approved: bool = False
    advice: Advice | None = None
    outcome_reason: str | None = None  # a rejection's or an unroutable level's reason
    ended_by: str | None = None

    @property
    def ref(self) -> str:
        return f"PR-{self.id}"

    @property
    def current(self) -> Step | None:
        """The step waiting for a decision, if any."""
        for step in self.steps:
            if step.status is StepStatus.PENDING:
                return step
        return None

    @property
    def deciders(self) -> tuple[str, ...]:
        """Everyone who decided a level, and everyone a delegate decided for."""
        out: list[str] = []
        for s in self.steps:
            if s.decided_by is not None and s.status is StepStatus.APPROVED:
                out.append(s.decided_by)
                if s.principal(s.decided_by) != s.decided_by:
                    out.append(s.principal(s.decided_by))
        return tuple(out)

    @property
    def amount_text(self) -> str:
        """``€25,000.00 (= $27,000.00)`` or ``$9,000.00``."""
        text = format_money(self.amount, self.currency)
        if self.currency != self.base_currency:
            text += f" (= {format_money(self.base_amount, self.base_currency)})"
        return text

    def visible_to(self, user: str) -> bool:
        """The requester and the request's approvers may see it; nobody else."""
        return user == self.requester or any(
            user in step.assignees or user == step.decided_by for step in self.steps)

    def step(self, index: int) -> Step | None:
        return self.steps[index] if 0 <= index < len(self.steps) else None

    def with_step(self, step: Step, **changes: Any) -> Request:
        steps = list(self.steps)
        steps[step.index] = step
        return self.model_copy(update={"steps": tuple(steps), **changes})


def parse_ref(text: str) -> int | None:
    """``PR-42`` (any case, or just ``42``) to 42; anything else to ``None``."""
    raw = text.strip()
    if raw.upper().startswith("PR-"):
        raw = raw[3:]
    return int(raw) if raw.isdigit() and len(raw) < 19 and int(raw) > 0 else None


__all__ = ["Advice", "Flag", "Question", "Recommendation", "Request", "RequestStatus", "Risk",
           "Step", "StepStatus", "parse_ref"]
