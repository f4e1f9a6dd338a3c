"""The store: the one place where commands become transactions.

Each method loads what the core needs, runs a pure transition from :mod:`flows.machine`,
and writes the new state together with everything the transition asked for -- audit
entries, timers and outgoing messages -- in one transaction. A request row carries a
version; a write that finds it changed rolls back and runs the command again on fresh
state, so two concurrent decisions of one step record exactly one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import orjson
from sqlalchemy import (
    Row,
    Select,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from flows import advisor as advising
from flows import machine
from flows.advisor import Advisor, Draft, History, HistoryQuery, Opinion, Past
from flows.audit import Break, Entry, make_entry, verify
from flows.delegation import Delegation, check, resolve
from flows.errors import RequestInvalid, Unroutable
from flows.machine import (
    Approve,
    AskRequester,
    Audit,
    CancelTimers,
    Command,
    DeliverAnswer,
    Effect,
    HandOver,
    Notify,
    Outcome,
    Refusal,
    RefusalCode,
    SendCard,
    SendReminder,
    SetTimer,
    Submit,
    TimerKind,
    UpdateCards,
)
from flows.model import Advice, Request, RequestStatus, Step
from flows.policy import Policy
from flows.vendors import vendor_key
from storage.db import Conflict, Database
from storage.grouped import Grouped
from storage.sqlexec import Sql, sql_of
from storage.tables import (
    HOME_WAITING,
    OUTBOX_PEOPLE,
    AssignmentRow,
    AuditHeadRow,
    AuditRow,
    Base,
    ClickRow,
    DelegationRow,
    IntakeRow,
    OutboxRow,
    RequestRow,
    SlackEventRow,
    TimerRow,
)

MAX_ATTEMPTS = 8  # versions that moved under us in a row before giving up
SAME_VENDOR_MAX = 1000  # one requester's requests to one vendor in 30 days, read at most

UNKNOWN_STEP = "This card is out of date: the approval step it was for no longer exists."
INTAKE_BATCH = 32  # requests created, or clicks decided, per transaction at most (SQLite)
# ... and for at most this long (seconds of work inside the transaction): SQLite has one
# writer at a time, and the server's writes (submissions and clicks, recorded before they
# are acknowledged) wait for the worker's. Many per commit when each is quick, few when not;
# clicks are answered at once, so their turns are the shortest (submissions are held back
# while the intake is behind anyway: INTAKE_HOLD).
CLICK_BUDGET = 0.006
CREATE_BUDGET = 0.012
INTAKE_HOLD = 1.5  # seconds a submission may be held back while the intake is behind
# Seconds between two looks at the intake while it is behind, at the longest: a held
# submission looks again as soon as requests are created here or a worker says it created
# some (Store.intake_moved); the poll is for those created where nobody says so (another
# replica's worker). Polling every millisecond cost the server ~1.5 % of its CPU in a burst
# (held 3.3 s of 12, at 21 µs a look).
INTAKE_POLL = 0.005
INTAKE_ATTEMPTS = 5  # tries of a submission that fails unexpectedly before giving up
log = logging.getLogger("approvals.store")


@dataclass(frozen=True, slots=True)
class _Arrival:
    cmd: Submit
    policy: Policy
    source: str | None
    receipt: bool
    draft: Request  # as routed with no delegation in force


@dataclass(slots=True)
class _Writes:
    """The rows a batch of new requests adds, written by ``Store._flush`` (each a tuple in
    the column order of its ``_INSERT_...`` statement)."""

    requests: list[tuple[Any, ...]] = field(default_factory=list)
    # a batch prepared outside the write transaction: its requests to each (requester,
    # vendor key) so far, which the advisor's history adds to what it reads (None: the
    # requests are written before the history is read instead)
    pending: dict[tuple[str, str], list[Past]] | None = None
    assignments: list[tuple[Any, ...]] = field(default_factory=list)
    audits: list[tuple[str | None, str, str, dict[str, Any], datetime]] = field(
        default_factory=list)
    timers: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    homes: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Sent:
    """A delivered outbox row: the card it made and the audit entry it earns, if any, and
    the rows the same delivery satisfied (``also``)."""

    item_id: int
    card: CardRef | None = None
    audit: tuple[str, str, dict[str, Any]] | None = None
    also: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Click:
    request_id: int
    step: int
    actor: str
    at: datetime
    response_url: str | None


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A submission in the intake (``IntakeRow``'s columns the worker needs)."""

    id: int
    requester: str
    payload: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class _Clicked:
    """A recorded click (``ClickRow``)."""

    id: int
    request_id: int
    step: int
    actor: str
    at: datetime
    response_url: str | None


@dataclass(frozen=True, slots=True)
class Received:
    """A submission accepted by :meth:`Store.receive`: its request as planned (``queued``)
    or as created (``outcome``), numbered either way."""

    request: Request
    queued: bool
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class DueTimer:
    id: int
    request_id: int
    step: int
    kind: TimerKind
    due_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    request_id: int | None
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CardRef:
    request_id: int
    step: int
    user: str
    channel: str
    ts: str


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


class Store:
    """Requests, timers, outbox, cards and the audit trail, over one :class:`Database`."""

    def __init__(self, db: Database, *, advisor: Advisor | None = None,
                 home_delay: float = 0.0, intake_limit: int = 0) -> None:
        """``advisor`` annotates every new request from its history, in the submit
        transaction (:func:`flows.advisor.rules_advice` in production); ``None``: no advice.
        ``home_delay``: seconds an App Home refresh waits, so a busy person's are published
        once for many changes. ``intake_limit``: submissions waiting to be created beyond
        which new ones are held back a little (0: never)."""
        self.db = db
        self.intake_limit = intake_limit
        self.advisor = advisor
        self.home_delay = home_delay
        # submissions and clicks arriving together are written in one transaction
        self._arrivals = Grouped(self._write_arrivals, room=self._room_in_intake)
        self._holding: set[asyncio.Event] = set()  # set when the intake moves
        self._clicks = Grouped(self._write_clicks)
        self._policies: dict[str, Policy] = {}
        # id(policy) -> (policy, its version hash). Hashing means serialising the whole
        # policy (a fraction of a millisecond); the same frozen object hashes the same, and
        # holding it keeps its id from being reused.
        self._versions: dict[int, tuple[Policy, str]] = {}
        self._claim_people = _claim_people(sqlite=db.sqlite)
        self._count_people = _count_people(sqlite=db.sqlite)

    # ------------------------------------------------------------------ policies

    def version_of(self, policy: Policy) -> str:
        """``policy.version_hash``, computed once per policy object."""
        known = self._versions.get(id(policy))
        if known is not None and known[0] is policy:
            return known[1]
        if len(self._versions) >= 64:
            self._versions.clear()
        version = policy.version_hash
        self._versions[id(policy)] = (policy, version)
        return version

    async def register_policy(self, policy: Policy, *, source: str, at: datetime) -> str:
        """Keep ``policy`` as a version (its content hash); return the version."""
        version = self.version_of(policy)
        async with self.db.write_sql() as sql:
            await self._ensure_policy(sql, policy, source=source, at=at)
        return version

    async def _ensure_policy(self, sql: Sql, policy: Policy, *, source: str | None,
                             at: datetime) -> str:
        """Store ``policy`` unless known (``source``: its YAML; default its JSON)."""
        version = self.version_of(policy)
        if version in self._policies:
            return version
        if not await sql.rows("SELECT 1 FROM policies WHERE hash = ?", (version,)):
            # one statement: processes starting together may all register it at once
            body = policy.canonical_json()
            await sql.run("INSERT INTO policies (hash, body, source, created_at) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                          (version, body, source or body, at))
        self._policies[version] = policy
        return version

    async def policy(self, version: str) -> Policy:
        """The policy a request is pinned to (cached; versions never change)."""
        cached = self._policies.get(version)
        if cached is not None:
            return cached
        async with self.db.read_sql() as sql:
            return await self._load_policy(sql, version)

    async def _load_policy(self, sql: Sql, version: str) -> Policy:
        cached = self._policies.get(version)
        if cached is not None:
            return cached
        found = await sql.rows("SELECT body FROM policies WHERE hash = ?", (version,))
        if not found:
            raise LookupError(f"policy version {version} is not in the database")
        policy = Policy.model_validate_json(found[0][0])
        self._policies[version] = policy
        return policy

    # ------------------------------------------------------------------ commands

    async def submit(self, cmd: Submit, *, policy: Policy, advice: Advice | None = None,
                     source: str | None = None, receipt: bool = False) -> Outcome:
        """Create a request. Raises ``RequestInvalid``/``Unroutable``; nothing is stored then.

        ``receipt`` also queues a DM telling the requester the new ``PR-<n>`` (for a
        submission whose acknowledgement cannot carry it, like a modal's).
        """
        # Validate and route before opening a write transaction: a refusal costs no lock.
        version = self.version_of(policy)
        machine.submit(cmd, request_id=0, policy=policy, policy_version=version)
        async with self.db.write_sql() as sql:
            request_id = await self._allocate(sql)
            return await self._create(sql, cmd, policy=policy, request_id=request_id,
                                      advice=advice, source=source, receipt=receipt)

    async def _allocate(self, sql: Sql) -> int:
        """A new request number from the intake's sequence (never reused)."""
        at = datetime.now(UTC)
        number, = await sql.insert_ids(_INSERT_INTAKE, [("", "", at, at)])
        await sql.run("DELETE FROM intake WHERE id = ?", (number,))
        return number

    async def _create(self, sql: Sql, cmd: Submit, *, policy: Policy,
                      request_id: int, advice: Advice | None = None,
                      source: str | None = None, receipt: bool = False,
                      delegations: dict[str, Delegation] | None = None,
                      writes: _Writes | None = None) -> Outcome:
        """Advise, route and write request ``request_id`` in ``sql``'s transaction.

        ``delegations``: those in force, if already read (any that ended by ``cmd.at`` are
        left out here); ``writes``: collect the rows that go with the request (assignment,
        audit entries, timers, outbox) for :meth:`_flush` instead of writing them now."""
        version = self.version_of(policy)
        route_policy = policy
        if advice is None and self.advisor is not None:
            advice, route_policy = await self._advise(sql, cmd, policy, writes=writes)
        if delegations is None:
            delegations = await self._delegations(sql, cmd.at)
        else:
            delegations = {k: d for k, d in delegations.items() if d.until > cmd.at}
        planned = machine.submit(cmd, request_id=request_id, policy=route_policy,
                                 policy_version=version, advice=advice,
                                 delegations=delegations)
        version = await self._ensure_policy(sql, policy, source=source, at=cmd.at)
        request = planned.request
        # inserted as it is: the request, its document and version 1 (with a batch's
        # other rows when ``writes`` collects them)
        row = (request.id, request.requester, request.status.value, request.vendor,
               vendor_key(request.vendor), request.cost_center, request.currency,
               _cents(request.base_amount), version, cmd.at, request.updated_at, 1,
               request.model_dump_json())
        if writes is not None:
            writes.requests.append(row)
            key = row[4]  # vendor_key
            if writes.pending is not None and key is not None:
                writes.pending.setdefault((request.requester, key), []).append(Past(
                    request.id, request.base_amount, request.status, request.created_at))
        else:
            await sql.many(_INSERT_REQUEST, [row])
        outcome = Outcome(request, planned.effects, planned.refusal)
        await self._save(sql, 0, outcome, at=cmd.at, created=True, inserted=True,
                         writes=writes)
        if receipt:
            message = _outbox_values(request.id, "receipt", {"user": request.requester},
                                     at=cmd.at)
            if writes is not None:
                writes.outbox.append(message)
            else:
                await sql.many(_INSERT_OUTBOX, [message])
        return outcome

    # ------------------------------------------------------------------ the intake

    async def receive(self, cmd: Submit, *, policy: Policy, source: str | None = None,
                      receipt: bool = False) -> Received:
        """Accept ``cmd`` with one small write, so its acknowledgement can go out at once.

        The command is validated and routed here (pure; raises ``RequestInvalid`` or
        ``Unroutable`` with nothing stored). A request that waits for a person is recorded
        in the intake under its new number and returned as *planned* (``queued``): the
        advisor's checks, the audit trail, timers and cards follow in
        :meth:`process_intake`. One that nobody needs to see (approved automatically, or no
        level applies) is created at once, as :meth:`submit` does, since only the advisor
        can stop it from passing unseen.

        Submissions arriving together are written together: one transaction (one
        commit, one turn of the write lock) for all that queued while the previous one
        was being written.
        """
        version = self.version_of(policy)
        draft = machine.submit(cmd, request_id=0, policy=policy, policy_version=version)
        if draft.request.status is not RequestStatus.PENDING:
            created = await self.submit(cmd, policy=policy, source=source, receipt=receipt)
            return Received(created.request, queued=False, outcome=created)
        return Received(await self._arrivals(_Arrival(cmd, policy, source, receipt,
                                                      draft.request)), queued=True)

    async def _room_in_intake(self) -> int | None:
        """Hold new submissions (up to :data:`INTAKE_HOLD` seconds, well inside Slack's
        3 s) while ``intake_limit`` or more wait to be created: a burst beyond what the
        worker keeps up with slows the acknowledgements a little, instead of leaving cards
        minutes behind them. Returns how many may be written now, the room left below the
        limit (``None``: all that wait), so that each batch the worker takes lets in as
        many, oldest first: a whole group let in at once overshot the limit, and the next
        group then waited for two of the worker's batches instead of one."""
        if not self.intake_limit:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INTAKE_HOLD
        moved = asyncio.Event()
        self._holding.add(moved)
        try:
            while loop.time() < deadline:
                moved.clear()  # (before looking: a move meanwhile is not lost)
                try:
                    waiting = await self.intake_waiting()
                except Exception:
                    return None  # the write that follows says what is wrong
                if waiting < self.intake_limit:
                    return self.intake_limit - waiting
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INTAKE_POLL):
                        await moved.wait()
            return None  # held long enough: all of them go
        finally:
            self._holding.discard(moved)

    def intake_moved(self) -> None:
        """Submissions may have left the intake (created by this store, or by a worker
        process that says so): any held back look again now, not at the next poll."""
        for moved in self._holding:
            moved.set()

    async def _write_arrivals(self, group: list[_Arrival]) -> list[Request]:
        async with self.db.write_sql(urgent=True) as sql:
            delegations = await self._delegations(sql, group[0].cmd.at)
            drafts, rows = [], []
            for arrival in group:
                cmd, policy = arrival.cmd, arrival.policy
                version = await self._ensure_policy(sql, policy, source=arrival.source,
                                                    at=cmd.at)
                # routed again only if a delegation may change whom it waits for
                drafts.append(machine.submit(cmd, request_id=0, policy=policy,
                                             policy_version=version,
                                             delegations=delegations).request
                              if delegations else arrival.draft)
                rows.append((cmd.requester, orjson.dumps({
                    "command": cmd.model_dump(mode="json"), "policy": version,
                    "receipt": arrival.receipt}).decode(), cmd.at, cmd.at))
            numbers = await sql.insert_ids(_INSERT_INTAKE, rows)
        return [d.model_copy(update={"id": int(n)}) for d, n in zip(drafts, numbers,
                                                                     strict=True)]

    # ------------------------------------------------------------------ clicks

    async def receive_click(self, request_id: int, step: int, *, actor: str, at: datetime,
                            response_url: str | None) -> None:
        """Record an approve click, before Slack gets its acknowledgement; the decision
        follows in :meth:`process_clicks`. Clicks arriving together share a transaction."""
        await self._clicks(_Click(request_id, step, actor, at, response_url))

    async def _write_clicks(self, group: list[_Click]) -> list[None]:
        async with self.db.write_sql(urgent=True) as sql:
            await sql.many(
                "INSERT INTO clicks (request_id, step, actor, at, response_url) "
                "VALUES (?, ?, ?, ?, ?)",
                [(c.request_id, c.step, c.actor, c.at, c.response_url) for c in group])
        return [None] * len(group)

    async def _any(self, table: str) -> bool:
        """Whether ``table`` (``intake`` or ``clicks``) has a row (a read: no lock taken)."""
        async with self.db.read_sql() as sql:
            return bool(await sql.rows(_ANY[table]))

    async def _count(self, table: str) -> int:
        async with self.db.read_sql() as sql:
            (count,), = await sql.rows(_COUNT[table])
        return int(count)

    async def clicks_waiting(self) -> int:
        return await self._count("clicks")

    async def process_clicks(self, *, limit: int = INTAKE_BATCH) -> int:
        """Decide the recorded clicks, oldest first, each in the transaction that deletes
        it: up to ``limit`` per transaction on SQLite (fewer once :data:`CLICK_BUDGET` is
        spent), one on PostgreSQL (``SKIP LOCKED``). A refusal (not an assignee, already
        decided, no such request) is audited and told to the clicker: ephemeral through the
        click's ``response_url``, else by DM. Returns how many clicks were handled."""
        batch = limit if self.db.sqlite else 1
        if not await self._any("clicks"):
            return 0  # no write transaction (on SQLite, the lock) for nothing
        try:
            async with self.db.write_sql() as sql:
                rows = await self._due_clicks(sql, batch)
                started = time.perf_counter()
                decided = 0
                for row in rows:  # the rest, if the budget runs out, in the next one
                    await self._decide(sql, row)
                    decided += 1
                    if time.perf_counter() - started >= CLICK_BUDGET:
                        break
            return decided
        except Conflict:
            return 0
        except Exception as exc:
            if _database_down(exc):
                raise
            log.exception("could not decide on a click; taking them one at a time")
        async with self.db.read_sql() as sql:
            ids = [r.id for r in await self._due_clicks(sql, batch, lock=False)]
        for number in ids:
            try:
                async with self.db.write_sql() as sql:
                    found = await self._due_clicks(sql, 1, lock=False, number=number)
                    if found:
                        await self._decide(sql, found[0])
            except Exception as exc:
                if _database_down(exc):
                    raise
                log.exception("could not decide on click %s; dropping it", number)
                async with self.db.write() as session:
                    broken = await session.get(ClickRow, number)
                    if broken is not None:
                        await session.delete(broken)
                        self.enqueue(session, request_id=None, kind="tell", payload={
                            "user": broken.actor, "response_url": broken.response_url,
                            "text": "Something went wrong on our side and nothing was "
                                    "changed. Click again in a moment."}, at=broken.at)
        return len(ids)

    async def _due_clicks(self, sql: Sql, limit: int, *, lock: bool = True,
                          number: int | None = None) -> list[_Clicked]:
        """The oldest recorded clicks (or click ``number``)."""
        query = "SELECT id, request_id, step, actor, at, response_url FROM clicks"
        params: tuple[Any, ...] = (limit,)
        if number is not None:
            query, params = f"{query} WHERE id = ?", (number, limit)
        query += " ORDER BY id LIMIT ?"
        if lock and not sql.sqlite:
            query += " FOR UPDATE SKIP LOCKED"
        return [_Clicked(int(i), int(r), int(st), str(a), sql.time(at), u)
                for i, r, st, a, at, u in await sql.rows(query, params)]

    async def _decide(self, sql: Sql, row: _Clicked) -> Outcome | None:
        cmd = Approve(step=row.step, actor=row.actor, at=row.at)
        outcome = await self._act_in(sql, row.request_id, cmd)
        refusal = outcome.refusal if outcome is not None else None
        if outcome is None:  # a card older than this database, or a forged button
            refusal = Refusal(RefusalCode.STEP_NOT_PENDING, UNKNOWN_STEP)
            await self._append(sql, [(None, "click_refused", row.actor, {
                "action": "approve", "code": "unknown_step",
                "value": json.dumps({"r": row.request_id, "s": row.step}),
                "reason": UNKNOWN_STEP})], at=row.at)
        if refusal is not None:
            await sql.many(_INSERT_OUTBOX, [_outbox_values(
                row.request_id if outcome is not None else None, "tell",
                {"user": row.actor, "text": refusal.message, "response_url": row.response_url},
                at=row.at)])
        await sql.run("DELETE FROM clicks WHERE id = ?", (row.id,))
        return outcome

    async def intake_waiting(self) -> int:
        return await self._count("intake")

    async def process_intake(self, now: datetime, *, limit: int = INTAKE_BATCH
                             ) -> list[Outcome]:
        """Create the requests waiting in the intake, oldest first: up to ``limit`` in one
        transaction (one commit for all; fewer once :data:`CREATE_BUDGET` is spent, the
        rest in the next one). On PostgreSQL replicas take different rows (``SKIP
        LOCKED``), and a batch takes its requesters' advisory locks up front, in one order
        (see :meth:`history`), so two batches never wait on each other in a circle.

        A row that fails is retried alone, with a back-off; one that cannot become a
        request (or still fails after :data:`INTAKE_ATTEMPTS`) is removed and its
        requester is told by DM that nothing was created.
        """
        try:
            return await self._process_intake(now, limit)
        finally:
            self.intake_moved()

    async def _process_intake(self, now: datetime, limit: int) -> list[Outcome]:
        taken: list[_Waiting] = []
        if not await self._any("intake"):
            return []  # no write transaction (on SQLite, the lock) for nothing
        try:
            if self.db.sqlite:
                prepared = await self._intake_prepared(now, limit, taken)
                if prepared is not None:
                    return prepared
                taken.clear()  # stale: again, inside one transaction
            async with self.db.write_sql() as sql:
                rows = await self._due_intake(sql, now, limit)
                taken += rows
                if not sql.sqlite:
                    for key in sorted({_lock_key(r.requester) for r in rows}):
                        await sql.rows(_ADVISORY_LOCK, (key,))
                writes = _Writes()
                delegations = (await self._delegations(sql, min(r.received_at for r in rows))
                               if rows else {})
                outcomes = await self._create_budgeted(sql, rows, writes, delegations)
                await self._flush(sql, writes)
                await sql.many("DELETE FROM intake WHERE id = ?",
                               [(o.request.id,) for o in outcomes])
            return outcomes
        except Conflict:
            return []
        except Exception as exc:
            if _database_down(exc):
                raise
            if len(taken) <= 1:
                await self._intake_failed(now, exc)
                # that row waits now: go on with the next ones (a bounded number of times)
                return [] if limit <= 1 else await self._process_intake(now, limit - 1)
        # one of the batch failed: each row on its own, so the others are not held up
        outcomes = []
        async with self.db.read_sql() as sql:
            ids = [r.id for r in await self._due_intake(sql, now, limit, lock=False)]
        for number in ids:
            try:
                async with self.db.write_sql() as sql:
                    # (another replica may be creating it: theirs then)
                    found = await self._due_intake(sql, now, 1, number=number)
                    if found:
                        outcomes.append(await self._process(sql, found[0]))
            except Exception as exc:
                if _database_down(exc):
                    raise
                await self._intake_failed(now, exc, number=number)
        return outcomes

    async def _create_budgeted(self, sql: Sql, rows: Sequence[_Waiting], writes: _Writes,
                               delegations: dict[str, Delegation]) -> list[Outcome]:
        """Create ``rows`` in order into ``writes`` until :data:`CREATE_BUDGET` is spent
        (at least one); the rest wait for the next batch."""
        started = time.perf_counter()
        outcomes = []
        for waiting in rows:
            outcomes.append(await self._process(sql, waiting, writes=writes,
                                                delegations=delegations))
            if time.perf_counter() - started >= CREATE_BUDGET:
                break
        return outcomes

    async def _intake_prepared(self, now: datetime, limit: int, taken: list[_Waiting]
                               ) -> list[Outcome] | None:
        """SQLite: a batch of the intake created with its work -- the advisor, routing,
        documents, audit data, messages -- done in a read snapshot, before the write lock
        is taken; the write transaction then only checks and inserts. SQLite has one
        writer at a time, and the server's acknowledgements wait for it: the lock is held
        for the inserts alone, a few ms instead of the whole batch's work.

        ``None`` when the snapshot went stale meanwhile (another request was created, a
        delegation changed, a submission was taken elsewhere): nothing is written, and the
        caller creates the batch inside one transaction instead. ``taken``: the rows the
        batch took, added as they are read (the caller's failure handling needs them).
        """
        writes = _Writes(pending={})
        async with self.db.read_sql() as sql:
            rows = await self._due_intake(sql, now, limit, lock=False)
            taken += rows
            if not rows:
                return []
            (newest,), = await sql.rows(_NEWEST_REQUEST)
            since = min(r.received_at for r in rows)
            delegations = await self._delegations(sql, since)
            outcomes = await self._create_budgeted(sql, rows, writes, delegations)
        ids = [o.request.id for o in outcomes]
        try:
            async with self.db.write_sql() as sql:
                if ((await sql.rows(_NEWEST_REQUEST))[0][0] != newest
                        or await self._delegations(sql, since) != delegations):
                    raise _Stale
                gone = await sql.run(
                    f"DELETE FROM intake WHERE id IN ({_marks(len(ids))})",  # noqa: S608
                    ids)
                if gone != len(ids):
                    raise _Stale  # rolled back: created by someone else meanwhile
                await self._flush(sql, writes)
        except _Stale:
            return None
        return outcomes

    async def _due_intake(self, sql: Sql, now: datetime, limit: int, *, lock: bool = True,
                          number: int | None = None) -> list[_Waiting]:
        """The oldest submissions due (or submission ``number``, due or not); on
        PostgreSQL, those another replica is creating are skipped (``lock``)."""
        query = "SELECT id, requester, payload, received_at FROM intake"
        params: tuple[Any, ...]
        if number is None:
            query, params = f"{query} WHERE next_attempt_at <= ?", (now, limit)
        else:
            query, params = f"{query} WHERE id = ?", (number, limit)
        query += " ORDER BY id LIMIT ?"
        if lock and not sql.sqlite:
            query += " FOR UPDATE SKIP LOCKED"
        return [_Waiting(int(i), str(r), str(p), sql.time(at))
                for i, r, p, at in await sql.rows(query, params)]

    async def _process(self, sql: Sql, row: _Waiting, *, writes: _Writes | None = None,
                       delegations: dict[str, Delegation] | None = None) -> Outcome:
        """Create the request ``row`` stands for (``writes``: the caller deletes the row
        and flushes the writes; otherwise both happen here)."""
        data = orjson.loads(row.payload)
        cmd = Submit.model_validate(data["command"])
        policy = await self._load_policy(sql, data["policy"])
        outcome = await self._create(sql, cmd, policy=policy, request_id=row.id,
                                     receipt=bool(data.get("receipt")),
                                     delegations=delegations, writes=writes)
        if writes is None:
            await sql.run("DELETE FROM intake WHERE id = ?", (row.id,))
        return outcome

    async def _intake_failed(self, now: datetime, exc: Exception, *,
                             number: int | None = None) -> list[Outcome]:
        """Back off, or give up on the row and tell its requester."""
        log.exception("could not create a request from the intake")
        async with self.db.write() as session:
            if number is None:
                due = await self._due_intake(await self._sql(session), now, 1)
                number = due[0].id if due else None
            row = await session.get(IntakeRow, number) if number is not None else None
            if row is None:
                return []
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            final = isinstance(exc, RequestInvalid | Unroutable)
            if not final and row.attempts < INTAKE_ATTEMPTS:
                row.next_attempt_at = now + timedelta(seconds=2 ** row.attempts)
                return []
            await session.delete(row)
            reason = str(exc) if final else "it could not be recorded"
            self.enqueue(session, request_id=None, kind="intake_failed",
                         payload={"user": row.requester, "ref": f"PR-{row.id}",
                                  "reason": reason}, at=now)
        return []

    async def _advise(self, sql: Sql, cmd: Submit, policy: Policy, *,
                      writes: _Writes | None = None) -> tuple[Advice, Policy]:
        """The advisor's annotation of ``cmd``, from history read in this transaction
        (``writes``: a batch's rows not written yet; its requests go in first when the
        history reads requests, so a batch's later submissions see its earlier ones).

        Returns the policy to route with: the same one, or -- when the advisor failed, so
        nothing vouches for the request -- a copy without auto-approval. Humans decide then.
        """
        assert self.advisor is not None
        draft = Draft.of(cmd, policy)
        query = advising.history_query(draft, policy)
        if (writes is not None and writes.requests and writes.pending is None
                and history_statements(query)):
            await sql.many(_INSERT_REQUEST, writes.requests)
            writes.requests.clear()
        history = await self.history(sql, query)
        if writes is not None and writes.pending and query.vendor_key is not None:
            earlier = [p for p in writes.pending.get((query.requester, query.vendor_key), [])
                       if p.created_at >= query.since]
            if earlier:
                history = replace(history, same_vendor=(*history.same_vendor, *earlier))
        try:
            return self.advisor(draft, history, policy), policy
        except Exception:
            log.exception("the rules advisor failed on a request by %s", cmd.requester)
            failed = Advice(recommendation="review", risk="medium",
                            summary="The advisor could not check this request.",
                            note="The rules advisor failed; this request was not "
                                 "approved automatically.", sources=("rules",))
            return failed, policy.model_copy(update={"auto_approve": None})

    async def history(self, sql: Sql, query: HistoryQuery) -> History:
        """What the advisor needs from the past: one indexed query per part.

        On PostgreSQL the requester's submissions are serialised by an advisory lock held
        to the end of the transaction, so two at once still see each other (a double
        submit is flagged as a duplicate); SQLite's writers are serialised already.
        """
        if not sql.sqlite:
            await sql.rows(_ADVISORY_LOCK, (_lock_key(query.requester),))
        statements = history_statements(query)
        same: tuple[Past, ...] = ()
        if "same_vendor" in statements:
            same = tuple(Past(id=int(i), base_amount=Decimal(cents) / 100,
                              status=RequestStatus(status), created_at=sql.time(at))
                         for i, cents, status, at in await sql.rows(*statements["same_vendor"]))
        approved = False
        if "vendor_approved" in statements:
            approved = bool(await sql.rows(*statements["vendor_approved"]))
        spend = Decimal(0)
        if "spend" in statements:
            (cents,), = await sql.rows(*statements["spend"])
            spend = Decimal(int(cents or 0)) / 100
        return History(same_vendor=same, vendor_approved=approved, period_spend=spend)

    async def annotate(self, request_id: int, *, source: str, at: datetime,
                       opinion: Opinion | None = None, note: str | None = None
                       ) -> Outcome | None:
        """Add an LLM's opinion (or the note saying why there is none) to a request's
        advice; ``None`` when there is no such request. Nothing else of it changes."""
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.db.write() as session:
                    row = await session.get(RequestRow, request_id, with_for_update=True,
                                            populate_existing=True)
                    if row is None:
                        return None
                    request = Request.model_validate_json(row.doc)
                    outcome = advising.annotate(request, source=source, opinion=opinion,
                                                note=note)
                    if outcome.effects:
                        await self._save(await self._sql(session), row.version, outcome,
                                         at=at, changed=outcome.request != request)
                    return outcome
            except Conflict:
                continue
        raise RuntimeError(f"PR-{request_id} kept changing; gave up after {MAX_ATTEMPTS} tries")

    async def refuse_unless_decider(self, request_id: int, step: int, *, actor: str,
                                    action: str, at: datetime,
                                    answering: bool = False) -> Refusal | None:
        """Check, without deciding, that ``actor`` may decide (or, ``answering``, answer the
        step's open question); audit the refusal if not."""
        request = await self.get(request_id)
        if request is None:
            refusal = Refusal(RefusalCode.STEP_NOT_PENDING,
                              f"PR-{request_id} does not exist here any more.")
        else:
            found = (machine.may_answer if answering else machine.may_decide)(
                request, step, actor)
            if found is None:
                return None
            refusal = found
        audit = machine.refusal_audit(refusal, actor=actor, action=action, step=step)
        await self.record(request_id=request_id if request else None, event=audit.event,
                          actor=actor, data={**audit.data, "request_id": request_id}, at=at)
        return refusal

    async def act(self, request_id: int, cmd: Command) -> Outcome | None:
        """Run ``cmd`` on request ``request_id``; ``None`` when there is no such request."""
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.db.write_sql() as sql:
                    return await self._act_in(sql, request_id, cmd)
            except Conflict:
                continue
        raise RuntimeError(f"PR-{request_id} kept changing; gave up after {MAX_ATTEMPTS} tries")

    async def _act_in(self, sql: Sql, request_id: int, cmd: Command) -> Outcome | None:
        found = await sql.rows(_LOAD_REQUEST if sql.sqlite else f"{_LOAD_REQUEST} FOR UPDATE",
                               (request_id,))
        if not found:
            return None
        (doc, version, policy_hash), = found
        request = Request.model_validate_json(doc)
        policy = await self._load_policy(sql, policy_hash)
        outcome = machine.apply(request, cmd, policy=policy,
                                delegations=await self._delegations(sql, cmd.at))
        await self._save(sql, int(version), outcome, at=cmd.at,
                         changed=outcome.request != request)
        return outcome

    async def fire_timer(self, timer: DueTimer, *, now: datetime) -> Outcome | None:
        """Fire one due timer, exactly once: deleting its row is the claim.

        Several replicas may try the same timer at once. Each locks the request first and
        only then deletes the timer -- the order a decision takes (it locks the request,
        then cancels the step's timers) -- so the two never wait on each other in a circle;
        whoever comes second finds the row gone and does nothing.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.db.write_sql() as sql:
                    return await self._fire_in(sql, timer, now=now)
            except Conflict:
                continue
        raise RuntimeError(f"timer {timer.id} kept conflicting")

    async def fire_timers(self, timers: Sequence[DueTimer], *, now: datetime
                          ) -> list[Outcome | None]:
        """Fire due timers, each exactly once (see :meth:`fire_timer`).

        On SQLite, where one writer at a time is the rule anyway, a batch is one
        transaction: one commit and one pass over the pages it touches instead of one per
        timer. On PostgreSQL each timer keeps its own transaction, so replicas firing the
        same timers never hold many request locks at once.
        """
        if self.db.sqlite and len(timers) > 1:
            try:
                async with self.db.write_sql() as sql:
                    return [await self._fire_in(sql, t, now=now) for t in timers]
            except Exception:
                # one bad timer must not hold up the others: fire them one by one
                log.exception("firing %s timers together failed; firing them one by one",
                              len(timers))
        return [await self.fire_timer(t, now=now) for t in timers]

    async def _fire_in(self, sql: Sql, timer: DueTimer, *, now: datetime) -> Outcome | None:
        cmd: Command
        if timer.kind is TimerKind.REMIND:
            cmd = machine.Remind(step=timer.step, due_at=timer.due_at, at=now)
        else:
            cmd = machine.Escalate(step=timer.step, at=now)
        if not sql.sqlite:  # SQLite has one writer at a time: no row locks to take
            await sql.rows("SELECT id FROM requests WHERE id = ? FOR UPDATE",
                           (timer.request_id,))
        if await sql.run("DELETE FROM timers WHERE id = ?", (timer.id,)) != 1:
            return None  # fired elsewhere, or cancelled by a decision
        return await self._act_in(sql, timer.request_id, cmd)

    async def due_timers(self, now: datetime, *, limit: int = 100) -> list[DueTimer]:
        async with self.db.read() as session:
            rows = (await session.execute(
                select(TimerRow).where(TimerRow.due_at <= now)
                .order_by(TimerRow.due_at, TimerRow.id).limit(limit))).scalars().all()
        return [DueTimer(r.id, r.request_id, r.step, TimerKind(r.kind), r.due_at) for r in rows]

    async def next_timer_due(self) -> datetime | None:
        async with self.db.read() as session:
            value: datetime | None = (await session.execute(
                select(func.min(TimerRow.due_at)))).scalar_one_or_none()
        return value

    # ------------------------------------------------------------------ persistence

    async def _sql(self, session: AsyncSession) -> Sql:
        """Fixed SQL in ``session``'s transaction (:mod:`storage.sqlexec`)."""
        return await sql_of(session, sqlite=self.db.sqlite)

    async def _save(self, sql: Sql, version: int, outcome: Outcome, *,
                    at: datetime, changed: bool = True, created: bool = False,
                    inserted: bool = False, writes: _Writes | None = None) -> None:
        """Write ``outcome``: the request, its assignments, audit entries, timers and
        outbox rows, with one statement per table (``created``: the request is new, so
        it has no assignments to replace; ``inserted``: its row already holds this state;
        ``writes``: collect the rows instead, for :meth:`_flush`)."""
        request = outcome.request
        if changed and inserted:
            await self._project_assignments(sql, request, created=True, writes=writes)
        elif changed:
            updated = await sql.run(
                "UPDATE requests SET status = ?, updated_at = ?, version = ?, doc = ? "
                "WHERE id = ? AND version = ?",
                (request.status.value, request.updated_at, version + 1,
                 request.model_dump_json(), request.id, version))
            if updated != 1:
                raise Conflict(request.ref)
            await self._project_assignments(sql, request, created=created)
        audits = [e for e in outcome.effects if isinstance(e, Audit)]
        if audits and writes is not None:
            writes.audits += [(request.ref, a.event, a.actor, a.data, at) for a in audits]
        elif audits:
            await self._append(sql, [(request.ref, a.event, a.actor, a.data) for a in audits],
                               at=at)
        timers: list[tuple[Any, ...]] = []
        outbox: list[tuple[Any, ...]] = []
        for effect in outcome.effects:
            if isinstance(effect, SetTimer):
                timers.append((request.id, effect.step, effect.kind.value, effect.due_at))
                continue
            message = _message(effect)
            if message is not None:
                outbox.append(_outbox_values(request.id, *message, at=at))
        # cancelled before the new ones go in: a transition may cancel and set a step's timers
        for effect in outcome.effects:
            if isinstance(effect, CancelTimers):
                await sql.run("DELETE FROM timers WHERE request_id = ? AND step = ?",
                              (request.id, effect.step))
        homes: list[tuple[Any, ...]] = []
        if changed:  # their App Homes show this request: refresh them after the cards
            # One refresh waits per person (_insert_homes), due home_delay after the
            # first change it covers: a busy person's Home goes out once for many.
            due = at + timedelta(seconds=self.home_delay)
            homes = [_outbox_values(request.id, "home", {"user": user}, at=at, due=due)
                     for user in _people(request)]
        if writes is not None:
            writes.timers += timers
            writes.outbox += outbox
            writes.homes += homes
            return
        await sql.many(_INSERT_TIMER, timers)
        await sql.many(_INSERT_OUTBOX, outbox)
        await _insert_homes(sql, homes)

    async def _flush(self, sql: Sql, writes: _Writes) -> None:
        """Write what a batch of new requests collected: one statement per table, and the
        audit entries chained in one go, each with its own time."""
        await sql.many(_INSERT_REQUEST, writes.requests)
        await sql.many(_INSERT_ASSIGNMENT, writes.assignments)
        if writes.audits:
            await self._append(sql, [a[:4] for a in writes.audits],
                               at=writes.audits[0][4], ats=[a[4] for a in writes.audits])
        await sql.many(_INSERT_TIMER, writes.timers)
        await sql.many(_INSERT_OUTBOX, writes.outbox)
        await _insert_homes(sql, writes.homes)

    @staticmethod
    def enqueue(session: AsyncSession, *, request_id: int | None, kind: str,
                payload: dict[str, Any], at: datetime) -> None:
        session.add(OutboxRow(**_outbox_row(request_id, kind, payload, at=at)))

    async def _project_assignments(self, sql: Sql, request: Request, *,
                                   created: bool = False, writes: _Writes | None = None
                                   ) -> None:
        if not created:
            await sql.run("DELETE FROM assignments WHERE request_id = ?", (request.id,))
        step = request.current
        if step is None or not step.assignees:
            return
        rows = []
        for user in step.assignees:
            principal = step.principal(user)
            rows.append((user, request.id, step.index, step.started_at or request.updated_at,
                         principal if principal != user else None))
        if writes is not None and created:
            writes.assignments += rows
            return
        await sql.many(_INSERT_ASSIGNMENT, rows)

    async def _append(self, sql: Sql,
                      items: Sequence[tuple[str | None, str, str, dict[str, Any]]], *,
                      at: datetime, ats: Sequence[datetime] | None = None) -> list[Entry]:
        """Append audit entries, chained to the head; the head row lock serialises writers."""
        (seq, prev), = await sql.rows(_AUDIT_HEAD if self.db.sqlite
                                      else f"{_AUDIT_HEAD} FOR UPDATE")
        entries: list[Entry] = []
        rows: list[tuple[Any, ...]] = []
        for position, (ref, event, actor, data) in enumerate(items):
            seq += 1
            entry = make_entry(seq=seq, prev_hash=prev, request=ref, event=event, actor=actor,
                               at=ats[position] if ats is not None else at, data=data)
            entries.append(entry)
            rows.append((entry.seq, entry.request, entry.event, entry.actor, entry.at,
                         entry.data_json, entry.prev_hash, entry.hash))
            prev = entry.hash
        await sql.many(_INSERT_AUDIT, rows)
        await sql.run("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
        return entries

    async def record(self, *, request_id: int | None, event: str, actor: str,
                     data: dict[str, Any], at: datetime) -> None:
        """Append one audit entry that no transition produced (a delivery, a stray click)."""
        async with self.db.write_sql() as sql:
            await self._append(sql, [(f"PR-{request_id}" if request_id else None, event,
                                          actor, data)], at=at)

    # ------------------------------------------------------------------ delegation

    async def _delegations(self, sql: Sql, at: datetime) -> dict[str, Delegation]:
        rows = await sql.rows(
            "SELECT delegator, delegate, until FROM delegations WHERE until > ?", (at,))
        return {str(d): Delegation(str(to), sql.time(until)) for d, to, until in rows}

    async def delegation_of(self, user: str, *, at: datetime) -> Delegation | None:
        async with self.db.read_sql() as sql:
            return (await self._delegations(sql, at)).get(user)

    async def set_delegation(self, delegator: str, delegate: str, *, until: datetime,
                             at: datetime) -> list[Outcome]:
        """``delegator`` is away until ``until``: their pending steps go to ``delegate``.

        Raises ``RequestInvalid`` for a delegation to oneself, into the past, or in a loop.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.db.write() as session:
                    sql = await self._sql(session)
                    current = await self._delegations(sql, at)
                    check(delegator, delegate, current, at=at, until=until)
                    await session.execute(delete(DelegationRow).where(
                        DelegationRow.delegator == delegator))
                    session.add(DelegationRow(delegator=delegator, delegate=delegate,
                                              until=until, created_at=at))
                    await session.flush()
                    current[delegator] = Delegation(delegate, until)
                    # requests first, the audit head last: the lock order every decision takes
                    moved = await self._hand_over_all(session, delegator, current, at=at)
                    await self._append(sql, [(None, "delegated", delegator, {
                        "to": delegate, "until": until.isoformat()})], at=at)
                    return moved
            except Conflict:
                continue
        raise RuntimeError("delegation kept conflicting")

    async def end_expired_delegations(self, now: datetime) -> int:
        """Delegations whose window has passed end by themselves: their steps come back."""
        async with self.db.read() as session:
            expired = (await session.execute(select(DelegationRow.delegator).where(
                DelegationRow.until <= now))).scalars().all()
        for delegator in expired:
            await self.clear_delegation(delegator, at=now, actor=machine.SYSTEM)
        return len(expired)

    async def clear_delegation(self, delegator: str, *, at: datetime,
                               actor: str | None = None) -> list[Outcome] | None:
        """End ``delegator``'s delegation; steps handed over come back. ``None``: there was none."""
        for _ in range(MAX_ATTEMPTS):
            try:
                async with self.db.write() as session:
                    sql = await self._sql(session)
                    current = await self._delegations(sql, at)
                    current.pop(delegator, None)
                    # an expired delegation still ends: the steps it handed over come back
                    if await session.get(DelegationRow, delegator) is None:
                        return None
                    await session.execute(delete(DelegationRow).where(
                        DelegationRow.delegator == delegator))
                    back = await self._hand_back(session, delegator, current, at=at)
                    await self._append(sql, [(None, "delegated", actor or delegator, {
                        "from": delegator, "to": None, "ended": True})], at=at)
                    return back
            except Conflict:
                continue
        raise RuntimeError("delegation kept conflicting")

    async def _hand_over_all(self, session: AsyncSession, delegator: str,
                             delegations: dict[str, Delegation], *,
                             at: datetime) -> list[Outcome]:
        """Move ``delegator``'s pending steps to their (resolved) delegate."""
        sql = await self._sql(session)
        rows = (await session.execute(select(AssignmentRow.request_id, AssignmentRow.step)
                                      .where(AssignmentRow.user_id == delegator))).all()
        outcomes = []
        for request_id, step in rows:
            row = await session.get(RequestRow, request_id, with_for_update=True,
                                    populate_existing=True)
            if row is None:
                continue
            request = Request.model_validate_json(row.doc)
            excluded = {request.requester, *request.deciders}
            to = resolve(delegator, delegations, at=at, excluded=excluded)
            outcome = machine.hand_over(request, HandOver(step=step, frm=delegator, to=to,
                                                          at=at),
                                        policy=await self._load_policy(sql, row.policy_hash))
            await self._save(sql, row.version, outcome, at=at,
                             changed=outcome.request != request)
            if outcome.changed:
                outcomes.append(outcome)
        return outcomes

    async def _hand_back(self, session: AsyncSession, delegator: str,
                         delegations: dict[str, Delegation], *, at: datetime) -> list[Outcome]:
        """Give ``delegator`` back the pending steps a delegate holds on their behalf."""
        sql = await self._sql(session)
        rows = (await session.execute(select(AssignmentRow.request_id).where(
            AssignmentRow.principal == delegator).distinct())).all()
        outcomes = []
        for (request_id,) in rows:
            row = await session.get(RequestRow, request_id, with_for_update=True,
                                    populate_existing=True)
            if row is None:
                continue
            request = Request.model_validate_json(row.doc)
            step = request.current
            if step is None:
                continue
            holder = next((d for d, p in step.on_behalf.items() if p == delegator), None)
            if holder is None:
                continue
            outcome = machine.hand_over(request, HandOver(step=step.index, frm=holder,
                                                          to=delegator, at=at),
                                        policy=await self._load_policy(sql, row.policy_hash))
            await self._save(sql, row.version, outcome, at=at,
                             changed=outcome.request != request)
            if outcome.changed:
                outcomes.append(outcome)
        return outcomes

    # ------------------------------------------------------------------ reads

    async def get(self, request_id: int) -> Request | None:
        async with self.db.read_sql() as sql:
            found = await sql.rows("SELECT doc FROM requests WHERE id = ?", (request_id,))
        return Request.model_validate_json(found[0][0]) if found else None

    async def for_delivery(self, request_ids: Sequence[int]
                           ) -> tuple[dict[int, Request], dict[tuple[int, int, str], CardRef]]:
        """The requests, and the cards already sent for them, that a round of deliveries
        needs: two statements in one snapshot instead of two per message."""
        if not request_ids:
            return {}, {}
        ids = sorted(set(request_ids))
        marks = _marks(len(ids))  # placeholders only: the values are bound
        async with self.db.read_sql() as sql:
            docs = await sql.rows(
                f"SELECT id, doc FROM requests WHERE id IN ({marks})", ids)  # noqa: S608
            cards = await sql.rows(
                "SELECT request_id, step, user_id, channel, ts FROM cards "  # noqa: S608
                f"WHERE request_id IN ({marks})", ids)
        return ({int(i): Request.model_validate_json(doc) for i, doc in docs},
                {(int(r), int(st), str(u)): CardRef(int(r), int(st), str(u), str(c), str(ts))
                 for r, st, u, c, ts in cards})

    async def home(self, user: str, *, waiting: int, mine: int
                   ) -> tuple[list[tuple[Request, Step]], int, list[Request], int]:
        """What ``user``'s App Home shows, in one snapshot: the first ``waiting`` steps
        waiting for them and how many there are, their ``mine`` newest requests and how
        many there are."""
        async with self.db.read() as session:
            rows = (await session.execute(self._waiting_query(user, waiting))).all()
            waiting_total = int((await session.execute(
                select(func.count()).select_from(AssignmentRow)
                .where(AssignmentRow.user_id == user))).scalar_one())
            docs = (await session.execute(self._mine_query(user, mine))).scalars().all()
            mine_total = int((await session.execute(
                select(func.count()).select_from(RequestRow)
                .where(RequestRow.requester == user))).scalar_one())
        return (_waiting(rows), waiting_total, [Request.model_validate_json(d) for d in docs],
                mine_total)

    @staticmethod
    def _waiting_query(user: str, limit: int) -> Select[str, int]:
        """The first ``limit`` steps waiting for ``user``, oldest first, with their
        requests' documents: the steps are sorted and cut first, so only the documents
        shown are read (joined before the sort, all of an approver's thousands were:
        1.7 ms for 643, tens of ms for 10,000)."""
        first = (select(AssignmentRow.request_id, AssignmentRow.step, AssignmentRow.since)
                 .where(AssignmentRow.user_id == user)
                 .order_by(AssignmentRow.since, AssignmentRow.request_id).limit(limit)
                 .subquery())
        return (select(RequestRow.doc, first.c.step)
                .join(RequestRow, RequestRow.id == first.c.request_id)
                .order_by(first.c.since, first.c.request_id))

    @staticmethod
    def _mine_query(user: str, limit: int) -> Select[str]:
        return (select(RequestRow.doc).where(RequestRow.requester == user)
                .order_by(RequestRow.created_at.desc(), RequestRow.id.desc()).limit(limit))

    async def waiting_for(self, user: str, *, limit: int = 50) -> list[tuple[Request, Step]]:
        """Pending steps ``user`` may decide, oldest first."""
        async with self.db.read() as session:
            rows = (await session.execute(self._waiting_query(user, limit))).all()
        return _waiting(rows)

    async def count_waiting_for(self, user: str) -> int:
        async with self.db.read() as session:
            return int((await session.execute(
                select(func.count()).select_from(AssignmentRow)
                .where(AssignmentRow.user_id == user))).scalar_one())

    async def count_requests_of(self, user: str) -> int:
        async with self.db.read() as session:
            return int((await session.execute(
                select(func.count()).select_from(RequestRow)
                .where(RequestRow.requester == user))).scalar_one())

    async def requests_of(self, user: str, *, limit: int = 50) -> list[Request]:
        """``user``'s own requests, newest first."""
        async with self.db.read() as session:
            docs = (await session.execute(self._mine_query(user, limit))).scalars().all()
        return [Request.model_validate_json(doc) for doc in docs]

    # ------------------------------------------------------------------ outbox

    async def claim_outbox(self, now: datetime, *, limit: int = 50,
                           lease_seconds: float = 30, homes: bool | int = True
                           ) -> list[OutboxItem]:
        """Take up to ``limit`` due messages; others skip them until the lease runs out.

        Messages to people come first. App Home refreshes fill what room is left (unless
        not ``homes``; a number: of that many people at most, those waiting longest), and a
        person's are claimed all together: one publish, made after they were committed,
        shows everything each of them was queued for.
        """
        async with self.db.write_sql(urgent=True) as sql:
            rows = await sql.rows(self._claim_people, (now, limit))
            room = limit - len(rows)
            if homes is not True:
                room = min(room, int(homes))
            if room > 0:
                people = [p for p, in await sql.rows(
                    "SELECT payload FROM outbox WHERE status = 'pending' AND kind = 'home' "
                    "AND next_attempt_at <= ? GROUP BY payload ORDER BY min(id) LIMIT ?",
                    (now, room))]
                if people:
                    # with all their later ones, due or not: the publish shows those too,
                    # so a busy person's Home goes out at most once per home_delay. Not
                    # those another replica holds (tried, with a lease running): they are
                    # its to publish.
                    query = (f"{_OUTBOX_COLUMNS} WHERE status = 'pending' AND kind = 'home' "
                             f"AND payload IN ({_marks(len(people))}) "
                             "AND (attempts = 0 OR next_attempt_at <= ?) ORDER BY id")
                    if not sql.sqlite:
                        query += " FOR UPDATE SKIP LOCKED"
                    rows += await sql.rows(query, (*people, now))
            lease = now + timedelta(seconds=lease_seconds)
            await sql.many("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ? "
                           "WHERE id = ?", [(lease, r[0]) for r in rows])
            items = [OutboxItem(int(i), r, str(k), orjson.loads(p), int(a) + 1, sql.time(c))
                     for i, r, k, p, a, c in rows]
        return items

    async def people_waiting(self, *, limit: int) -> int:
        """Messages to people not sent yet (claimed ones included), counted up to
        ``limit``: how far delivery is behind, read through ``ix_outbox_people``."""
        async with self.db.read_sql() as sql:
            (count,), = await sql.rows(self._count_people, (limit,))
        return int(count)

    async def outbox_release(self, item_ids: Sequence[int], *, at: datetime) -> None:
        """Give back claimed rows untried (an earlier message of their request failed)."""
        if not item_ids:
            return
        async with self.db.write_sql(urgent=True) as sql:
            await sql.many("UPDATE outbox SET next_attempt_at = ?, attempts = attempts - 1 "
                           "WHERE id = ?", [(at, i) for i in item_ids])

    async def outbox_done(self, item_id: int, *, at: datetime, card: CardRef | None = None,
                          audit: tuple[str, str, dict[str, Any]] | None = None,
                          also: Sequence[int] = ()) -> None:
        """Mark a message sent, with the card it made and its audit entry, atomically;
        ``also``: rows the same delivery satisfied (a person's other Home refreshes)."""
        await self.outbox_done_many([Sent(item_id, card, audit, tuple(also))], at=at)

    async def outbox_done_many(self, sent: Sequence[Sent], *, at: datetime) -> None:
        """Mark several messages sent in one transaction (see :meth:`outbox_done`); a row
        already marked (by another process) is left as it is, its card and audit entry
        not recorded twice."""
        if not sent:
            return
        async with self.db.write_sql(urgent=True) as sql:
            ids = [s.item_id for s in sent]
            query = ("SELECT id, request_id FROM outbox "  # noqa: S608 (placeholders only)
                     f"WHERE id IN ({_marks(len(ids))}) AND status <> 'sent'")
            rows: dict[int, int | None] = dict(await sql.rows(
                query if sql.sqlite else f"{query} FOR UPDATE", ids))
            extra = [i for s in sent if s.item_id in rows for i in s.also]
            await sql.many("UPDATE outbox SET status = 'sent', sent_at = ?, last_error = NULL "
                           "WHERE id = ? AND status <> 'sent'",
                           [(at, i) for i in [*rows, *extra]])
            fresh = [s for s in sent if s.item_id in rows]
            cards = [s.card for s in fresh if s.card is not None]
            if cards:
                await self._save_cards(sql, cards, at=at)
            audits = [(f"PR-{rows[s.item_id]}", *s.audit) for s in fresh
                      if s.audit is not None and rows[s.item_id] is not None]
            if audits:
                await self._append(sql, audits, at=at)

    async def outbox_retry(self, item_id: int, *, error: str, retry_at: datetime,
                           dead: bool = False) -> None:
        async with self.db.write_sql(urgent=True) as sql:
            await sql.run("UPDATE outbox SET status = ?, next_attempt_at = ?, last_error = ? "
                          "WHERE id = ?", ("dead" if dead else "pending", retry_at,
                                           error[:2000], item_id))

    async def outbox_counts(self) -> dict[str, int]:
        async with self.db.read() as session:
            rows = (await session.execute(
                select(OutboxRow.status, func.count()).group_by(OutboxRow.status))).all()
        return {status: int(count) for status, count in rows}

    async def _save_cards(self, sql: Sql, cards: Sequence[CardRef], *,
                          at: datetime) -> None:
        """Record where ``cards`` went. One statement, so a card that another replica
        recorded a moment ago for the same step and person is updated, never a unique
        violation (a read-then-insert would race under READ COMMITTED)."""
        latest = {(c.request_id, c.step, c.user): c for c in cards}  # one row per key
        await sql.many(
            "INSERT INTO cards (request_id, step, user_id, channel, ts, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id, step, user_id) "
            "DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
            [(c.request_id, c.step, c.user, c.channel, c.ts, at) for c in latest.values()])

    async def cards(self, request_id: int, step: int | None = None) -> list[CardRef]:
        query = "SELECT request_id, step, user_id, channel, ts FROM cards WHERE request_id = ?"
        params: tuple[int, ...] = (request_id,)
        if step is not None:
            query, params = f"{query} AND step = ?", (request_id, step)
        async with self.db.read_sql() as sql:
            rows = await sql.rows(f"{query} ORDER BY id", params)
        return [CardRef(int(r), int(st), str(u), str(c), str(ts)) for r, st, u, c, ts in rows]

    async def first_delivery(self, event_id: str, *, at: datetime) -> bool:
        """True the first time ``event_id`` is seen (Slack retries deliveries).

        The insert is the claim: when a delivery and its retry reach two replicas at
        once, the second insert meets the first's key and that replica gets ``False``.
        """
        try:
            async with self.db.write() as session:
                if await session.get(SlackEventRow, event_id) is not None:
                    return False
                session.add(SlackEventRow(event_id=event_id, received_at=at))
        except IntegrityError:
            return False
        return True

    # ------------------------------------------------------------------ audit reads

    async def audit_for(self, request_id: int) -> list[Entry]:
        async with self.db.read() as session:
            rows = (await session.execute(
                select(AuditRow).where(AuditRow.request == f"PR-{request_id}")
                .order_by(AuditRow.seq))).scalars().all()
        return [_entry(r) for r in rows]

    async def audit_entries(self, *, batch: int = 1000) -> AsyncIterator[Entry]:
        """Every entry in order, read in batches (constant memory)."""
        last = 0
        while True:
            async with self.db.read() as session:
                rows = (await session.execute(
                    select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq)
                    .limit(batch))).scalars().all()
            if not rows:
                return
            for row in rows:
                yield _entry(row)
            last = rows[-1].seq

    async def audit_count(self) -> int:
        async with self.db.read() as session:
            return int((await session.execute(select(func.count()).select_from(AuditRow)))
                       .scalar_one())

    async def verify_audit(self) -> Break | None:
        """Check the whole chain against its head; the first break, or ``None``."""
        async with self.db.read() as session:
            head_row = await session.get(AuditHeadRow, 1)
            head = (head_row.seq, head_row.hash) if head_row else None
            # entries appended after the head was read are not part of this check
            limit = head[0] if head else None
            query = select(AuditRow).order_by(AuditRow.seq)
            if limit is not None:
                query = query.where(AuditRow.seq <= limit)
            rows = (await session.execute(query)).scalars().all()
        return verify((_entry(r) for r in rows), head=head)


class _Stale(Exception):
    """A batch prepared in a snapshot found the database changed when it came to write."""


def _database_down(exc: BaseException) -> bool:
    """Not the submission's fault: the database did not answer (the tick tries again)."""
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


def _waiting(rows: Sequence[Row[str, int]]) -> list[tuple[Request, Step]]:
    out: list[tuple[Request, Step]] = []
    for doc, index in rows:
        request = Request.model_validate_json(doc)
        out.append((request, request.steps[index]))
    return out


def _table(row: type[Base]) -> Table:
    """The Core table of a mapped class: Core statements skip the ORM's unit of work."""
    return cast(Table, row.__table__)


def _message(effect: Effect) -> tuple[str, dict[str, Any]] | None:
    """The outbox row (kind, payload) an effect asks for; ``None`` for the others."""
    if isinstance(effect, SendCard):
        return "card", {"step": effect.step, "user": effect.user}
    if isinstance(effect, UpdateCards):
        return "update_cards", {"step": effect.step}
    if isinstance(effect, Notify):
        return "notify", {"user": effect.user, "notice": effect.notice.value,
                          "step": effect.step}
    if isinstance(effect, SendReminder):
        return "reminder", {"step": effect.step, "user": effect.user,
                            "waited_seconds": effect.waited_seconds}
    if isinstance(effect, AskRequester):
        return "ask", {"step": effect.step, "question": effect.question}
    if isinstance(effect, DeliverAnswer):
        return "answer", {"step": effect.step, "question": effect.question}
    return None  # Audit, SetTimer and CancelTimers are written by _save


def _claim_people(*, sqlite: bool) -> str:
    """Due messages to people, oldest first, each only once every earlier message of its
    request (App Home refreshes aside) has gone: they go out in order. Parameters: now,
    limit.

    Read through ``ix_outbox_people``, whose condition (``OUTBOX_PEOPLE``) the WHERE repeats; on
    SQLite the index is named, since without statistics its planner would walk every
    pending row, the App Home refreshes that wait during a burst included (thousands)."""
    hint = " INDEXED BY ix_outbox_people" if sqlite else ""
    lock = "" if sqlite else " FOR UPDATE OF o SKIP LOCKED"
    return f"""
        SELECT o.id, o.request_id, o.kind, o.payload, o.attempts, o.created_at
        FROM outbox AS o{hint}
        WHERE o.status = 'pending' AND o.kind <> 'home' AND o.next_attempt_at <= ?
          AND (o.request_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM outbox AS e
                WHERE e.request_id = o.request_id AND e.status = 'pending'
                  AND e.kind <> 'home' AND e.id < o.id))
        ORDER BY o.id LIMIT ?{lock}"""  # noqa: S608 (constants only)


def _count_people(*, sqlite: bool) -> str:
    """How many messages to people are not sent yet, up to a limit (the parameter; see
    :func:`_claim_people` for the index)."""
    hint = " INDEXED BY ix_outbox_people" if sqlite else ""
    return f"""
        SELECT count(*) AS n FROM (
            SELECT 1 FROM outbox{hint}
            WHERE {OUTBOX_PEOPLE} LIMIT ?) AS w"""  # noqa: S608 (constants only)


def _marks(count: int) -> str:
    """``?, ?, ?``: the placeholders of an ``IN`` list of ``count`` values."""
    return ", ".join("?" * count)


_OUTBOX_COLUMNS = ("SELECT id, request_id, kind, payload, attempts, created_at "
                   "FROM outbox")


# The hot path's inserts (storage.sqlexec), each with its rows as tuples in this order.
_INSERT_REQUEST = (
    "INSERT INTO requests (id, requester, status, vendor, vendor_key, cost_center, currency, "
    "base_amount_cents, policy_hash, created_at, updated_at, version, doc) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_ASSIGNMENT = ("INSERT INTO assignments (user_id, request_id, step, since, principal) "
                      "VALUES (?, ?, ?, ?, ?)")
_INSERT_TIMER = "INSERT INTO timers (request_id, step, kind, due_at) VALUES (?, ?, ?, ?)"
_INSERT_OUTBOX = (
    "INSERT INTO outbox (request_id, kind, payload, status, attempts, next_attempt_at, "
    "created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)")
_AUDIT_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
_LOAD_REQUEST = "SELECT doc, version, policy_hash FROM requests WHERE id = ?"
_NEWEST_REQUEST = "SELECT max(id) FROM requests"
_ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(?)"  # PostgreSQL: held to the transaction's end
_ANY = {"intake": "SELECT 1 FROM intake LIMIT 1", "clicks": "SELECT 1 FROM clicks LIMIT 1"}
_COUNT = {"intake": "SELECT count(*) FROM intake", "clicks": "SELECT count(*) FROM clicks"}
# the people among some whose App Home refresh waits untried (ix_outbox_home_waiting:
# named for SQLite, whose planner, without statistics, takes ix_outbox_due and reads every
# pending row, milliseconds on a busy outbox; INDEXED BY fails rather than do that)
_HOMES_WAITING = {sqlite: "SELECT payload FROM outbox"  # noqa: S608
                  f"{' INDEXED BY ix_outbox_home_waiting' if sqlite else ''} "
                  f"WHERE {HOME_WAITING} AND payload IN " for sqlite in (True, False)}
_INSERT_INTAKE = ("INSERT INTO intake (requester, payload, received_at, attempts, "
                 "next_attempt_at) VALUES (?, ?, ?, 0, ?)")
_INSERT_AUDIT = ("INSERT INTO audit (seq, request, event, actor, at, data, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


async def _insert_homes(sql: Sql, homes: Sequence[tuple[Any, ...]]) -> None:
    """App Home refreshes (rows for ``_INSERT_OUTBOX``), except for a person who already has
    one waiting untried, or earlier in ``homes``: that one goes out after this change
    anyway, and a publish reads the person's state when it is sent. On SQLite, with one
    writer, that is exact; on PostgreSQL two replicas' transactions may each add one for the
    same person at once, which costs one more publish, nothing else. (A unique index would
    make it exact there too, but would fail the writes of a replica of an earlier version
    still running during a rolling upgrade: revision 0006.)"""
    if not homes:
        return
    payloads = sorted({row[2] for row in homes})
    waiting = {payload for (payload,) in await sql.rows(
        f"{_HOMES_WAITING[sql.sqlite]}({_marks(len(payloads))})", payloads)}
    fresh = []
    for row in homes:
        if row[2] not in waiting:
            waiting.add(row[2])
            fresh.append(row)
    await sql.many(_INSERT_OUTBOX, fresh)


def _outbox_values(request_id: int | None, kind: str, payload: dict[str, Any], *,
                   at: datetime, due: datetime | None = None) -> tuple[Any, ...]:
    """An outbox row for ``_INSERT_OUTBOX``."""
    return (request_id, kind, json.dumps(payload, sort_keys=True), due or at, at)


def _outbox_row(request_id: int | None, kind: str, payload: dict[str, Any], *,
                at: datetime, due: datetime | None = None) -> dict[str, Any]:
    return {"request_id": request_id, "kind": kind,
            "payload": json.dumps(payload, sort_keys=True), "status": "pending",
            "attempts": 0, "next_attempt_at": due or at, "created_at": at, "sent_at": None,
            "last_error": None}


def history_statements(query: HistoryQuery) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """The advisor's history queries (SQL and parameters), each answered from one index
    of ``requests``: ``same_vendor`` (requester, vendor_key, created_at),
    ``vendor_approved`` (vendor_key, status) and ``spend`` (cost_center, status,
    created_at). Parts that do not apply to the draft (no vendor, no budget) are left
    out."""
    out: dict[str, tuple[str, tuple[Any, ...]]] = {}
    if query.vendor_key is not None:
        out["same_vendor"] = (
            "SELECT id, base_amount_cents, status, created_at FROM requests "
            "WHERE requester = ? AND vendor_key = ? AND created_at >= ? "
            "AND status IN ('pending', 'approved') ORDER BY created_at DESC LIMIT ?",
            (query.requester, query.vendor_key, query.since, SAME_VENDOR_MAX))
        out["vendor_approved"] = (
            "SELECT id FROM requests WHERE vendor_key = ? AND status = 'approved' LIMIT 1",
            (query.vendor_key,))
    if query.cost_center is not None and query.period is not None:
        out["spend"] = (
            "SELECT sum(base_amount_cents) FROM requests WHERE cost_center = ? "
            "AND status = 'approved' AND created_at >= ? AND created_at < ?",
            (query.cost_center, query.period.start, query.period.end))
    return out


def _lock_key(requester: str) -> int:
    """A stable signed 64-bit advisory-lock key for one requester's submissions."""
    digest = hashlib.sha256(f"approvals:submit:{requester}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _people(request: Request) -> list[str]:
    """Everyone whose App Home shows this request: the requester and its assignees."""
    users = dict.fromkeys([request.requester])
    for step in request.steps:
        users.update(dict.fromkeys(step.assignees))
    return list(users)


def _entry(row: AuditRow) -> Entry:
    return Entry(seq=row.seq, request=row.request, event=row.event, actor=row.actor, at=row.at,
                 data=json.loads(row.data), prev_hash=row.prev_hash, hash=row.hash)
