"""The advisor in the store, on a SQLite file and PostgreSQL: history read by single
indexed queries in the submit transaction, the annotation audited with the request, and
the LLM's later opinion applied as a versioned write."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from flows.advisor import Draft, History, Opinion, history_query, rules_advice
from flows.machine import Approve, Submit
from flows.model import Advice, Flag, RequestStatus
from flows.policy import Policy
from flows.vendors import vendor_key
from storage.db import Database
from storage.sqlexec import sql_of
from storage.store import Store, history_statements
from storage.tables import OutboxRow, RequestRow
from tests.advisor_support import Case, eval_set, oracle_history
from tests.conftest import T0


class _Rollback(Exception):
    pass


async def _history_in_db(store: Store, case: Case, policy: Policy) -> History:
    """Insert the case's rows, read the history as submit would, and roll back."""
    found: list[History] = []
    try:
        async with store.db.write() as session:
            for row in case.rows:
                session.add(RequestRow(
                    id=row.id, requester=row.requester, status=row.status.value,
                    vendor=row.vendor, vendor_key=vendor_key(row.vendor),
                    cost_center=row.cost_center, currency=policy.currency,
                    base_amount_cents=int(row.base_amount * 100), policy_hash=policy.version_hash,
                    created_at=row.created_at, updated_at=row.created_at, version=0, doc="{}"))
            await session.flush()
            draft = Draft.of(case.submit, policy)
            found.append(await store.history(await sql_of(session, sqlite=store.db.sqlite),
                                             history_query(draft, policy)))
            raise _Rollback
    except _Rollback:
        pass
    return found[0]


async def test_the_store_reads_every_cases_history_as_the_contract_says(
        database: Database) -> None:
    data = eval_set()
    store = Store(database, advisor=rules_advice)
    await store.register_policy(data.policy, source=data.policy_text, at=data.now)
    for case in data.cases:
        got = await _history_in_db(store, case, data.policy)
        want = oracle_history(case, data.policy)
        assert sorted(got.same_vendor, key=lambda p: p.id) == list(want.same_vendor), case.name
        assert (got.vendor_approved, got.period_spend) == (
            want.vendor_approved, want.period_spend), case.name
        draft = Draft.of(case.submit, data.policy)
        assert set(rules_advice(draft, got, data.policy).codes) == case.expect, case.name


async def test_history_queries_are_single_indexed_queries_not_scans(store: Store,
                                                                    policy: Policy) -> None:
    cmd = Submit(requester="U_ALICE", amount=Decimal(900), currency="USD", vendor="Acme",
                 purpose="Monitor arms for the support desk", cost_center="ENG-001", at=T0)
    statements = history_statements(history_query(Draft.of(cmd, policy), policy))
    indexes = {"same_vendor": "ix_requests_requester_vendor",
               "vendor_approved": "ix_requests_vendor_status",
               "spend": "ix_requests_cost_center"}
    assert set(statements) == set(indexes)
    async with store.db.write() as session:
        if not store.db.sqlite:  # an empty table is cheapest to scan: ask for the index plan
            await session.execute(text("SET LOCAL enable_seqscan = off"))
        raw = await sql_of(session, sqlite=store.db.sqlite)
        for name, (query, params) in statements.items():
            prefix = "EXPLAIN QUERY PLAN " if store.db.sqlite else "EXPLAIN "
            plan = " ".join(str(r[-1]) for r in await raw.rows(prefix + query, params))
            assert indexes[name] in plan, (name, plan)
            assert "SCAN requests" not in plan and "Seq Scan" not in plan, (name, plan)


def _cmd(amount: str, *, vendor: str = "Apple", at_offset: int = 0,
         purpose: str = "MacBook chargers and adapters for the sales team",
         requester: str = "U_ALICE") -> Submit:
    return Submit(requester=requester, amount=Decimal(amount), currency="USD", vendor=vendor,
                  purpose=purpose, cost_center="ENG-001",
                  at=T0 + timedelta(seconds=at_offset))


async def test_submit_annotates_in_the_same_transaction_and_flags_stop_auto_approval(
        database: Database, policy: Policy) -> None:
    store = Store(database, advisor=rules_advice)
    first = (await store.submit(_cmd("2400"), policy=policy)).request
    assert first.advice is not None and first.advice.codes == ("new_vendor",)
    trail = await store.audit_for(first.id)
    assert [e.event for e in trail] == ["submitted", "annotated"]
    assert trail[1].data == first.advice.model_dump(mode="json")
    assert trail[1].data["flags"][0]["code"] == "new_vendor"

    second = (await store.submit(_cmd("2400", at_offset=60), policy=policy)).request
    assert second.advice is not None
    duplicate = next(f for f in second.advice.flags if f.code == "duplicate")
    assert duplicate.evidence == ("PR-1",)
    assert second.advice.recommendation == "reject"

    outcome = await store.act(first.id, Approve(step=0, actor="U_BOB", at=T0 + timedelta(hours=1)))
    assert outcome is not None and outcome.request.status is RequestStatus.APPROVED

    # a known vendor, a clear purpose, a small amount: approved with no human
    clean = (await store.submit(_cmd("300", purpose="Lightning cables for the test devices lab",
                                     at_offset=7200), policy=policy)).request
    assert clean.advice is not None and clean.advice.flags == ()
    assert clean.auto_approved
    # the same small amount again is a duplicate, and goes to a human
    again = (await store.submit(_cmd("300", purpose="Lightning cables for the test devices lab",
                                     at_offset=7300), policy=policy)).request
    assert again.status is RequestStatus.PENDING and not again.auto_approved
    assert again.advice is not None and "duplicate" in again.advice.codes


async def test_a_double_submit_at_the_same_moment_is_caught(database: Database,
                                                          policy: Policy) -> None:
    store = Store(database, advisor=rules_advice)
    await store.register_policy(policy, source="example", at=T0)
    results = await asyncio.gather(*(store.submit(_cmd("1200"), policy=policy)
                                     for _ in range(2)))
    flagged = [r.request for r in results
               if r.request.advice is not None and "duplicate" in r.request.advice.codes]
    assert len(flagged) == 1  # the later one sees the earlier one, whichever wins the lock


async def test_a_failing_advisor_sends_even_small_requests_to_humans(
        database: Database, policy: Policy) -> None:
    def broken(draft: Draft, history: History, policy: Policy) -> Advice:
        raise ZeroDivisionError("a bug")

    store = Store(database, advisor=broken)
    request = (await store.submit(_cmd("100"), policy=policy)).request
    assert request.status is RequestStatus.PENDING and not request.auto_approved
    assert request.advice is not None and request.advice.note
    assert request.policy_version == policy.version_hash


async def test_annotate_merges_the_llm_opinion_as_a_versioned_write(
        database: Database, policy: Policy) -> None:
    store = Store(database, advisor=rules_advice)
    request = (await store.submit(_cmd("2400"), policy=policy)).request
    opinion = Opinion(recommendation="approve", risk="low", commentary="Usual chargers.",
                      flags=(Flag(code="missing_justification", detail="How many?",
                                  evidence=["purpose"]),))
    at = T0 + timedelta(seconds=5)
    outcome = await store.annotate(request.id, source="llm:m", at=at, opinion=opinion)
    assert outcome is not None
    stored = await store.get(request.id)
    assert stored is not None and stored.advice is not None
    assert stored.advice.codes == ("new_vendor", "missing_justification")
    assert (stored.advice.recommendation, stored.advice.risk) == ("review", "medium")
    assert stored.advice.commentary == "Usual chargers."
    assert stored.steps == request.steps and stored.status is request.status
    trail = await store.audit_for(request.id)
    assert [e.event for e in trail][-1] == "annotated"
    assert trail[-1].data == stored.advice.model_dump(mode="json")
    async with store.db.read() as session:
        kinds = (await session.execute(select(OutboxRow.kind).where(
            OutboxRow.request_id == request.id).order_by(OutboxRow.id))).scalars().all()
    assert "update_cards" in kinds
    # the same source again: nothing written
    await store.annotate(request.id, source="llm:m", at=at, opinion=opinion)
    assert len(await store.audit_for(request.id)) == len(trail)
    assert await store.annotate(999, source="llm:m", at=at, note="x") is None
    assert await store.verify_audit() is None


@pytest.mark.parametrize("amount", ["9800", "10000"])
async def test_near_threshold_is_stored_with_its_figures(database: Database, policy: Policy,
                                                         amount: str) -> None:
    store = Store(database, advisor=rules_advice)
    request = (await store.submit(_cmd(amount, vendor=""), policy=policy)).request
    assert request.advice is not None and request.advice.codes == ("near_threshold",)
    assert "Finance threshold $10,000.00" in request.advice.flags[0].evidence
