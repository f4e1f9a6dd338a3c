"""Two `approvals serve` replicas on one PostgreSQL database and one Slack: every card,
reminder, escalation and outcome arrives exactly once, whichever replica Slack calls.

Slack's requests are spread over both replicas, the same click goes to both at once,
and reminders (2 s) and escalations (3 s) fall due while both replicas tick.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot import cards
from bot.standin.web_api import FakeSlack
from bot.standin.workspace import button_value, has_buttons
from flows.model import RequestStatus
from storage.db import Database
from storage.store import Store
from storage.tables import OutboxRow, TimerRow
from tests.process_support import Server, clean_env, eventually

POLICY = """\
version: 1
currency: USD
directory:
  U_ALICE: {manager: U_BOB}
  U_ERIN: {manager: U_BOB}
  U_BOB: {manager: U_CAROL}
  U_FIN1: {manager: U_CFO}
  U_FIN2: {manager: U_CFO}
levels:
  - {name: Manager, approvers: manager}
  - {name: Finance, over: 10000, approvers: [U_FIN1, U_FIN2]}
reminders: {after: 2s, every: 1h}
escalation: {after: 3s, to: manager}
"""
PEOPLE = ("U_ALICE", "U_ERIN", "U_BOB", "U_CAROL", "U_FIN1", "U_FIN2", "U_CFO")
CARD = "approval_card"
_REF = re.compile(r"PR-(\d+)")


def approvals(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """The console command as an operator runs it, with DATABASE_URL in the environment."""
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**clean_env(), "DATABASE_URL": database_url})


@pytest.fixture
async def replicas(pg_url: str, slack: FakeSlack, tmp_path: Path
                   ) -> AsyncIterator[tuple[Server, Server]]:
    upgraded = approvals("db", "upgrade", database_url=pg_url)
    assert upgraded.returncode == 0, upgraded.stderr
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    servers = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        servers.append(Server(slack=slack, workdir=workdir, policy=policy,
                              database_url=pg_url))
    try:
        await asyncio.gather(*(s.start() for s in servers))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


# --------------------------------------------------------------------------- what Slack holds


def metadata(message: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    meta = message.get("metadata") or {}
    return meta.get("event_type"), meta.get("event_payload") or {}


def is_reply(message: dict[str, Any]) -> bool:
    return message.get("thread_ts", message["ts"]) != message["ts"]


def cards_of(slack: FakeSlack, user: str, request: int | None = None,
             step: int | None = None) -> list[dict[str, Any]]:
    """``user``'s approval cards as they are now (updates applied)."""
    out = []
    for message in slack.messages_to(user):
        kind, payload = metadata(message)
        if kind == CARD and not is_reply(message) \
                and request in (None, payload.get("request")) \
                and step in (None, payload.get("step")):
            out.append(message)
    return out


def replies_to_card(slack: FakeSlack, card: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in slack.messages(str(card["channel"]))
            if is_reply(m) and m.get("thread_ts") == card["ts"]]


def outcome_dms(slack: FakeSlack, user: str, text: str) -> list[dict[str, Any]]:
    """``user``'s DMs whose notification text is ``text`` (``PR-3 is approved``)."""
    return [m for m in slack.messages_to(user)
            if metadata(m)[0] != CARD and not is_reply(m) and m.get("text") == text]


async def click(server: Server, user: str, card: dict[str, Any]) -> None:
    answer = await server.click(user, card, "approve", button_value(card, "approve"))
    assert answer.status_code == 200, answer.text


async def click_on_both(servers: tuple[Server, Server], user: str,
                        card: dict[str, Any]) -> None:
    """The same click, delivered to both replicas at the same moment."""
    await asyncio.gather(*(click(s, user, card) for s in servers))


async def create(server: Server, user: str, text: str) -> int:
    answer = await server.command(user, text)
    assert answer.status_code == 200, answer.text
    found = _REF.search(answer.text)
    assert found is not None, answer.text
    return int(found.group(1))


async def card_for(slack: FakeSlack, user: str, request: int, step: int) -> dict[str, Any]:
    await eventually(lambda: bool(cards_of(slack, user, request, step)), within=15,
                     what=f"{user}'s card for PR-{request}, step {step}")
    return cards_of(slack, user, request, step)[0]


# --------------------------------------------------------------------------- the test


async def test_two_replicas_deliver_everything_exactly_once(
        replicas: tuple[Server, Server], slack: FakeSlack, pg_url: str) -> None:
    a, b = replicas
    # requests through both replicas at once
    small_a, small_b, large_a, large_b, late_a, late_b = await asyncio.gather(
        create(a, "U_ALICE", "$500 USD Monitor arm"),
        create(b, "U_ERIN", "$700 USD Keyboard and mouse"),
        create(a, "U_ALICE", "$25,000 USD Standing desks for the team"),
        create(b, "U_ERIN", "$30,000 USD GPU workstation for training"),
        create(a, "U_ALICE", "$800 USD Conference tickets"),
        create(b, "U_ERIN", "$900 USD Design software licences"))
    ids = [small_a, small_b, large_a, large_b, late_a, late_b]
    assert sorted(ids) == list(range(1, 7)), "every request got its own PR number"

    # decided at once, some clicks reaching both replicas together
    await click(a, "U_BOB", await card_for(slack, "U_BOB", small_a, 0))
    await click_on_both(replicas, "U_BOB", await card_for(slack, "U_BOB", small_b, 0))
    await click_on_both(replicas, "U_BOB", await card_for(slack, "U_BOB", large_a, 0))
    fin1, fin2 = await asyncio.gather(card_for(slack, "U_FIN1", large_a, 1),
                                      card_for(slack, "U_FIN2", large_a, 1))
    await asyncio.gather(click(a, "U_FIN2", fin2), click(b, "U_FIN1", fin1))  # one decides

    # left waiting: reminded after 2 s and escalated after 3 s while both replicas tick
    for request in (large_b, late_a, late_b):
        card = await card_for(slack, "U_CAROL", request, 0)  # the escalation card
        bob = cards_of(slack, "U_BOB", request, 0)[0]
        await eventually(lambda bob=bob: bool(replies_to_card(slack, bob)), within=10,
                         what=f"the reminder about PR-{request}")
        assert card["ts"]
    await click_on_both(replicas, "U_CAROL", await card_for(slack, "U_CAROL", large_b, 0))
    await click(a, "U_BOB", cards_of(slack, "U_BOB", late_a, 0)[0])  # his own card, after all
    await click(b, "U_CAROL", await card_for(slack, "U_CAROL", late_b, 0))
    # the Finance step of large_b waits too: reminders to both, escalated to their manager
    await click_on_both(replicas, "U_CFO", await card_for(slack, "U_CFO", large_b, 1))

    db = Database(pg_url)
    try:
        store = Store(db)
        await settled(store, ids)
        await check_exactly_once(slack, store, ids)
        # the requests that waited were reminded and escalated, each step once
        for request, step, waiting in [(large_b, 0, ["U_BOB"]), (large_b, 1, ["U_FIN1",
                                                                                "U_FIN2"]),
                                       (late_a, 0, ["U_BOB"]), (late_b, 0, ["U_BOB"])]:
            events = [e for e in await store.audit_for(request) if e.data.get("step") == step]
            assert [e.event for e in events].count("reminded") == 1
            assert [e.event for e in events].count("escalated") == 1
            for user in waiting:
                assert len(replies_to_card(slack, cards_of(slack, user, request, step)[0])) == 1
        assert len(cards_of(slack, "U_CAROL")) == 3 and len(cards_of(slack, "U_CFO")) == 1
        for ref, user in [(large_b, "U_ERIN"), (late_a, "U_ALICE"), (late_b, "U_ERIN")]:
            assert outcome_dms(slack, user, f"PR-{ref} was escalated")
        await check_homes(slack, store)
    finally:
        await db.close()
    verified = approvals("audit", "verify", database_url=pg_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def settled(store: Store, ids: list[int], *, within: float = 20.0) -> None:
    """Every request ended, nothing left in the outbox, no timer due for an hour."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        requests = [await store.get(i) for i in ids]
        async with store.db.read() as session:
            pending = (await session.execute(select(func.count()).select_from(OutboxRow)
                                             .where(OutboxRow.status == "pending"))).scalar_one()
            soon = (await session.execute(select(func.count()).select_from(TimerRow).where(
                TimerRow.due_at < datetime.now(UTC) + timedelta(minutes=30)))).scalar_one()
        if all(r is not None and r.status is not RequestStatus.PENDING for r in requests) \
                and pending == 0 and soon == 0:
            return
        assert loop.time() < deadline, (
            f"not settled: {[r.status if r else None for r in requests]}, "
            f"{pending} messages pending, {soon} timers due")
        await asyncio.sleep(0.05)


async def check_exactly_once(slack: FakeSlack, store: Store, ids: list[int]) -> None:
    posted = [metadata(m)[1].get("outbox_id")
              for user in PEOPLE for m in slack.messages_to(user)]
    assert None not in posted, "a message posted outside the outbox"
    twice = [i for i, n in Counter(posted).items() if n > 1]
    assert twice == [], f"outbox rows posted more than once: {twice}"
    counts = await store.outbox_counts()
    assert counts == {"sent": counts["sent"]}, counts

    for request_id in ids:
        request = await store.get(request_id)
        assert request is not None and request.status is RequestStatus.APPROVED
        trail = await store.audit_for(request_id)
        for step in request.steps:
            events = Counter(e.event for e in trail if e.data.get("step") == step.index)
            assert events["approved"] == 1, (request.ref, step.index, events)
            assert events["reminded"] <= 1 and events["escalated"] <= 1
            # one card per assignee, every one of them updated: decided, no buttons
            sent = sorted(e.data["to"] for e in trail
                          if e.event == "card_sent" and e.data["step"] == step.index)
            assert sent == sorted(step.assignees), (request.ref, step.index)
            reminded = Counter(user for e in trail if e.event == "reminded"
                               and e.data["step"] == step.index for user in e.data["to"])
            for user in step.assignees:
                mine = cards_of(slack, user, request_id, step.index)
                assert len(mine) == 1, f"{user} got {len(mine)} cards for {request.ref}"
                assert not has_buttons(mine[0])
                assert len(replies_to_card(slack, mine[0])) == reminded[user]
        approved = outcome_dms(slack, request.requester, f"{request.ref} is approved")
        assert len(approved) == 1, f"{request.requester} told {len(approved)} times"
        escalations = sum(e.event == "escalated" for e in trail)
        assert len(outcome_dms(slack, request.requester, f"{request.ref} was escalated")) \
            == escalations
    assert await store.verify_audit() is None


async def check_homes(slack: FakeSlack, store: Store) -> None:
    """Each App Home shows what the database says now, whichever replica published last."""
    for user in PEOPLE:
        home = slack.home_of(user)
        assert home is not None, f"{user} has no App Home"
        expected = cards.home_view(await store.waiting_for(user, limit=200),
                                   await store.requests_of(user, limit=200), user)
        assert home["blocks"] == expected["blocks"], f"{user}'s App Home is out of date"
