"""Requests as Slack sends them to ``POST /slack/events``, signed with the signing secret.

Slack signs ``v0:{timestamp}:{body}`` with HMAC-SHA256 and the app's signing secret and
sends ``X-Slack-Signature: v0=<hex>`` and ``X-Slack-Request-Timestamp``. Each builder here
returns a :class:`SignedRequest` -- ``(body, headers)`` -- to send as it is, with httpx to an
ASGI app or to a real server::

    body, headers = slash_command(SECRET, text="1200 Chairs", user_id="U_ALICE",
                                  response_url=slack.response_url())
    await client.post("/slack/events", content=body, headers=headers)

Every builder takes the same signing options: ``timestamp`` (default now), ``stale=True``
(six minutes old, past Slack's five), ``bad_signature=True`` (signed with another secret),
and ``retry_num``/``retry_reason`` (``X-Slack-Retry-Num``/``-Reason``, as Slack adds when it
redelivers an event).

Trigger IDs made by :func:`trigger_id` name the user they belong to, so the fake Web API
(:mod:`bot.standin.web_api`) knows whose modal ``views.open`` opened.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

TEAM_ID = "T_FAKE"
APP_ID = "A_FAKE"
BOT_USER_ID = "U_BOT"
STALE_SECONDS = 6 * 60  # Slack's replay window is five minutes

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_counter = itertools.count(1)


class SignedRequest(NamedTuple):
    body: bytes
    headers: dict[str, str]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v0=<hex>``: Slack's v0 signature of ``body`` at ``timestamp``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, *, content_type: str = FORM, timestamp: int | None = None,
         stale: bool = False, bad_signature: bool = False, retry_num: int | None = None,
         retry_reason: str = "http_timeout") -> SignedRequest:
    """Sign ``body`` as Slack would, or wrongly or late when asked to."""
    ts = int(time.time()) if timestamp is None else timestamp
    if stale:
        ts -= STALE_SECONDS
    key = secret + "-wrong" if bad_signature else secret
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(key, ts, body),
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    return SignedRequest(body, headers)


def trigger_id(user_id: str) -> str:
    """A fresh trigger ID for ``user_id``: ``<n>.<user>.<hex>``, like Slack's ``<n>.<n>.<hex>``."""
    return f"{next(_counter)}.{user_id}.{secrets.token_hex(8)}"


def trigger_owner(trigger: str) -> str | None:
    """The user a :func:`trigger_id` was made for, or ``None`` for any other trigger ID."""
    first, _, rest = trigger.partition(".")
    owner, _, last = rest.rpartition(".")
    return owner if first.isdigit() and owner and len(last) == 16 else None


def _ts() -> str:
    return f"{time.time():.6f}"


def _user(user_id: str, team_id: str) -> dict[str, str]:
    name = user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": team_id}


def _form_payload(payload: Mapping[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


# --------------------------------------------------------------------------- slash command


def slash_command(secret: str, *, text: str = "", user_id: str = "U_ALICE",
                  response_url: str, user_name: str | None = None,
                  command: str = "/purchase", team_id: str = TEAM_ID,
                  channel_id: str | None = None, trigger: str | None = None,
                  timestamp: int | None = None, stale: bool = False,
                  bad_signature: bool = False) -> SignedRequest:
    """A slash command's form body (``command``, ``text``, ``user_id``, ``trigger_id``...)."""
    form = {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "team_domain": "fake",
        "channel_id": channel_id or f"D_{user_id}",
        "channel_name": "directmessage",
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger or trigger_id(user_id),
    }
    return sign(urlencode(form).encode(), secret, timestamp=timestamp, stale=stale,
                bad_signature=bad_signature)


# --------------------------------------------------------------------------- interactivity


def block_actions(secret: str, *, user_id: str, action_id: str, value: str | None = None,
                  block_id: str = "actions", message: Mapping[str, Any] | None = None,
                  channel_id: str | None = None, message_ts: str | None = None,
                  response_url: str | None = None, trigger: str | None = None,
                  view: Mapping[str, Any] | None = None, team_id: str = TEAM_ID,
                  timestamp: int | None = None, stale: bool = False,
                  bad_signature: bool = False) -> SignedRequest:
    """A button click, ``type: block_actions``.

    From a message: pass the ``message`` as the fake stored it (its ``channel`` and ``ts``
    locate it) or ``channel_id`` and ``message_ts``, and the ``response_url``. From the App
    Home or a modal: pass ``view`` instead; Slack then sends no message and no response_url.
    """
    if message is not None:
        channel_id = channel_id or message.get("channel")
        message_ts = message_ts or message.get("ts")
    action: dict[str, Any] = {
        "type": "button", "action_id": action_id, "block_id": block_id,
        "text": {"type": "plain_text", "text": action_id, "emoji": True},
        "action_ts": _ts(),
    }
    if value is not None:
        action["value"] = value
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "fake"},
        "user": _user(user_id, team_id),
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "trigger_id": trigger or trigger_id(user_id),
        "actions": [action],
        "state": {"values": {}},
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id", "V_FAKE")}
        payload["view"] = dict(view)
    else:
        if channel_id is None or message_ts is None:
            raise ValueError("a click on a message needs its channel and ts (or message=)")
        stored = dict(message or {"type": "message", "ts": message_ts, "text": ""})
        stored.pop("channel", None)
        payload["container"] = {"type": "message", "message_ts": message_ts,
                                "channel_id": channel_id, "is_ephemeral": False}
        payload["channel"] = {"id": channel_id, "name": "directmessage"}
        payload["message"] = stored
    if response_url is not None:
        payload["response_url"] = response_url
    return sign(_form_payload(payload), secret, timestamp=timestamp, stale=stale,
                bad_signature=bad_signature)


def input_values(texts: Mapping[str, str | None] | None = None,
                 selects: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """``view.state.values`` for inputs whose ``block_id`` equals their ``action_id``.

    ``texts`` are plain-text inputs (``None``: left empty), ``selects`` static selects
    (``None``: nothing selected).
    """
    values: dict[str, Any] = {}
    for field, text in (texts or {}).items():
        values[field] = {field: {"type": "plain_text_input", "value": text}}
    for field, choice in (selects or {}).items():
        option = (None if choice is None else
                  {"text": {"type": "plain_text", "text": choice, "emoji": True},
                   "value": choice})
        values[field] = {field: {"type": "static_select", "selected_option": option}}
    return values


def view_submission(secret: str, *, user_id: str, callback_id: str,
                    values: Mapping[str, Any], private_metadata: str = "",
                    view_id: str = "V_FAKE", trigger: str | None = None,
                    team_id: str = TEAM_ID, timestamp: int | None = None,
                    stale: bool = False, bad_signature: bool = False) -> SignedRequest:
    """A modal's submission, ``type: view_submission``, with ``view.state.values``."""
    payload = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "fake"},
        "user": _user(user_id, team_id),
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "trigger_id": trigger or trigger_id(user_id),
        "view": {
            "id": view_id, "team_id": team_id, "type": "modal", "callback_id": callback_id,
            "private_metadata": private_metadata, "external_id": "", "hash": "1.abc",
            "title": {"type": "plain_text", "text": "Modal"}, "blocks": [],
            "state": {"values": dict(values)}, "root_view_id": view_id,
            "previous_view_id": None, "app_id": APP_ID, "bot_id": "B_FAKE",
        },
        "response_urls": [],
        "is_enterprise_install": False,
    }
    return sign(_form_payload(payload), secret, timestamp=timestamp, stale=stale,
                bad_signature=bad_signature)


# --------------------------------------------------------------------------- Events API


def event_callback(secret: str, *, event: Mapping[str, Any], event_id: str | None = None,
                   team_id: str = TEAM_ID, timestamp: int | None = None,
                   stale: bool = False, bad_signature: bool = False,
                   retry_num: int | None = None,
                   retry_reason: str = "http_timeout") -> SignedRequest:
    """An Events API delivery (JSON), ``type: event_callback``; same ``event_id`` on a retry."""
    envelope = {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "api_app_id": APP_ID,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_counter):08d}",
        "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": team_id,
                            "user_id": BOT_USER_ID, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    }
    return sign(json.dumps(envelope).encode(), secret, content_type=JSON, timestamp=timestamp,
                stale=stale, bad_signature=bad_signature, retry_num=retry_num,
                retry_reason=retry_reason)


def app_home_opened(secret: str, *, user_id: str, event_id: str | None = None,
                    tab: str = "home", timestamp: int | None = None, stale: bool = False,
                    bad_signature: bool = False, retry_num: int | None = None) -> SignedRequest:
    """``app_home_opened`` for ``user_id`` (``tab`` is ``home`` or ``messages``)."""
    event = {"type": "app_home_opened", "user": user_id, "channel": f"D_{user_id}",
             "tab": tab, "event_ts": _ts()}
    return event_callback(secret, event=event, event_id=event_id, timestamp=timestamp,
                          stale=stale, bad_signature=bad_signature, retry_num=retry_num)


def url_verification(secret: str, *, challenge: str = "challenge-token") -> SignedRequest:
    """The handshake Slack sends when the events request URL is saved."""
    body = {"token": "legacy-verification-token", "challenge": challenge,
            "type": "url_verification"}
    return sign(json.dumps(body).encode(), secret, content_type=JSON)


__all__ = [
    "APP_ID",
    "BOT_USER_ID",
    "TEAM_ID",
    "SignedRequest",
    "app_home_opened",
    "block_actions",
    "event_callback",
    "input_values",
    "sign",
    "signature",
    "slash_command",
    "trigger_id",
    "trigger_owner",
    "url_verification",
    "view_submission",
]
