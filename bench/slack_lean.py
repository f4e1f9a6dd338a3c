"""A lean Slack Web API stand-in for the benchmarks: the methods the product calls, with
their state, on a bare asyncio HTTP/1.1 server.

Real Slack does not run on the bench machine, so what its stand-in spends there is CPU
taken from the server under test that production would never lose. The test suite's
stand-in (:class:`bot.standin.web_api.FakeSlack`) checks every message's blocks with
slack_sdk's models and serves through aiohttp's web framework: ~0.5 ms of CPU per
``chat.postMessage``. This one skips the block checks (the test suite keeps them) and the
framework: 0.05-0.09 ms, the HTTP exchange itself included. What it models:

* **auth** -- ``Authorization: Bearer <token>`` (or a ``token`` parameter) must be the
  stand-in's token: otherwise ``not_authed`` / ``invalid_auth``, HTTP 200, as Slack answers;
* **bodies** -- query strings, JSON and form-encoded bodies; JSON-in-form fields
  (``blocks``, ``metadata``, ``view``...) decoded;
* **methods** -- ``auth.test``; ``chat.postMessage`` (to a user ID, answered with its DM
  channel ``D_<user>``, or to a channel ID; ``ts`` unique and increasing; threads;
  ``metadata`` kept), ``chat.update``, ``chat.postEphemeral``; ``conversations.open``,
  ``conversations.history`` and ``conversations.replies`` (``include_all_metadata``: the
  product looks for an outbox id in them before posting again); ``views.open``,
  ``views.push``, ``views.update``, ``views.publish``; ``users.info``; any other
  answers ``unknown_method``;
* **response URLs** -- ``POST /response/<id>`` takes what the app sends to an
  interaction's ``response_url``;
* **for the bench** -- ``GET /bench/cards?since=N``: approval cards posted from the N-th
  ``chat.postMessage`` call on (request, step, outbox id, user, channel, arrival time, the
  approve button's value, position), and ``next``, where the following poll starts;
  ``GET /bench/counts``: calls per method (and ``response_url`` posts);
  ``POST /v1/chat/completions``: a slow OpenAI-compatible model that answers after
  :attr:`LeanSlack.llm_delay` seconds, each request on its own clock.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import parse_qsl

import orjson

from bench.http11 import Message, Parser, ProtocolError
from bot.standin.signing import APP_ID, BOT_USER_ID, TEAM_ID

TOKEN = "xoxb-fake-bot-token"  # the stand-in's own, as FakeSlack's
BOT_ID = "B_FAKE"
CARD_EVENT = "approval_card"
READ_SIZE = 65_536  # bytes a connection reads at once (_HttpConnection)
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "users")

Params = dict[str, Any]
Answer = dict[str, Any]
Card = tuple[Any, Any, Any, str, str, float, str | None, int]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = orjson.loads  # (a card's body in a third of json's time)
_dumps_sdk = json.dumps  # as slack_sdk (through aiohttp) encodes a JSON body


class SlackError(Exception):
    """Answered as ``{"ok": false, "error": code}`` with HTTP 200, as Slack does."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Delayed:
    """An answer to send after ``delay`` seconds (the slow model)."""

    __slots__ = ("body", "delay")

    def __init__(self, delay: float, body: bytes) -> None:
        self.delay = delay
        self.body = body


def response(body: bytes, *, status: bytes = b"200 OK",
             content_type: bytes = b"application/json; charset=utf-8",
             close: bool = False) -> bytes:
    return b"".join((b"HTTP/1.1 ", status, b"\r\nContent-Type: ", content_type,
                     b"\r\nContent-Length: ", str(len(body)).encode(),
                     b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n", body))


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in {"1", "true"}


def _ts_number(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


def _approve_value(blocks: object) -> str | None:
    """The approve button's value (buttons live in ``actions`` blocks, last on a card)."""
    if not isinstance(blocks, list):
        return None
    for block in reversed(blocks):
        if isinstance(block, dict) and block.get("type") == "actions":
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("action_id") == "approve":
                    return str(element.get("value"))
    return None


def _is_card(metadata: object) -> bool:
    return isinstance(metadata, dict) and metadata.get("event_type") == CARD_EVENT


class _QuickPost:
    """What the stand-in needs of a ``chat.postMessage`` body as slack_sdk encodes it,
    read without decoding its blocks (decoding them is about a third of the stand-in's own
    work on a post).

    slack_sdk sends ``json.dumps`` of the arguments, ``channel`` first; the product passes
    ``metadata`` last. Those are read where they stand, and so is the approve button's
    element. A key can only be matched where JSON has one (a quote inside a string is
    escaped), and each read is checked (the metadata must close the top-level object).
    Any body this does not fit, a reply in a thread or a token in the body among them,
    goes the slow way: :func:`json.loads`.
    """

    __slots__ = ("channel", "fields", "metadata", "value")

    CHANNEL = '{"channel": "'
    METADATA = '"metadata": '
    APPROVE = '"action_id": "approve"'
    _decode = json.JSONDecoder().raw_decode

    def __init__(self, channel: str, metadata: object, value: str | None,
                 fields: str) -> None:
        self.channel = channel
        self.metadata = metadata
        self.value = value
        self.fields = fields

    @classmethod
    def read(cls, request: Message) -> _QuickPost | None:
        if not request.headers.get(b"content-type", b"").startswith(b"application/json"):
            return None
        try:
            body = request.body.decode()
        except UnicodeDecodeError:
            return None
        if (not body.startswith(cls.CHANNEL) or '"thread_ts": ' in body
                or '"token": ' in body):
            return None
        if '"text": ' not in body and '"blocks": ' not in body:
            return None  # the slow way says no_text
        try:
            channel, end = cls._decode(body, len(cls.CHANNEL) - 1)
            if body[end:end + 2] != ", " or not isinstance(channel, str):
                return None
            metadata = None
            at = body.rfind(cls.METADATA)
            if at >= 0:
                metadata, close = cls._decode(body, at + len(cls.METADATA))
                if body[close:] != "}":
                    return None
            value = None
            if _is_card(metadata):
                value = cls._approve_value(body)
                if value is None:
                    return None
        except ValueError:
            return None
        return cls(channel, metadata, value, body[end + 2:-1])

    @classmethod
    def _approve_value(cls, body: str) -> str | None:
        """The value of the element whose ``action_id`` is ``approve``: the innermost
        object around that key, found by decoding from each ``{`` before it in turn (an
        object nested in the element before the key ends before it, and a brace inside a
        string decodes to nothing that reaches it)."""
        key = body.find(cls.APPROVE)
        start = key
        while key >= 0:
            start = body.rfind("{", 0, start)
            if start < 0:
                return None
            try:
                element, end = cls._decode(body, start)
            except ValueError:
                continue
            if end > key:
                if isinstance(element, dict) and element.get("action_id") == "approve":
                    return str(element.get("value"))
                return None
        return None


class _Stored:
    """A message as ``conversations.history`` shows it: its JSON (metadata included),
    kept as text so that thousands of them cost the garbage collector nothing."""

    __slots__ = ("has_metadata", "json", "thread_ts", "ts")

    def __init__(self, ts: str, thread_ts: str | None, json_text: str, *,
                 has_metadata: bool) -> None:
        self.ts = ts
        self.thread_ts = thread_ts
        self.json = json_text
        self.has_metadata = has_metadata

    @classmethod
    def of(cls, message: dict[str, Any], *, thread_ts: str | None) -> _Stored:
        """``thread_ts``: the parent's, for a reply (a parent's own is not)."""
        return cls(message["ts"], thread_ts, _dumps(message),
                   has_metadata="metadata" in message)

    def public(self, *, with_metadata: bool) -> str:
        if with_metadata or not self.has_metadata:
            return self.json
        message = _loads(self.json)
        message.pop("metadata", None)
        return _dumps(message)


class LeanSlack:
    """The stand-in's state and its answers; :class:`_HttpConnection` feeds it requests."""

    def __init__(self, *, token: str = TOKEN, llm_delay: float = 2.0) -> None:
        self.token = token
        self.llm_delay = llm_delay
        self.counts: Counter[str] = Counter()
        self.posts = 0  # chat.postMessage calls so far, failed ones too: cards' positions
        self.cards: list[Card] = []
        self._card_positions: list[int] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []  # (response_url id, body)
        self._channels: dict[str, dict[str, _Stored]] = {}  # channel -> ts -> message
        self._views: dict[str, dict[str, Any]] = {}
        self._homes: dict[str, str] = {}  # user -> view id
        self._used_triggers: set[str] = set()
        # the JSON text of the request being handled, when its body is a JSON object:
        # chat.postMessage builds its message around it rather than encoding it again
        self._json_body: str | None = None
        self._last_ts = 0
        self._ids = itertools.count(1)
        self._methods = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
        }

    # ------------------------------------------------------------------ HTTP

    def handle(self, request: Message) -> bytes | Delayed:
        """The answer to ``request`` (a whole HTTP response), or when to send it."""
        method, target, _ = request.start
        path, _, query = target.decode("latin-1").partition("?")
        if path.startswith("/api/"):
            return response(self._api(path[5:], request, query).encode())
        if path.startswith("/response/") and method == b"POST":
            return self._response_url(path[10:], request.body)
        if path == "/bench/cards" and method == b"GET":
            return response(self._bench_cards(query).encode())
        if path == "/bench/counts" and method == b"GET":
            return response(_dumps(dict(self.counts)).encode())
        if path == "/v1/chat/completions" and method == b"POST":
            return self._completion(request.body)
        if path == "/healthz":
            return response(b'{"status":"ok"}')
        return response(b"not found", status=b"404 Not Found", content_type=b"text/plain")

    def _api(self, name: str, request: Message, query: str) -> str:
        self.counts[name] += 1
        try:
            if name == "chat.postMessage":
                self.posts += 1
                quick = _QuickPost.read(request) if not query else None
                if quick is not None:
                    self._check_auth(request, {})
                    return self._post(quick.channel, None, quick.metadata, quick.value,
                                      quick.fields)
            params = self._params(request, query)
            self._check_auth(request, params)
            method = self._methods.get(name)
            if method is None:
                raise SlackError("unknown_method")
            return method(params)
        except SlackError as exc:
            return f'{{"ok":false,"error":"{exc.code}"}}'

    def _params(self, request: Message, query: str) -> Params:
        params: Params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        self._json_body = None
        body = request.body
        if body:
            kind = request.headers.get(b"content-type", b"")
            if kind.startswith(b"application/json"):
                try:
                    text = body.decode()
                    decoded = _loads(text)
                except ValueError:
                    raise SlackError("invalid_json") from None
                if not isinstance(decoded, dict):
                    raise SlackError("invalid_json")
                params.update(decoded)
                if not query:
                    self._json_body = text
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace"),
                                        keep_blank_values=True))
                for key in _JSON_FIELDS:
                    value = params.get(key)
                    if isinstance(value, str) and value[:1] in {"[", "{"}:
                        try:
                            params[key] = _loads(value)
                        except ValueError:
                            raise SlackError(f"invalid_{key}") from None
        return params

    def _check_auth(self, request: Message, params: Params) -> None:
        header = request.headers.get(b"authorization", b"")
        token = header[7:].strip().decode("latin-1") if header.startswith(b"Bearer ") else None
        given = params.pop("token", None)  # a parameter, never part of a message
        if given is not None:
            self._json_body = None
            token = token or str(given)
        if not token:
            raise SlackError("not_authed")
        if token != self.token:
            raise SlackError("invalid_auth")

    def _response_url(self, key: str, body: bytes) -> bytes:
        try:
            posted = _loads(body)
        except ValueError:
            posted = None
        if not isinstance(posted, dict):
            return response(b"invalid_payload", status=b"400 Bad Request",
                            content_type=b"text/plain")
        self.responses.append((key, posted))
        self.counts["response_url"] += 1
        return response(b'{"ok":true}')

    def _bench_cards(self, query: str) -> str:
        since = int(dict(parse_qsl(query)).get("since", "0"))
        first = bisect.bisect_left(self._card_positions, since)
        cards = [{"request": c[0], "step": c[1], "outbox": c[2], "user": c[3],
                  "channel": c[4], "at": c[5], "value": c[6], "position": c[7]}
                 for c in self.cards[first:]]
        return _dumps({"cards": cards, "next": self.posts})

    def _completion(self, body: bytes) -> Delayed:
        try:
            model = str(_loads(body).get("model", "bench"))
        except (ValueError, AttributeError):
            model = "bench"
        content = _dumps({"recommendation": "review", "risk": "medium",
                          "commentary": "Compare with last quarter's quotes.", "flags": []})
        answer = _dumps({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1764061200,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": None}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        return Delayed(self.llm_delay, response(answer.encode()))

    # ------------------------------------------------------------------ state

    def _next_ts(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last_ts + 1)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _post_channel(self, channel: str) -> str:
        """A channel ID as it is, a user ID as the bot's DM channel with them."""
        if not channel:
            raise SlackError("channel_not_found")
        if channel[:1] not in {"C", "G", "D"}:
            channel = "D_" + channel
        if channel not in self._channels:
            self._channels[channel] = {}
        return channel

    def _existing(self, params: Params) -> dict[str, _Stored]:
        found = self._channels.get(str(params.get("channel") or ""))
        if found is None:
            raise SlackError("channel_not_found")
        return found

    @staticmethod
    def _ok(fields: str) -> str:
        return '{"ok":true,' + fields + "}"

    # ------------------------------------------------------------------ methods

    def _auth_test(self, params: Params) -> str:
        return self._ok(f'"url":"https://fake.slack.com/","team":"Fake","user":"approvals",'
                        f'"team_id":"{TEAM_ID}","user_id":"{BOT_USER_ID}","bot_id":"{BOT_ID}",'
                        f'"is_enterprise_install":false')

    def _chat_post_message(self, params: Params) -> str:
        to = str(params.get("channel") or "")
        if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            raise SlackError("no_text")
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        metadata = params.get("metadata")
        value = _approve_value(params.get("blocks")) if _is_card(metadata) else None
        body = self._json_body
        if body is not None and len(params) > 1:
            # the request's own members, as sent: not a few kilobytes of blocks encoded again
            body = body.strip()
            first = f'{{"channel": {_dumps_sdk(to)}, '
            fields = body[len(first):-1] if body.startswith(first) else body[1:-1]
        else:
            message = {key: params[key] for key in ("text", "blocks", "attachments",
                                                     "metadata", "thread_ts") if key in params}
            fields = _dumps(message)[1:-1]
        return self._post(to, thread_ts, metadata, value, fields)

    def _post(self, to: str, thread_ts: str | None, metadata: object, value: str | None,
              fields: str) -> str:
        """Post a message to ``to`` (a channel, or a user's DM): ``fields`` are its own
        JSON members (text, blocks, metadata...), put after the ones Slack adds."""
        at = time.time()
        channel = self._post_channel(to)
        messages = self._channels[channel]
        parent = None
        if thread_ts is not None:
            parent = messages.get(thread_ts)
            if parent is None:
                raise SlackError("thread_not_found")
        ts = self._next_ts()
        if parent is not None:
            self._reply_to(messages, parent)
        json_text = (f'{{"type":"message","ts":"{ts}","user":"{BOT_USER_ID}",'
                     f'"bot_id":"{BOT_ID}","app_id":"{APP_ID}","team":"{TEAM_ID}"'
                     + ("," + fields if fields.strip() else "") + "}")
        stored = messages[ts] = _Stored(ts, thread_ts, json_text,
                                        has_metadata=metadata is not None)
        if _is_card(metadata):
            assert isinstance(metadata, dict)
            payload = metadata.get("event_payload") or {}
            user = channel[2:] if channel.startswith("D_") else to
            self.cards.append((payload.get("request"), payload.get("step"),
                               payload.get("outbox_id"), user, channel, at, value,
                               self.posts - 1))
            self._card_positions.append(self.posts - 1)
        return self._ok(f'"channel":"{channel}","ts":"{ts}","message":{stored.json}')

    @staticmethod
    def _reply_to(messages: dict[str, _Stored], parent: _Stored) -> None:
        thread = _loads(parent.json)
        thread["reply_count"] = thread.get("reply_count", 0) + 1
        thread["thread_ts"] = parent.ts
        messages[parent.ts] = _Stored.of(thread, thread_ts=parent.thread_ts)

    def _chat_update(self, params: Params) -> str:
        messages = self._existing(params)
        ts = str(params.get("ts") or "")
        found = messages.get(ts)
        if found is None:
            raise SlackError("message_not_found")
        message = _loads(found.json)
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in params:
                message[key] = params[key]
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        stored = messages[ts] = _Stored.of(message, thread_ts=found.thread_ts)
        return self._ok(f'"channel":{_dumps(str(params["channel"]))},"ts":"{ts}",'
                        f'"text":{_dumps(message.get("text", ""))},"message":{stored.json}')

    def _chat_post_ephemeral(self, params: Params) -> str:
        if not params.get("user"):
            raise SlackError("user_not_found")
        self._post_channel(str(params.get("channel") or ""))
        if not params.get("text") and not params.get("blocks"):
            raise SlackError("no_text")
        return self._ok(f'"message_ts":"{self._next_ts()}"')

    def _conversations_open(self, params: Params) -> str:
        if params.get("channel"):
            self._existing(params)
            return self._ok(f'"channel":{{"id":{_dumps(str(params["channel"]))}}}')
        raw = params.get("users")
        users = raw if isinstance(raw, list) else str(raw or "").split(",")
        users = [str(u).strip() for u in users if u and str(u).strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        if len(users) > 1:
            channel = self._post_channel("G_" + "_".join(sorted(users)))
            return self._ok(f'"channel":{{"id":{_dumps(channel)},"is_mpim":true}}')
        channel = self._post_channel(users[0])
        return self._ok(f'"channel":{{"id":{_dumps(channel)},"is_im":true,'
                        f'"user":{_dumps(users[0])}}},"already_open":true')

    def _conversations_history(self, params: Params) -> str:
        messages = self._existing(params)
        limit = max(1, min(int(params.get("limit") or 100), 999))
        oldest = _ts_number(str(params.get("oldest") or "0"))
        latest = _ts_number(str(params.get("latest") or "inf"))
        inclusive = _truthy(params.get("inclusive"))
        with_metadata = _truthy(params.get("include_all_metadata"))
        offset = int(params.get("cursor") or 0)

        def in_range(ts: str) -> bool:
            number = _ts_number(ts)
            return oldest <= number <= latest if inclusive else oldest < number < latest

        top = [m for m in reversed(messages.values())
               if m.thread_ts is None and in_range(m.ts)]
        page = top[offset:offset + limit]
        more = offset + limit < len(top)
        listed = ",".join(m.public(with_metadata=with_metadata) for m in page)
        cursor = str(offset + limit) if more else ""
        return self._ok(f'"messages":[{listed}],"has_more":{"true" if more else "false"},'
                        f'"pin_count":0,"response_metadata":{{"next_cursor":"{cursor}"}}')

    def _conversations_replies(self, params: Params) -> str:
        messages = self._existing(params)
        parent = str(params.get("ts") or "")
        if parent not in messages:
            raise SlackError("thread_not_found")
        with_metadata = _truthy(params.get("include_all_metadata"))
        listed = ",".join(m.public(with_metadata=with_metadata) for m in messages.values()
                          if m.ts == parent or m.thread_ts == parent)
        return self._ok(f'"messages":[{listed}],"has_more":false,'
                        f'"response_metadata":{{"next_cursor":""}}')

    def _store_view(self, view: object, *, view_id: str | None, kind: str) -> str:
        """Keep ``view`` (under ``view_id``, or a new id); the answer that shows it."""
        if not isinstance(view, dict) or view.get("type") != kind:
            raise SlackError("invalid_arguments")
        view_id = view_id or f"V{next(self._ids):08d}"
        stored = {**view, "id": view_id, "team_id": TEAM_ID, "app_id": APP_ID,
                  "bot_id": BOT_ID, "hash": f"{time.time():.6f}.{next(self._ids)}",
                  "state": {"values": {}}, "root_view_id": view_id}
        self._views[view_id] = stored
        return self._ok(f'"view":{_dumps(stored)}')

    def _views_open(self, params: Params) -> str:
        trigger = str(params.get("trigger_id") or "")
        if not trigger:
            raise SlackError("invalid_arguments")
        if trigger in self._used_triggers:
            raise SlackError("expired_trigger_id")
        self._used_triggers.add(trigger)
        return self._store_view(params.get("view"), view_id=None, kind="modal")

    def _views_update(self, params: Params) -> str:
        view_id = params.get("view_id")
        external = params.get("external_id")
        if not view_id and external:
            view_id = next((i for i, v in self._views.items()
                            if v.get("external_id") == external), None)
        current = self._views.get(str(view_id))
        if current is None:
            raise SlackError("not_found")
        if params.get("hash") and params["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        return self._store_view(params.get("view"), view_id=str(view_id),
                                kind=str(current["type"]))

    def _views_publish(self, params: Params) -> str:
        user = str(params.get("user_id") or "")
        if not user:
            raise SlackError("invalid_arguments")
        current = self._homes.get(user)
        if current and params.get("hash") and params["hash"] != self._views[current]["hash"]:
            raise SlackError("hash_conflict")
        view_id = current or f"V{next(self._ids):08d}"
        answer = self._store_view(params.get("view"), view_id=view_id, kind="home")
        self._homes[user] = view_id
        return answer

    def _users_info(self, params: Params) -> str:
        user = str(params.get("user") or "")
        if not user:
            raise SlackError("user_not_found")
        return self._ok('"user":' + _dumps({
            "id": user, "team_id": TEAM_ID, "name": user.lower(), "real_name": user,
            "tz": "UTC", "deleted": False, "is_bot": user == BOT_USER_ID,
            "profile": {"real_name": user, "display_name": user.lower()}}))


class _HttpConnection(asyncio.BufferedProtocol):
    """One client connection: requests answered in order, a delayed answer holding back
    the ones after it on the same connection (HTTP/1.1 answers in order).

    Reads land in a buffer of the connection's own: a plain protocol's each read
    allocates 256 KiB, which the C library maps and unmaps with three system calls and
    fresh pages each time (four page faults a post, two fifths of this process's CPU
    in the kernel)."""

    def __init__(self, slack: LeanSlack) -> None:
        self.slack = slack
        self.parser = Parser(response=False)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Message] = deque()
        self.waiting = False  # a delayed answer is pending
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        try:
            messages = self.parser.feed(bytes(self._view[:nbytes]))
        except ProtocolError:
            assert self.transport is not None
            self.transport.write(response(b"bad request", status=b"400 Bad Request",
                                          content_type=b"text/plain", close=True))
            self.transport.close()
            return
        if self.waiting or len(messages) != 1:
            self.queue.extend(messages)
            self._drain()
        elif messages:
            self._answer(messages[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.clear()
        self.transport = None

    def _drain(self) -> None:
        while self.queue and not self.waiting and self.transport is not None:
            self._answer(self.queue.popleft())

    def _answer(self, request: Message) -> None:
        answer = self.slack.handle(request)
        if isinstance(answer, Delayed):
            self.waiting = True
            asyncio.get_running_loop().call_later(answer.delay, self._send_delayed, request,
                                                  answer.body)
            return
        self._send(request, answer)

    def _send_delayed(self, request: Message, answer: bytes) -> None:
        self.waiting = False
        self._send(request, answer)
        self._drain()

    def _send(self, request: Message, answer: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(answer)
        if not request.keep_alive:
            self.transport.close()
            self.transport = None


async def serve(slack: LeanSlack, *, host: str = "127.0.0.1", port: int = 0
                ) -> asyncio.Server:
    """Listen for ``slack``'s requests on ``host:port`` (0: a free port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _HttpConnection(slack), host, port,
                                    reuse_address=True)
