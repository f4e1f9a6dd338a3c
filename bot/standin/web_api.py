"""A fake Slack Web API served over real HTTP, for tests and local runs.

:class:`FakeSlack` is an ``aiohttp`` server on ``127.0.0.1`` (a free port) that answers the
Web API methods the bot uses, keeps state the way Slack does, and records every call::

    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.token, base_url=slack.base_url)
        await client.chat_postMessage(channel="U_ALICE", text="hi")
        assert slack.messages_to("U_ALICE")[0]["text"] == "hi"

What it models:

* **auth** -- ``Authorization: Bearer <token>`` (or a ``token`` parameter) must be the
  fake's token: otherwise ``not_authed`` / ``invalid_auth``, as Slack answers;
* **bodies** -- query strings, form-encoded and JSON bodies, JSON-in-form fields
  (``blocks``, ``view``, ``metadata``...) decoded;
* **conversations** -- a DM channel per user, ``D_<user>`` (``conversations.open``);
  ``chat.postMessage`` takes a user ID or a channel ID, ``chat.update`` only a channel ID
  (as Slack: ``channel_not_found`` otherwise); ``ts`` are unique and increasing; threads;
  message ``metadata`` (returned by ``conversations.history`` with ``include_all_metadata``);
* **views** -- ``views.open``/``push``/``update``/``publish``; a trigger ID is single-use,
  and one made by :func:`bot.standin.signing.trigger_id` tells whose modal it opened;
* **blocks** -- messages and views are checked with ``slack_sdk.models`` as Slack would
  refuse them (``invalid_blocks``, ``invalid_arguments``);
* **failures on demand** -- :meth:`FakeSlack.fail`: 429 with ``Retry-After`` or 500, for the
  next N calls or a fraction of calls of a method (seeded, so repeatable);
* **response URLs** -- ``POST /response/<id>`` receives what the app posts to an
  interaction's ``response_url``; :meth:`FakeSlack.response_url` makes one.

Implemented methods: ``auth.test``, ``chat.postMessage``, ``chat.update``,
``chat.postEphemeral``, ``conversations.open``, ``conversations.history``,
``conversations.replies``, ``views.open``, ``views.push``, ``views.update``,
``views.publish``, ``users.info``; any other answers ``unknown_method``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from bot.standin.signing import APP_ID, BOT_USER_ID, TEAM_ID, trigger_owner

BOT_ID = "B_FAKE"
TOKEN = "xoxb-fake-bot-token"  # noqa: S105 - the stand-in's own, not a secret
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "users")
_MAX_MESSAGE_BLOCKS = 50
_MAX_TEXT = 40000

Params = dict[str, Any]
Answer = dict[str, Any]


class SlackError(Exception):
    """An API error answered as ``{"ok": false, "error": code}`` (HTTP 200, as Slack does)."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the fake: method, decoded parameters, when, and the HTTP status sent."""

    method: str
    params: Params
    at: float
    status: int
    error: str | None = None


@dataclass(slots=True)
class _Failure:
    method: str  # "*" matches every method
    status: int
    remaining: int | None  # None: no count, use ``rate``
    rate: float | None
    retry_after: int
    processed: bool = False  # the call takes effect before the failure is answered


@dataclass(slots=True)
class _ResponseUrl:
    channel: str | None
    ts: str | None
    posts: list[dict[str, Any]] = field(default_factory=list)


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in {"1", "true"}


def _ts_number(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


class FakeSlack:
    """A stateful fake of the Slack Web API on a real local HTTP server."""

    def __init__(self, *, token: str = TOKEN, bot_user_id: str = BOT_USER_ID,
                 team_id: str = TEAM_ID, users: dict[str, dict[str, Any]] | None = None,
                 seed: int = 0, host: str = "127.0.0.1") -> None:
        self.token = token
        self.bot_user_id = bot_user_id
        self.team_id = team_id
        self.host = host
        self._users = users  # None: any user ID exists
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not crypto
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._messages: dict[str, list[dict[str, Any]]] = {}  # channel -> messages by ts
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._dm_owner: dict[str, str] = {}  # DM channel -> user
        self._ephemeral: list[dict[str, Any]] = []
        self._views: dict[str, dict[str, Any]] = {}  # view id -> view
        self._view_owner: dict[str, str | None] = {}
        self._modals: list[tuple[str | None, str]] = []  # (user, view id), in order
        self._homes: dict[str, str] = {}  # user -> view id
        self._used_triggers: set[str] = set()
        self._responses: dict[str, _ResponseUrl] = {}
        self._last_ts = 0
        self._ids = itertools.count(1)
        self._methods: dict[str, Callable[[Params], Answer]] = {
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

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Self:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{key}", self._handle_response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        address = self._runner.addresses[0]
        self._port = int(address[1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if not self._port:
            raise RuntimeError("the fake Slack server is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """The Web API base URL, ending in ``/api/`` (``SLACK_API_URL``)."""
        return f"{self.url}/api/"

    def client(self, **kwargs: Any) -> AsyncWebClient:
        """An ``AsyncWebClient`` pointed at this fake with its token."""
        return AsyncWebClient(token=kwargs.pop("token", self.token), base_url=self.base_url,
                              **kwargs)

    # ------------------------------------------------------------------ failures on demand

    def fail(self, method: str = "*", *, status: int = 429, times: int | None = 1,
             rate: float | None = None, retry_after: int = 1, processed: bool = False) -> None:
        """Answer ``status`` (429 with ``Retry-After``, or 500...) instead of handling calls.

        The next ``times`` calls of ``method`` fail, or -- with ``rate`` -- each call fails
        with that probability, drawn from the fake's seeded generator (repeatable).
        ``method="*"`` matches every method. Failed calls change nothing, unless
        ``processed``: then the call takes effect and only its answer is lost (as when
        Slack posts a message and the connection drops before the reply). ``status=0``
        *stalls*: the call takes effect and its answer waits until :meth:`release`.
        """
        if rate is not None:
            if not 0 <= rate <= 1:
                raise ValueError("rate is a probability, between 0 and 1")
            times = None
        elif times is None or times < 1:
            raise ValueError("give times >= 1 or a rate")
        self._failures.append(_Failure(method, status, times, rate, retry_after,
                                       processed or status == 0))

    def stall(self, method: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` take effect, but get no answer until
        :meth:`release` (for killing a client between Slack's effect and its reply)."""
        self.fail(method, status=0, times=times)

    def release(self) -> None:
        """Answer every stalled call."""
        self._release.set()

    def heal(self) -> None:
        """Forget every failure set by :meth:`fail`, and answer stalled calls."""
        self._failures.clear()
        self._release.set()

    def _failure_for(self, method: str) -> _Failure | None:
        for failure in self._failures:
            if failure.method not in {"*", method}:
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
            if failure.rate is not None and self._random.random() < failure.rate:
                return failure
        return None

    # ------------------------------------------------------------------ helpers for tests

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call received (failed ones included), or those of ``method``, in order."""
        return [c for c in self._calls if method is None or c.method == method]

    def dm_channel(self, user: str) -> str:
        """The DM channel ID with ``user`` (``D_<user>``), created if needed."""
        channel = f"D_{user}"
        self._messages.setdefault(channel, [])
        self._dm_owner[channel] = user
        return channel

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """The messages of ``channel`` as they are now, oldest first, thread replies too."""
        return [self._public(m) for m in self._messages.get(channel, [])]

    def messages_to(self, user: str) -> list[dict[str, Any]]:
        """The messages in the bot's DM with ``user``, oldest first."""
        return self.messages(f"D_{user}")

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        found = self._find(channel, ts)
        return self._public(found) if found else None

    def versions(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Every version of a message, the first as posted, then after each update."""
        return [dict(v) for v in self._history.get((channel, ts), [])]

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages posted (to ``user``), oldest first."""
        return [dict(e) for e in self._ephemeral if user is None or e["user"] == user]

    def view(self, view_id: str) -> dict[str, Any] | None:
        found = self._views.get(view_id)
        return dict(found) if found else None

    def last_view(self, user: str | None) -> dict[str, Any] | None:
        """The modal last opened, pushed or updated for ``user`` (``None``: anyone's)."""
        for owner, view_id in reversed(self._modals):
            if user is None or owner == user:
                return dict(self._views[view_id])
        return None

    def home_of(self, user: str) -> dict[str, Any] | None:
        """The App Home view last published for ``user``."""
        view_id = self._homes.get(user)
        return dict(self._views[view_id]) if view_id else None

    def response_url(self, *, channel: str | None = None, ts: str | None = None) -> str:
        """A fresh ``response_url``; with ``channel``/``ts`` it may replace that message."""
        key = f"R{next(self._ids):06d}"
        self._responses[key] = _ResponseUrl(channel, ts)
        return f"{self.url}/response/{key}"

    def responses(self, url: str) -> list[dict[str, Any]]:
        """What was posted to ``url`` (made by :meth:`response_url`), in order."""
        key = url.rstrip("/").rsplit("/", 1)[-1]
        found = self._responses.get(key)
        if found is None:
            raise KeyError(f"{url} is not a response URL of this fake")
        return [dict(p) for p in found.posts]

    def add_user(self, user_id: str, **profile: Any) -> None:
        """Declare a user (then ``users.info`` knows only declared users)."""
        if self._users is None:
            self._users = {}
        self._users[user_id] = profile

    # ------------------------------------------------------------------ HTTP

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        early: SlackError | None = None
        try:
            params = await self._params(request)
        except SlackError as exc:
            params, early = {}, exc
        at = time.time()
        failure = self._failure_for(method)
        if failure is not None and failure.processed and early is None:
            with contextlib.suppress(SlackError):
                self._check_auth(request, params)
                handler = self._methods.get(method)
                if handler is not None:
                    handler(params)
            if failure.status == 0:
                self._calls.append(Call(method, params, at, 0, "stalled"))
                await self._release.wait()
                return web.json_response({"ok": False, "error": "request_timeout"},
                                         status=504)
        if failure is not None:
            self._calls.append(Call(method, params, at, failure.status, "injected"))
            if failure.status == 429:
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": str(failure.retry_after)})
            return web.json_response({"ok": False, "error": "fatal_error"},
                                     status=failure.status)
        try:
            if early is not None:
                raise early
            self._check_auth(request, params)
            handler = self._methods.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            answer = {"ok": True, **handler(params)}
        except SlackError as exc:
            self._calls.append(Call(method, params, at, 200, exc.code))
            return web.json_response({"ok": False, "error": exc.code, **exc.extra})
        self._calls.append(Call(method, params, at, 200))
        return web.json_response(answer)

    async def _params(self, request: web.Request) -> Params:
        params: Params = dict(request.query)
        if request.body_exists:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise SlackError("invalid_json") from None
                if not isinstance(body, dict):
                    raise SlackError("invalid_json")
                params.update(body)
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in _JSON_FIELDS:
            value = params.get(key)
            if isinstance(value, str) and value[:1] in {"[", "{"}:
                try:
                    params[key] = json.loads(value)
                except ValueError:
                    raise SlackError(f"invalid_{key}") from None
        return params

    def _check_auth(self, request: web.Request, params: Params) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        token = token or params.pop("token", None)
        if not token:
            raise SlackError("not_authed")
        if token != self.token:
            raise SlackError("invalid_auth")

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        found = self._responses.get(request.match_info["key"])
        if found is None:
            return web.Response(status=404, text="no_such_response_url")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        found.posts.append(body)
        if found.channel and found.ts:
            target = self._find(found.channel, found.ts)
            if target is not None and _truthy(body.get("delete_original")):
                self._messages[found.channel].remove(target)
            elif target is not None and _truthy(body.get("replace_original")):
                self._edit(target, body)
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ state

    def _next_ts(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last_ts + 1)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _known_user(self, user: str) -> None:
        if self._users is not None and user not in self._users:
            raise SlackError("user_not_found")

    def _post_channel(self, channel: str) -> str:
        """A channel to post in: a known channel, a new public one, or a user's DM."""
        if channel in self._messages:
            return channel
        if channel.startswith("D_"):
            raise SlackError("channel_not_found")
        if channel[:1] in {"C", "G"}:
            self._messages[channel] = []
            return channel
        self._known_user(channel)
        return self.dm_channel(channel)

    def _existing(self, channel: str) -> str:
        if channel not in self._messages:
            raise SlackError("channel_not_found")
        return channel

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)

    @staticmethod
    def _public(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if not k.startswith("_")}

    @staticmethod
    def _check_content(params: Params, *, required: bool = True) -> None:
        text, blocks = params.get("text"), params.get("blocks")
        if required and not text and not blocks and not params.get("attachments"):
            raise SlackError("no_text")
        if text is not None and (not isinstance(text, str) or len(text) > _MAX_TEXT):
            raise SlackError("msg_too_long")
        if blocks is None:
            return
        if not isinstance(blocks, list) or len(blocks) > _MAX_MESSAGE_BLOCKS:
            raise SlackError("invalid_blocks")
        try:
            for block in Block.parse_all(blocks):
                block.validate_json()
        except Exception as exc:  # slack_sdk raises several kinds for bad blocks
            raise SlackError("invalid_blocks", errors=[str(exc)]) from None

    def _edit(self, message: dict[str, Any], changes: Params) -> None:
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in changes:
                message[key] = changes[key]
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self._history[(message["channel"], message["ts"])].append(self._public(message))

    # ------------------------------------------------------------------ methods

    def _auth_test(self, params: Params) -> Answer:
        return {"url": "https://fake.slack.com/", "team": "Fake", "user": "approvals",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": BOT_ID,
                "is_enterprise_install": False}

    def _chat_post_message(self, params: Params) -> Answer:
        channel = self._post_channel(str(params.get("channel") or ""))
        self._check_content(params)
        thread_ts = params.get("thread_ts")
        if thread_ts and self._find(channel, str(thread_ts)) is None:
            raise SlackError("thread_not_found")
        message: dict[str, Any] = {
            "type": "message", "ts": self._next_ts(), "channel": channel,
            "user": self.bot_user_id, "bot_id": BOT_ID, "app_id": APP_ID,
            "team": self.team_id, "text": params.get("text", ""),
        }
        for key in ("blocks", "attachments", "metadata"):
            if key in params:
                message[key] = params[key]
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
            parent = self._find(channel, str(thread_ts))
            assert parent is not None
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent.setdefault("thread_ts", parent["ts"])
        self._messages[channel].append(message)
        self._history[(channel, message["ts"])] = [self._public(message)]
        public = self._public(message)
        public.pop("channel")
        return {"channel": channel, "ts": message["ts"], "message": public}

    def _chat_update(self, params: Params) -> Answer:
        channel = self._existing(str(params.get("channel") or ""))
        message = self._find(channel, str(params.get("ts") or ""))
        if message is None:
            raise SlackError("message_not_found")
        self._check_content(params, required=False)
        self._edit(message, params)
        public = self._public(message)
        public.pop("channel")
        return {"channel": channel, "ts": message["ts"], "text": message.get("text", ""),
                "message": public}

    def _chat_post_ephemeral(self, params: Params) -> Answer:
        user = str(params.get("user") or "")
        if not user:
            raise SlackError("user_not_found")
        self._known_user(user)
        channel = self._post_channel(str(params.get("channel") or ""))
        owner = self._dm_owner.get(channel)
        if owner is not None and owner != user:
            raise SlackError("user_not_in_channel")
        self._check_content(params)
        message_ts = self._next_ts()
        self._ephemeral.append({"channel": channel, "user": user, "message_ts": message_ts,
                                "text": params.get("text", ""),
                                "blocks": params.get("blocks")})
        return {"message_ts": message_ts}

    def _conversations_open(self, params: Params) -> Answer:
        if params.get("channel"):
            channel = self._existing(str(params["channel"]))
            return {"channel": {"id": channel}}
        raw = params.get("users")
        users = raw if isinstance(raw, list) else str(raw or "").split(",")
        users = [u.strip() for u in users if u and u.strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        for user in users:
            self._known_user(user)
        if len(users) > 1:
            channel = "G_" + "_".join(sorted(users))
            self._messages.setdefault(channel, [])
            return {"channel": {"id": channel, "is_mpim": True}}
        channel = self.dm_channel(users[0])
        return {"channel": {"id": channel, "is_im": True, "user": users[0]},
                "already_open": True}

    def _conversations_history(self, params: Params) -> Answer:
        channel = self._existing(str(params.get("channel") or ""))
        limit = max(1, min(int(params.get("limit") or 100), 999))
        oldest = _ts_number(str(params.get("oldest") or "0"))
        latest = _ts_number(str(params.get("latest") or "inf"))
        inclusive = _truthy(params.get("inclusive"))
        with_metadata = _truthy(params.get("include_all_metadata"))
        offset = int(params.get("cursor") or 0)

        def in_range(ts: str) -> bool:
            number = _ts_number(ts)
            if inclusive:
                return oldest <= number <= latest
            return oldest < number < latest

        top = [m for m in reversed(self._messages[channel])
               if m.get("thread_ts", m["ts"]) == m["ts"] and in_range(m["ts"])]
        page = top[offset:offset + limit]
        messages = []
        for m in page:
            public = self._public(m)
            public.pop("channel")
            if not with_metadata:
                public.pop("metadata", None)
            messages.append(public)
        more = offset + limit < len(top)
        return {"messages": messages, "has_more": more, "pin_count": 0,
                "response_metadata": {"next_cursor": str(offset + limit) if more else ""}}

    def _conversations_replies(self, params: Params) -> Answer:
        channel = self._existing(str(params.get("channel") or ""))
        parent = str(params.get("ts") or "")
        if self._find(channel, parent) is None:
            raise SlackError("thread_not_found")
        with_metadata = _truthy(params.get("include_all_metadata"))
        messages = []
        for m in self._messages[channel]:
            if m["ts"] == parent or m.get("thread_ts") == parent:
                public = self._public(m)
                public.pop("channel")
                if not with_metadata:
                    public.pop("metadata", None)
                messages.append(public)
        return {"messages": messages, "has_more": False,
                "response_metadata": {"next_cursor": ""}}

    def _store_view(self, view: object, *, owner: str | None, view_id: str | None = None,
                    kind: str = "modal") -> dict[str, Any]:
        if not isinstance(view, dict) or view.get("type") != kind:
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": [f"view must be a {kind}"]})
        try:
            View(**view).validate_json()
            for block in Block.parse_all(view.get("blocks") or []):
                block.validate_json()
        except Exception as exc:  # slack_sdk raises several kinds for bad views
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": [str(exc)]}) from None
        view_id = view_id or f"V{next(self._ids):08d}"
        stored = {**view, "id": view_id, "team_id": self.team_id, "app_id": APP_ID,
                  "bot_id": BOT_ID, "hash": f"{time.time():.6f}.{next(self._ids)}",
                  "state": {"values": {}}, "root_view_id": view_id}
        self._views[view_id] = stored
        self._view_owner[view_id] = owner
        return stored

    def _take_trigger(self, params: Params) -> str | None:
        trigger = str(params.get("trigger_id") or "")
        if not trigger:
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": ["trigger_id is required"]})
        if trigger in self._used_triggers:
            raise SlackError("expired_trigger_id")
        self._used_triggers.add(trigger)
        return trigger_owner(trigger)

    def _views_open(self, params: Params) -> Answer:
        owner = self._take_trigger(params)
        stored = self._store_view(params.get("view"), owner=owner)
        self._modals.append((owner, stored["id"]))
        return {"view": stored}

    def _views_update(self, params: Params) -> Answer:
        view_id = params.get("view_id")
        external = params.get("external_id")
        if not view_id and external:
            view_id = next((i for i, v in self._views.items()
                            if v.get("external_id") == external), None)
        if not view_id or view_id not in self._views:
            raise SlackError("not_found")
        current = self._views[str(view_id)]
        expected = params.get("hash")
        if expected and expected != current["hash"]:
            raise SlackError("hash_conflict")
        owner = self._view_owner.get(str(view_id))
        stored = self._store_view(params.get("view"), owner=owner, view_id=str(view_id),
                                  kind=current["type"])
        if stored["type"] == "modal":
            self._modals.append((owner, stored["id"]))
        return {"view": stored}

    def _views_publish(self, params: Params) -> Answer:
        user = str(params.get("user_id") or "")
        if not user:
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": ["user_id is required"]})
        self._known_user(user)
        current = self._homes.get(user)
        expected = params.get("hash")
        if current and expected and expected != self._views[current]["hash"]:
            raise SlackError("hash_conflict")
        stored = self._store_view(params.get("view"), owner=user, view_id=current,
                                  kind="home")
        self._homes[user] = stored["id"]
        return {"view": stored}

    def _users_info(self, params: Params) -> Answer:
        user = str(params.get("user") or "")
        self._known_user(user)
        profile = dict((self._users or {}).get(user, {}))
        name = str(profile.pop("name", user.lower()))
        real_name = str(profile.pop("real_name", user))
        tz = str(profile.pop("tz", "UTC"))
        return {"user": {"id": user, "team_id": self.team_id, "name": name,
                         "real_name": real_name, "tz": tz, "deleted": False,
                         "is_bot": user == self.bot_user_id,
                         "profile": {"real_name": real_name, "display_name": name,
                                     **profile}}}

__all__ = ["BOT_ID", "TOKEN", "Call", "FakeSlack", "SlackError"]
