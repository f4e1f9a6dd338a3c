"""Helpers for the timer, request-information, delegation and outbox-fault tests.

Everything runs through :class:`bot.standin.workspace.Workspace`: people act with signed
requests, time moves only on its :class:`~bot.clock.FakeClock`, and these helpers only
build policies and read what the stand-in Slack and the audit trail hold.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx

from bot.ids import ActionId
from bot.standin.web_api import FakeSlack
from bot.standin.workspace import Workspace, has_buttons
from flows.audit import Entry

HOUR = 3600
DAY = 24 * HOUR

_REF = re.compile(r"PR-(\d+)")


def policy_text(*, reminders: str | None = "{after: 4h, every: 24h}",
                escalation: str | None = "{after: 48h, to: manager}",
                extra_directory: str = "") -> str:
    """A policy like the example's, with the timer settings given (``None``: none)."""
    lines = [
        "version: 1",
        "currency: USD",
        "rates: {EUR: 1.08}",
        "directory:",
        "  U_ALICE: {manager: U_BOB}",
        "  U_BOB: {manager: U_CAROL}",
        "  U_CAROL: {manager: U_DAVE}",
        "  U_ERIN: {manager: U_BOB}",
        "  U_FIN1: {manager: U_CFO}",
        "  U_FIN2: {manager: U_CFO}",
        *([extra_directory] if extra_directory else []),
        "levels:",
        "  - {name: Manager, approvers: manager}",
        "  - {name: Finance, over: 10000, approvers: [U_FIN1, U_FIN2]}",
        "  - {name: Director, over: 100000, approvers: [U_DIR]}",
    ]
    if reminders is not None:
        lines.append(f"reminders: {reminders}")
    if escalation is not None:
        lines.append(f"escalation: {escalation}")
    return "\n".join(lines) + "\n"


def workspace(text: str | None = None, *, slack: FakeSlack | None = None,
              database_url: str | None = None) -> Workspace:
    return Workspace(policy_text=text if text is not None else policy_text(), slack=slack,
                     database_url=database_url)


def ack_text(response: httpx.Response) -> str:
    """The text of a slash command's acknowledgement (plain text or JSON)."""
    assert response.status_code == 200, response.text
    if not response.content:
        return ""
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return str(body.get("text", "")) if isinstance(body, dict) else ""
    return response.text


async def create(ws: Workspace, user: str, text: str) -> int:
    """``user`` types ``/purchase <text>``; the new request's number."""
    answer = ack_text(await ws.command(user, text))
    found = _REF.search(answer)
    assert found is not None, f"no PR-<n> in {answer!r}"
    return int(found.group(1))


async def later(ws: Workspace, seconds: float) -> None:
    """Move the clock and run what the background tick would."""
    ws.clock.advance(timedelta(seconds=seconds))
    await ws.settle()


def strings(value: object) -> list[str]:
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings(v)]
    return []


def content(message: dict[str, Any]) -> str:
    """A message's text and every string in its blocks, as one string."""
    return " ".join(strings(message.get("text")) + strings(message.get("blocks")))


def kind_of(message: dict[str, Any]) -> str:
    """What a bot message is, from its metadata and fallback text."""
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") == "approval_card":
        return "card"
    text = str(message.get("text", ""))
    for kind, marker in (("reminder", "Reminder:"), ("question", "a question from"),
                         ("answer", "answered your question"), ("escalated", "was escalated"),
                         ("approved", "is approved"), ("rejected", "was rejected"),
                         ("cancelled", "is cancelled")):
        if marker in text:
            return kind
    return "other"


def ref_of(message: dict[str, Any]) -> str | None:
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    if "request" in payload:
        return f"PR-{payload['request']}"
    found = _REF.search(str(message.get("text", "")))
    return found.group(0) if found else None


def dms(ws: Workspace, user: str, kind: str, ref: str | None = None) -> list[dict[str, Any]]:
    """The bot's messages of ``kind`` to ``user`` (about ``ref``), oldest first."""
    return [m for m in ws.slack.messages_to(user)
            if kind_of(m) == kind and (ref is None or ref_of(m) == ref)]


def reminders(ws: Workspace, user: str, ref: str | None = None) -> list[dict[str, Any]]:
    return dms(ws, user, "reminder", ref)


def tally(ws: Workspace, users: tuple[str, ...]) -> Counter[tuple[str, str | None, str]]:
    """How many messages each (user, PR, kind) got: everything should be 1."""
    return Counter((user, ref_of(m), kind_of(m)) for user in users
                   for m in ws.slack.messages_to(user))


def card_posts(ws: Workspace) -> Counter[tuple[str, str]]:
    """Successful ``chat.postMessage`` calls of approval cards, per (channel, PR)."""
    out: Counter[tuple[str, str]] = Counter()
    for call in ws.slack.calls("chat.postMessage"):
        metadata = call.params.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        if metadata.get("event_type") == "approval_card" and call.status == 200 \
                and call.error is None:
            out[(str(call.params["channel"]), f"PR-{metadata['event_payload']['request']}")] += 1
    return out


async def audit(ws: Workspace, request_id: int) -> list[Entry]:
    return await ws.runtime.store.audit_for(request_id)


async def events(ws: Workspace, request_id: int) -> list[str]:
    return [e.event for e in await audit(ws, request_id)]


def buttons(message: dict[str, Any]) -> set[str]:
    """The ``action_id`` of every button in ``message``."""
    return {str(e.get("action_id")) for b in message.get("blocks") or []
            for e in b.get("elements") or [] if e.get("type") == "button"}


def decidable(message: dict[str, Any]) -> bool:
    return has_buttons(message) and {ActionId.APPROVE.value,
                                     ActionId.REJECT.value} <= buttons(message)


def versions(ws: Workspace, message: dict[str, Any]) -> list[dict[str, Any]]:
    return ws.slack.versions(str(message["channel"]), str(message["ts"]))


async def timers(ws: Workspace) -> list[tuple[int, int, str, float]]:
    """The timer rows: (request, step, kind, seconds from now until due)."""
    from sqlalchemy import select

    from storage.tables import TimerRow

    now = ws.clock.now()
    async with ws.runtime.db.read() as session:
        rows = (await session.execute(select(TimerRow).order_by(TimerRow.due_at))).scalars()
        out = []
        for row in rows:
            due = row.due_at if row.due_at.tzinfo else row.due_at.replace(tzinfo=now.tzinfo)
            out.append((row.request_id, row.step, row.kind, (due - now).total_seconds()))
    return out
