"""The advisor's evaluation set (``advisor_cases.yml``) as Python values, and an oracle.

:func:`oracle_history` computes, in memory and straight from the contract's wording, the
:class:`~flows.advisor.History` of a case; the store's indexed queries must read the same
from a database holding the case's rows (``test_advisor_store.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from flows.advisor import WINDOW, Draft, History, Past, history_query
from flows.machine import Submit
from flows.model import RequestStatus
from flows.policy import Policy, parse_policy
from flows.vendors import vendor_key

CASES_FILE = Path(__file__).with_name("advisor_cases.yml")
KNOWN_VENDOR_ID = 9000  # the id of the `vendor_known: true` shorthand's request


@dataclass(frozen=True)
class Row:
    """An earlier request of a case, as the requests table holds it."""

    id: int
    requester: str
    vendor: str | None
    base_amount: Decimal
    status: RequestStatus
    created_at: datetime
    cost_center: str | None


@dataclass(frozen=True)
class Case:
    name: str
    submit: Submit
    rows: tuple[Row, ...]
    expect: frozenset[str]


@dataclass(frozen=True)
class EvalSet:
    now: datetime
    policy: Policy
    policy_text: str
    cases: tuple[Case, ...]


@cache
def eval_set() -> EvalSet:
    data = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))
    now = data["now"]
    assert isinstance(now, datetime) and now.tzinfo is not None
    policy = parse_policy(data["policy"], source=str(CASES_FILE))
    cases = tuple(_case(raw, now) for raw in data["cases"])
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return EvalSet(now, policy, data["policy"], cases)


def _case(raw: dict[str, Any], now: datetime) -> Case:
    req = raw["request"]
    requester = req.get("requester", "U_ALICE")
    vendor = req.get("vendor")
    submit = Submit(requester=requester, amount=Decimal(str(req["amount"])),
                    currency=req.get("currency", "USD"), purpose=req["purpose"],
                    vendor=vendor, cost_center=req.get("cost_center"), at=now)
    rows = [Row(id=int(h["id"]), requester=h.get("requester", requester),
                vendor=h.get("vendor", vendor), base_amount=Decimal(str(h["amount"])),
                status=RequestStatus(h.get("status", "approved")),
                created_at=now - timedelta(days=h.get("days_ago", 10)),
                cost_center=h.get("cost_center"))
            for h in raw.get("history") or []]
    if raw.get("vendor_known"):
        rows.append(Row(id=KNOWN_VENDOR_ID, requester="U_SOMEONE_ELSE", vendor=vendor,
                        base_amount=Decimal(300), status=RequestStatus.APPROVED,
                        created_at=now - timedelta(days=200), cost_center=None))
    return Case(raw["name"], submit, tuple(rows), frozenset(raw.get("expect") or []))


def oracle_history(case: Case, policy: Policy) -> History:
    """The history the contract describes, computed from the rows in memory."""
    draft = Draft.of(case.submit, policy)
    query = history_query(draft, policy)
    live = {RequestStatus.PENDING, RequestStatus.APPROVED}
    key = draft.vendor_key
    same = tuple(Past(r.id, r.base_amount, r.status, r.created_at) for r in case.rows
                 if key is not None and r.requester == draft.requester
                 and vendor_key(r.vendor) == key and r.status in live
                 and r.created_at >= draft.at - WINDOW)
    approved = key is not None and any(
        vendor_key(r.vendor) == key and r.status is RequestStatus.APPROVED for r in case.rows)
    spend = Decimal(0)
    if query.period is not None:
        spend = sum((r.base_amount for r in case.rows
                     if r.cost_center == draft.cost_center
                     and r.status is RequestStatus.APPROVED
                     and query.period.start <= r.created_at < query.period.end), Decimal(0))
    return History(same_vendor=tuple(sorted(same, key=lambda p: p.id)),
                   vendor_approved=approved, period_spend=spend)
