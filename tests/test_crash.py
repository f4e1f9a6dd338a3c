"""Kill -9 `approvals serve` mid-flow, start it again: nothing lost, nothing seen twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bot.standin.web_api import FakeSlack
from bot.standin.workspace import button_value
from tests.process_support import Server, eventually

POLICY = """\
version: 1
currency: USD
directory:
  U_ALICE: {manager: U_BOB}
  U_BOB: {manager: U_CAROL}
levels:
  - {name: Manager, approvers: manager}
  - {name: Finance, over: 10000, approvers: [U_FIN1, U_FIN2]}
reminders: {after: 2s, every: 1h}
escalation: {after: 1h, to: manager}
"""


@pytest.fixture
def server(slack: FakeSlack, tmp_path: Path) -> Server:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return Server(slack=slack, workdir=tmp_path, policy=policy,
                  extra_env={"APPROVALS_OUTBOX_LEASE_SECONDS": "1"})


def cards_to(slack: FakeSlack, user: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(user) if m.get("thread_ts", m["ts"]) == m["ts"]
            and (m.get("metadata") or {}).get("event_type") == "approval_card"]


def replies_to(slack: FakeSlack, user: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(user) if m.get("thread_ts", m["ts"]) != m["ts"]]


def audit_count(server: Server, event: str) -> int:
    path = server.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM audit WHERE event = ?", (event,))
                   .fetchone()[0])


async def test_killed_between_slacks_post_and_its_mark(server: Server,
                                                       slack: FakeSlack) -> None:
    slack.stall("chat.postMessage")  # Slack posts the card, the answer never comes back
    await server.start()
    try:
        answer = await server.command("U_ALICE", "$25,000 USD Standing desks")
        assert answer.status_code == 200 and "PR-1" in answer.text
        await eventually(lambda: any(c.error == "stalled" for c in slack.calls()),
                         what="the card to be posted")
        server.kill()
        slack.heal()
        assert len(cards_to(slack, "U_BOB")) == 1  # Slack has it; the outbox never heard

        await server.start()
        await eventually(lambda: audit_count(server, "card_sent") == 1,
                         what="the restarted server to settle the unknown post")
        assert len(cards_to(slack, "U_BOB")) == 1, "the card was posted twice"
        assert slack.calls("conversations.history"), "the retry did not look first"

        # the flow goes on from that very card
        card = cards_to(slack, "U_BOB")[0]
        clicked = await server.click("U_BOB", card, "approve", button_value(card, "approve"))
        assert clicked.status_code == 200
        await eventually(lambda: bool(cards_to(slack, "U_FIN1")) and bool(
            cards_to(slack, "U_FIN2")), what="the Finance cards")
        assert len(cards_to(slack, "U_FIN1")) == len(cards_to(slack, "U_FIN2")) == 1
    finally:
        server.stop()


async def test_killed_after_commit_before_delivery_and_timers_survive(
        server: Server, slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=500, times=3)  # nothing delivered before the kill
    await server.start()
    try:
        started = time.monotonic()
        answer = await server.command("U_ALICE", "$900 USD Monitor arm")
        assert answer.status_code == 200 and "PR-1" in answer.text
        server.kill()
        slack.heal()
        assert cards_to(slack, "U_BOB") == []
        # stay down past the reminder's due time (2 s): it must fire after the restart
        await eventually(lambda: time.monotonic() - started > 2.5, what="the timer to be due")

        await server.start()
        restarted = time.monotonic()
        await eventually(lambda: len(cards_to(slack, "U_BOB")) == 1, what="the card")
        await eventually(lambda: len(replies_to(slack, "U_BOB")) == 1, within=5,
                         what="the overdue reminder")
        assert time.monotonic() - restarted < 4  # within two seconds of being back, give or take
        reminder = replies_to(slack, "U_BOB")[0]
        card = cards_to(slack, "U_BOB")[0]
        assert reminder["thread_ts"] == card["ts"]
        assert "PR-1" in json.dumps(reminder)
        # a second restart changes nothing: every message exactly once
        server.kill()
        await server.start()
        await asyncio.sleep(0.5)  # two ticks' worth: anything pending would go out now
        assert len(cards_to(slack, "U_BOB")) == 1
        assert len(replies_to(slack, "U_BOB")) == 1
        assert audit_count(server, "reminded") == 1
    finally:
        server.stop()
