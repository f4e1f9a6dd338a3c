"""Schema migrations on SQLite and PostgreSQL: a database holding data at the first
revision upgrades to the latest and keeps working; ``approvals db upgrade`` as an
operator runs it; ``approvals serve`` refuses a PostgreSQL schema that is behind."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from flows import machine
from flows.audit import make_entry
from flows.machine import Approve, Audit, SendCard, SetTimer, Submit
from flows.model import RequestStatus, StepStatus
from flows.policy import Policy
from flows.vendors import vendor_key
from storage.db import Database
from storage.migrate import current_revision, head_revision, upgrade
from storage.store import CardRef, Store
from tests.conftest import EXAMPLE_POLICY, T0
from tests.process_support import clean_env, free_port

FIRST = "0001"


def approvals(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd,
                          env={**clean_env(), "DATABASE_URL": database_url})


class Sql:
    """Plain SQL, as the first release's code left its rows (no ORM, no store)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def stamp(self, at: datetime) -> object:
        """A time as the first release stored it: naive UTC (text on SQLite)."""
        naive = at.replace(tzinfo=None)
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if self.db.sqlite else naive

    async def run(self, statement: str, **params: Any) -> Any:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None


async def test_a_database_at_the_first_revision_with_data_upgrades_and_keeps_working(
        db_url: str, policy: Policy) -> None:
    db = Database(db_url)
    try:
        await upgrade(db.engine, FIRST)
        assert await current_revision(db.engine) == FIRST
        request = await _pending_request_at_first_revision(db, policy)

        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()

        store = Store(db)
        assert await store.get(request.id) == request
        assert [(r.id, s.index) for r, s in await store.waiting_for("U_BOB")] == [(1, 0)]
        assert await store.cards(1, 0) == [CardRef(1, 0, "U_BOB", "D_BOB", "1700000000.000100")]
        assert await store.verify_audit() is None
        # the queued App Home refreshes are still there to deliver, one per person
        assert sorted((i.kind, i.payload["user"]) for i in await store.claim_outbox(T0)) == [
            ("home", "U_ALICE"), ("home", "U_BOB")]
        assert (await store.outbox_counts())["sent"] == 2, "the card, and the merged refresh"
        # the old timers fire on the new schema
        due = await store.due_timers(T0 + timedelta(hours=4))
        assert [t.kind.value for t in due] == ["remind"]
        assert await store.fire_timer(due[0], now=T0 + timedelta(hours=4)) is not None

        later = T0 + timedelta(hours=5)
        outcome = await store.act(1, Approve(step=0, actor="U_BOB", at=later))
        assert outcome is not None and outcome.refusal is None
        moved = await store.get(1)
        assert moved is not None and moved.steps[0].status is StepStatus.APPROVED
        assert moved.steps[1].status is StepStatus.PENDING
        assert sorted(r.id for r, _ in await store.waiting_for("U_FIN1")) == [1]
        assert {t.step for t in await store.due_timers(later + timedelta(days=3))} == {1}
        # new requests number on from the old ones
        fresh = await store.submit(Submit(requester="U_ALICE", amount=Decimal("90"),
                                          currency="USD", purpose="Cables for the lab",
                                          at=later), policy=policy)
        assert fresh.request.ref == "PR-2"
        queued = await store.receive(Submit(requester="U_ALICE", amount=Decimal("25000"),
                                            currency="USD", purpose="Desks", at=later),
                                     policy=policy)
        assert queued.queued and queued.request.ref == "PR-3"
        assert [o.request.ref for o in await store.process_intake(later)] == ["PR-3"]
        assert [e.event for e in await store.audit_for(1)] == [
            "submitted", "card_sent", "reminded", "approved"]
        assert await store.verify_audit() is None
        final = await store.act(1, Approve(step=1, actor="U_FIN1", at=later))
        assert final is not None and final.request.status is RequestStatus.APPROVED
    finally:
        await db.close()


async def _pending_request_at_first_revision(db: Database, policy: Policy) -> Any:
    """PR-1 (EUR 25,000: Manager, then Finance), waiting for U_BOB, written with plain SQL
    into the first schema: policy, request, assignment, timers, outbox, card, audit."""
    sql = Sql(db)
    cmd = Submit(requester="U_ALICE", amount=Decimal("25000"), currency="EUR",
                 purpose="Standing desks for the new office", vendor="Acme Inc",
                 cost_center="ENG-001", at=T0)
    outcome = machine.submit(cmd, request_id=1, policy=policy,
                             policy_version=policy.version_hash)
    request = outcome.request
    # the first release wrote fewer fields: leave out every one at its default
    doc = request.model_dump_json(exclude_defaults=True)
    assert type(request).model_validate_json(doc) == request

    await sql.run("INSERT INTO policies (hash, body, source, created_at) "
                  "VALUES (:hash, :body, :source, :at)", hash=policy.version_hash,
                  body=policy.canonical_json(), source=EXAMPLE_POLICY.read_text(),
                  at=sql.stamp(T0))
    await sql.run(
        "INSERT INTO requests (requester, status, vendor, vendor_key, cost_center, currency, "
        "base_amount_cents, policy_hash, created_at, updated_at, version, doc) VALUES "
        "(:requester, 'pending', :vendor, :key, :cc, :currency, :cents, :policy, :at, :at, "
        "1, :doc)", requester=request.requester, vendor=request.vendor,
        key=vendor_key(request.vendor), cc=request.cost_center, currency=request.currency,
        cents=int(request.base_amount * 100), policy=policy.version_hash, at=sql.stamp(T0),
        doc=doc)
    assert await sql.run("SELECT id FROM requests") == [(1,)]
    await sql.run("INSERT INTO assignments (user_id, request_id, step, since) "
                  "VALUES ('U_BOB', 1, 0, :at)", at=sql.stamp(T0))
    for effect in outcome.effects:
        if isinstance(effect, SetTimer):
            await sql.run("INSERT INTO timers (request_id, step, kind, due_at) "
                          "VALUES (1, :step, :kind, :due)", step=effect.step,
                          kind=effect.kind.value, due=sql.stamp(effect.due_at))
    cards = [e for e in outcome.effects if isinstance(e, SendCard)]
    assert [(c.step, c.user) for c in cards] == [(0, "U_BOB")]
    # (two refreshes waiting for one person, as the first releases queued them: merged by
    # revision 0005, which keeps one per person)
    outbox = [("card", {"step": 0, "user": "U_BOB"}, "sent"),
              ("home", {"user": "U_ALICE"}, "pending"), ("home", {"user": "U_BOB"}, "pending"),
              ("home", {"user": "U_BOB"}, "pending")]
    for kind, payload, status in outbox:
        await sql.run(
            "INSERT INTO outbox (request_id, kind, payload, status, attempts, next_attempt_at, "
            "created_at, sent_at) VALUES (1, :kind, :payload, :status, :attempts, :at, :at, "
            ":sent)", kind=kind, payload=json.dumps(payload, sort_keys=True), status=status,
            attempts=int(status == "sent"), at=sql.stamp(T0),
            sent=sql.stamp(T0) if status == "sent" else None)
    await sql.run("INSERT INTO cards (request_id, step, user_id, channel, ts, created_at) "
                  "VALUES (1, 0, 'U_BOB', 'D_BOB', '1700000000.000100', :at)",
                  at=sql.stamp(T0))
    await sql.run("INSERT INTO slack_events (event_id, received_at) VALUES ('Ev1', :at)",
                  at=sql.stamp(T0))
    # the audit trail, chained as flows.audit chains it
    audits = [(a.event, a.actor, a.data) for a in outcome.effects if isinstance(a, Audit)]
    audits.append(("card_sent", "system", {"step": 0, "level": "Manager", "to": "U_BOB",
                                           "channel": "D_BOB", "ts": "1700000000.000100"}))
    seq, prev = 0, "0" * 64
    for event, actor, data in audits:
        seq += 1
        entry = make_entry(seq=seq, prev_hash=prev, request="PR-1", event=event, actor=actor,
                           at=T0, data=data)
        await sql.run("INSERT INTO audit (seq, request, event, actor, at, data, prev_hash, hash)"
                      " VALUES (:seq, :request, :event, :actor, :at, :data, :prev, :hash)",
                      seq=entry.seq, request=entry.request, event=entry.event,
                      actor=entry.actor, at=entry.at,
                      data=json.dumps(entry.data, sort_keys=True, ensure_ascii=False),
                      prev=entry.prev_hash, hash=entry.hash)
        prev = entry.hash
    await sql.run("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1", seq=seq,
                  hash=prev)
    return request


async def test_approvals_db_upgrade_as_an_operator_runs_it(db_url: str, tmp_path: Path
                                                           ) -> None:
    for _ in range(2):  # and again: nothing to do the second time
        result = approvals("db", "upgrade", database_url=db_url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"revision {head_revision()} (latest)" in result.stdout
    db = Database(db_url)
    try:
        assert await current_revision(db.engine) == head_revision()
    finally:
        await db.close()


async def test_serve_refuses_a_postgresql_schema_that_is_behind(pg_url: str, tmp_path: Path
                                                                ) -> None:
    """PostgreSQL is upgraded by an operator, before a rollout; SQLite upgrades itself."""
    db = Database(pg_url)
    try:
        await upgrade(db.engine, FIRST)
    finally:
        await db.close()
    policy = tmp_path / "policy.yml"
    policy.write_text(EXAMPLE_POLICY.read_text())
    env = {**clean_env(), "DATABASE_URL": pg_url, "SLACK_BOT_TOKEN": "xoxb-test",
           "SLACK_SIGNING_SECRET": "secret"}
    result = subprocess.run([sys.executable, "-m", "bot", "serve", "--port", str(free_port()),
                             "--policy", str(policy)], capture_output=True, text=True,
                            timeout=60, check=False, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"DATABASE_URL: the schema is at revision {FIRST}, not {head_revision()}: "
        "run `approvals db upgrade`")
