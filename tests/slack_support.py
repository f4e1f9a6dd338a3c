"""Helpers for the tests that drive the real Slack app over signed HTTP.

Everything goes through :class:`bot.standin.workspace.Workspace`: people act with signed
requests to ``POST /slack/events`` and the tests read what the stand-in Slack received.
These helpers only read (what was posted, the audit trail) or build signed requests the
Workspace has no shortcut for (a click whose ``response_url`` the test keeps, a click from
the App Home).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bot.ids import ActionId
from bot.standin import signing
from bot.standin.web_api import Call
from bot.standin.workspace import Workspace, button_value
from flows.audit import Entry

ROOT = Path(__file__).resolve().parents[1]
POLICY = (ROOT / "docs" / "policy.example.yml").read_text(encoding="utf-8")

# Web API methods that show something to a person.
SHOWING = ("chat.postMessage", "chat.update", "chat.postEphemeral", "views.open",
           "views.push", "views.update", "views.publish")

_REF = re.compile(r"PR-(\d+)")


def workspace(policy_text: str = POLICY) -> Workspace:
    return Workspace(policy_text=policy_text)


def ack_text(response: httpx.Response) -> str:
    """The text of a slash command's acknowledgement (``""`` for an empty ack).

    Bolt answers a text-only ack as ``text/plain``, anything richer as JSON; Slack takes both.
    """
    assert response.status_code == 200, response.text
    if not response.content:
        return ""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return response.text
    body = response.json()
    return str(body.get("text", "")) if isinstance(body, dict) else ""


async def create(ws: Workspace, user: str, text: str) -> int:
    """``user`` types ``/purchase <text>``; the new request's id, read from the ack."""
    answer = ack_text(await ws.command(user, text))
    found = _REF.search(answer)
    assert found is not None, f"no PR-<n> in the acknowledgement: {answer!r}"
    return int(found.group(1))


def dm_texts(ws: Workspace, user: str) -> list[str]:
    """The fallback ``text`` of every message in the bot's DM with ``user``, oldest first."""
    return [str(m.get("text", "")) for m in ws.slack.messages_to(user)]


def dm_content(ws: Workspace, user: str) -> list[str]:
    """Each DM with ``user`` as one string: its text and every string in its blocks."""
    return [" ".join(strings(m.get("text")) + strings(m.get("blocks")))
            for m in ws.slack.messages_to(user)]


def non_card_dms(ws: Workspace, user: str) -> list[dict[str, Any]]:
    return [m for m in ws.slack.messages_to(user)
            if (m.get("metadata") or {}).get("event_type") != "approval_card"]


def strings(value: object) -> list[str]:
    """Every string inside a JSON-like value (texts of blocks, views, answers...)."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(value)
    return out


def block_text(message: dict[str, Any]) -> str:
    """All the text of a message or view (fallback and blocks), joined."""
    return "\n".join(strings(message.get("text")) + strings(message.get("blocks")))


def shown(call: Call) -> list[str]:
    """The strings a person can see in a Web API call (text, blocks, view)."""
    return strings({k: call.params.get(k) for k in ("text", "blocks", "view")})


def showing_calls(ws: Workspace) -> Iterator[Call]:
    for method in SHOWING:
        yield from ws.slack.calls(method)


def failed_calls(ws: Workspace) -> list[Call]:
    """Calls the stand-in refused for a reason other than an injected fault."""
    return [c for c in ws.slack.calls() if c.error not in (None, "injected")]


def card_sends(ws: Workspace, user: str) -> list[Call]:
    """Successful ``chat.postMessage`` calls that sent ``user`` an approval card."""
    return [c for c in ws.slack.calls("chat.postMessage")
            if c.error is None and c.status == 200 and str(c.params.get("channel")) == user
            and (c.params.get("metadata") or {}).get("event_type") == "approval_card"]


async def audit(ws: Workspace) -> list[Entry]:
    return [entry async for entry in ws.runtime.store.audit_entries()]


async def events_of(ws: Workspace, request_id: int) -> list[str]:
    """The request's audit events in order, without the advisor's ``annotated`` entries
    (whether and when the advisor annotates is not what these tests are about)."""
    return [e.event for e in await ws.runtime.store.audit_for(request_id)
            if e.event != "annotated"]


async def refusals(ws: Workspace) -> list[Entry]:
    return [e for e in await audit(ws) if e.event == "click_refused"]


async def click_keeping_url(ws: Workspace, user: str, message: dict[str, Any],
                            action: ActionId | str) -> tuple[httpx.Response, str]:
    """Like :meth:`Workspace.click`, returning the ``response_url`` it gave the app too
    (concurrent clicks each need their own)."""
    value = button_value(message, str(action))
    url = ws.slack.response_url(channel=message.get("channel"), ts=message.get("ts"))
    response = await ws.send(signing.block_actions(
        ws.secret, user_id=user, action_id=str(action), value=value, message=message,
        response_url=url, trigger=signing.trigger_id(user)))
    await ws.settle()
    return response, url


async def click_in_home(ws: Workspace, user: str, action: ActionId | str,
                        value: str) -> httpx.Response:
    """``user`` clicks a button of their App Home: Slack sends the view, no response_url."""
    home = ws.slack.home_of(user)
    assert home is not None, f"{user} has no App Home published"
    response = await ws.send(signing.block_actions(
        ws.secret, user_id=user, action_id=str(action), value=value, view=home,
        trigger=signing.trigger_id(user)))
    await ws.settle()
    return response


def home_buttons(view: dict[str, Any], action: ActionId | str) -> list[str]:
    """The values of the ``action`` buttons in an App Home view, in order."""
    return [str(element.get("value", "")) for block in view.get("blocks") or []
            for element in block.get("elements") or []
            if element.get("action_id") == str(action)]


def errors_of(response: httpx.Response) -> dict[str, str]:
    """The ``errors`` of a ``response_action: errors`` answer to a modal submission."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("response_action") == "errors", body
    errors = body["errors"]
    assert isinstance(errors, dict)
    return {str(k): str(v) for k, v in errors.items()}


def is_plain_ack(response: httpx.Response) -> bool:
    """An empty acknowledgement: the modal closes, nothing is answered inline."""
    if response.status_code != 200:
        return False
    return not response.content or not json.loads(response.content or b"{}")


__all__ = [
    "POLICY",
    "SHOWING",
    "ack_text",
    "audit",
    "block_text",
    "card_sends",
    "click_in_home",
    "click_keeping_url",
    "create",
    "dm_content",
    "dm_texts",
    "errors_of",
    "events_of",
    "failed_calls",
    "home_buttons",
    "is_plain_ack",
    "non_card_dms",
    "refusals",
    "showing_calls",
    "shown",
    "strings",
    "workspace",
]
