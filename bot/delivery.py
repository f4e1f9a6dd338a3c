"""The outbox worker: turns committed outbox rows into Slack Web API calls.

Rows are claimed with a lease (so a crashed worker's rows come back), rendered from the
request's *current* state with the pure builders of :mod:`bot.cards` (so a card sent late
is never stale), and marked sent in the same transaction that records the card's channel
and ``ts`` and its ``card_sent`` audit entry. Rows of one request are delivered in order;
different requests go out concurrently. Failures are retried with backoff (honouring
``Retry-After`` on 429) and end as ``dead`` with a log line after :data:`MAX_ATTEMPTS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import cards
from bot.clock import Clock
from flows.machine import Notice
from flows.model import Request, StepStatus
from storage.store import CardRef, OutboxItem, Sent, Store

log = logging.getLogger("approvals.delivery")

MAX_ATTEMPTS = 10
CARD_EVENT = "approval_card"  # message metadata event types of what the bot posts
NOTICE_EVENT = "approvals_notice"
# Messages claimed per round: one claim and one record for all of them. Room for new
# requests opens as a round is recorded (bot.runtime), so the round sets the pipeline's
# beat: rounds of 100 left the work half and then the acknowledgements waiting ~30 ms at
# the end of each; rounds of 50 gave 8 % more acknowledgements a second for the same CPU.
BATCH = 50
CONCURRENCY = 16  # calls to Slack in flight at once (each to another person's DM)
HOME_REPUBLISH = 3  # publishes of one Home in a row while it keeps changing under us
# Slack takes about 100 views.publish a minute per workspace (rate limit tier 4): App Home
# refreshes go out at most this often, those waiting longest first; a burst of changes
# to hundreds of people's Homes is published over the following minutes instead of
# being refused (429) and taking cards' turns meanwhile.
HOME_PUBLISHES_PER_MINUTE = 90.0
HOME_BURST = 15  # publishes that may go out at once after a quiet spell
# App Homes published in one round at most. A Home is rendered from its owner's waiting
# list (a few dozen ms for an approver with thousands waiting, on a busy machine), and a
# round's cards are not counted as sent until its Homes are out too: fifteen in one round
# held the cards behind them, and with them new requests and acknowledgements, for 300 ms.
# The budget's burst still goes out within a few rounds.
HOMES_PER_ROUND = 2
# Slack errors that no retry can fix: the row goes to dead letters at once.
PERMANENT = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "missing_scope",
    "user_not_found", "channel_not_found", "invalid_blocks", "invalid_arguments",
    "msg_too_long", "no_text", "cannot_dm_bot", "user_disabled", "not_allowed_token_type",
})

# chat.update errors that mean this one card is gone (deleted, a retention policy, an
# archived conversation): no retry brings it back, and it must not hold up the rest.
CARD_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed",
                       "channel_not_found", "is_archived"})


class Permanent(Exception):
    """A delivery that can never succeed (bad data, missing scope, unknown user)."""


class HomeBudget:
    """How many App Homes may be published now: a token bucket refilled at
    ``per_minute``, holding at most ``burst``."""

    def __init__(self, *, per_minute: float = HOME_PUBLISHES_PER_MINUTE,
                 burst: int = HOME_BURST) -> None:
        self.per_second = per_minute / 60
        self.burst = burst
        self._tokens = float(burst)
        self._at: datetime | None = None

    def available(self, now: datetime) -> int:
        if self._at is not None:
            elapsed = max(0.0, (now - self._at).total_seconds())
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.per_second)
        self._at = now
        return max(0, int(self._tokens))

    def spend(self, count: int) -> None:
        """``count`` publishes went out (may go below zero: one opened by a person)."""
        self._tokens -= count


@dataclass(frozen=True, slots=True)
class _Known:
    """A round's requests and their cards, read once as it starts. A round takes at most
    one message of each request (:meth:`Store.claim_outbox` keeps a request's messages in
    order), so every card its messages may need -- to update a step's cards, to thread a
    reminder -- was recorded by an earlier round, before this one read them."""

    requests: dict[int, Request]
    cards: dict[tuple[int, int, str], CardRef]

    def of_step(self, request_id: int, step: int) -> list[CardRef]:
        return [c for (r, s, _), c in self.cards.items() if r == request_id and s == step]


class Deliverer:
    def __init__(self, *, store: Store, client: AsyncWebClient, clock: Clock,
                 lease_seconds: float = 30.0, only_publisher: bool = False,
                 homes_per_minute: float = HOME_PUBLISHES_PER_MINUTE) -> None:
        """``only_publisher``: no other process publishes App Homes (one process on
        SQLite), so a Home need not be read again after its publish (see
        :meth:`publish_home`). ``homes_per_minute``: App Home refreshes published at
        most (:class:`HomeBudget`)."""
        self.store = store
        self.homes = HomeBudget(per_minute=homes_per_minute)
        self.only_publisher = only_publisher
        # publishes of one person's Home in this process, one at a time (by hash of user)
        self._home_locks = [asyncio.Lock() for _ in range(64)]
        self.lease_seconds = lease_seconds
        self.client = client
        self.clock = clock
        self._lock = asyncio.Lock()
        self._dm_channels: dict[str, str] = {}
        self.http: aiohttp.ClientSession | None = None  # shared connections, once running
        # called with how many messages to people a round handled, once they are recorded
        # as sent and before its App Homes go out: room for more (the runtime wakes
        # whoever creates them)
        self.on_sent: Callable[[int], None] | None = None

    async def drain(self, *, max_rounds: int = 100, homes: bool = True) -> int:
        """Deliver every due row (App Home refreshes only if ``homes``); returns how many
        were handled."""
        handled = 0
        async with self._lock:
            for _ in range(max_rounds):
                now = self.clock.now()
                items = await self.store.claim_outbox(
                    now, limit=BATCH, lease_seconds=self.lease_seconds,
                    homes=min(self.homes.available(now), HOMES_PER_ROUND) if homes else False)
                if not items:
                    break
                self.homes.spend(len({str(i.payload["user"]) for i in items
                                      if i.kind == "home"}))
                handled += len(items)
                await self._deliver_batch(items)
        return handled

    async def _deliver_batch(self, items: list[OutboxItem]) -> None:
        by_request: dict[int | None, list[OutboxItem]] = defaultdict(list)
        homes: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in items:
            if item.kind == "home":
                homes[str(item.payload["user"])].append(item)
            else:
                by_request[item.request_id].append(item)
        sent: list[Sent] = []  # marked together after each round of sends
        # the requests and their cards as the round starts, read once for all of it
        known = _Known(*await self.store.for_delivery(
            [r for r in by_request if r is not None]))

        async def one_request(group: list[OutboxItem]) -> None:
            for position, item in enumerate(group):
                if not await self._attempt(item, sent, known=known):
                    # keep the request's order: the rest waits for this one
                    await self.store.outbox_release([i.id for i in group[position + 1:]],
                                                    at=self.clock.now())
                    break

        async def one_home(user: str, group: list[OutboxItem]) -> None:
            await self._attempt(group[0], sent, also=group[1:])

        await _at_most(CONCURRENCY, [one_request(g) for g in by_request.values()])
        await self._mark(sent)
        if by_request and self.on_sent is not None:
            self.on_sent(sum(len(group) for group in by_request.values()))
        # App Homes last, once per user per batch, showing the state after the batch
        await _at_most(CONCURRENCY, [one_home(u, g) for u, g in homes.items()])
        await self._mark(sent)

    async def _mark(self, sent: list[Sent]) -> None:
        """Record what went out, in one transaction. Should this process die first, the
        rows' leases run out and the next attempt finds each message in its conversation
        (by the outbox id in its metadata) instead of sending it again."""
        batch = list(sent)
        sent.clear()
        await self.store.outbox_done_many(batch, at=self.clock.now())

    async def _attempt(self, item: OutboxItem, sent: list[Sent], *,
                       also: list[OutboxItem] | None = None, known: _Known | None = None
                       ) -> bool:
        """Deliver ``item`` (noted in ``sent``); ``False`` when it is to be tried again
        later. ``known``: the round's requests and cards, read as it started."""
        try:
            done = await self._send(item, known)
        except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self._failed(item, exc, also=also)
        except Permanent as exc:
            await self._dead(item, str(exc), also=also)
            return True
        card, audit = done
        sent.append(Sent(item.id, card, audit, tuple(extra.id for extra in also or [])))
        return True

    async def _failed(self, item: OutboxItem, exc: Exception, *,
                      also: list[OutboxItem] | None) -> bool:
        """Schedule a retry (``False``), or give up on a hopeless row (``True``)."""
        now = self.clock.now()
        error = _describe(exc)
        code = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        if code in PERMANENT or item.attempts >= MAX_ATTEMPTS:
            await self._dead(item, error, also=also)
            return True
        delay = _retry_after(exc)
        if delay is None:
            delay = min(2.0 ** item.attempts, 300.0)
        retry_at = now + timedelta(seconds=delay)
        log.warning("outbox %s (%s) attempt %s failed: %s; retrying in %.0fs", item.id,
                    item.kind, item.attempts, error, delay)
        for row in [item, *(also or [])]:
            await self.store.outbox_retry(row.id, error=error, retry_at=retry_at)
        return False

    async def _dead(self, item: OutboxItem, error: str, *, also: list[OutboxItem] | None) -> None:
        log.error("outbox %s (%s for PR-%s) is dead after %s attempts: %s", item.id, item.kind,
                  item.request_id, item.attempts, error)
        for row in [item, *(also or [])]:
            await self.store.outbox_retry(row.id, error=error, retry_at=self.clock.now(),
                                          dead=True)

    # ------------------------------------------------------------------ the calls

    async def _send(self, item: OutboxItem, known: _Known | None = None
                    ) -> tuple[CardRef | None, tuple[str, str, dict[str, Any]] | None]:
        payload = item.payload
        if item.kind == "home":
            await self.publish_home(str(payload["user"]))
            return None, None
        if item.kind == "tell":  # a refused click: only the clicker sees why
            await self._tell(item, str(payload["user"]), str(payload["text"]),
                             payload.get("response_url"))
            return None, None
        if item.kind == "intake_failed":  # acknowledged, but it never became a request
            await self._post(item, user=str(payload["user"]), kwargs={
                "text": cards.intake_failed_text(str(payload["ref"]), str(payload["reason"]))})
            return None, None
        request = None
        if item.request_id is not None:
            request = known.requests.get(item.request_id) if known is not None else None
            request = request or await self.store.get(item.request_id)
        if request is None:
            raise Permanent(f"request {item.request_id} is gone")
        if item.kind == "card":
            return await self._card(item, request, known)
        if item.kind == "update_cards":
            await self._update_cards(request, int(payload["step"]), known)
        elif item.kind == "notify":
            step_index = payload.get("step")
            step = request.step(int(step_index)) if step_index is not None else None
            message = cards.outcome_dm(request, Notice(payload["notice"]), step=step)
            await self._post(item, user=str(payload["user"]), kwargs=message.as_kwargs())
        elif item.kind == "receipt":
            await self._post(item, user=str(payload["user"]),
                             kwargs={"text": cards.submitted_text(request)})
        elif item.kind == "reminder":
            await self._reminder(item, request, payload, known)
        elif item.kind == "ask":
            step = request.steps[int(payload["step"])]
            message = cards.question_dm(request, step, int(payload["question"]))
            await self._post(item, user=request.requester, kwargs=message.as_kwargs())
        elif item.kind == "answer":
            await self._answer(item, request, payload, known)
        else:
            raise Permanent(f"unknown outbox kind {item.kind!r}")
        return None, None

    async def _card(self, item: OutboxItem, request: Request, known: _Known | None = None
                    ) -> tuple[CardRef | None, tuple[str, str, dict[str, Any]] | None]:
        step = request.steps[int(item.payload["step"])]
        user = str(item.payload["user"])
        if step.status is not StepStatus.PENDING:
            return None, None  # decided before its card went out: nobody needs it now
        message = cards.approval_card(request, step, viewer=user)
        existing = next((c for c in await self._cards(request.id, step.index, known)
                         if c.user == user), None)
        if existing is not None:  # a step handed back: their old card comes alive again
            await self._call("chat.update", {"channel": existing.channel, "ts": existing.ts,
                                             **message.as_kwargs()})
            return None, None
        channel, ts = await self._post(item, user=user, kwargs=message.as_kwargs(),
                                       event_type=CARD_EVENT,
                                       extra={"request": request.id, "step": step.index})
        card = CardRef(request.id, step.index, user, channel, ts)
        audit = ("card_sent", "system", {"step": step.index, "level": step.level, "to": user,
                                         "channel": channel, "ts": ts})
        return card, audit

    async def _cards(self, request_id: int, step: int, known: _Known | None) -> list[CardRef]:
        """The cards sent for ``step``: the round's (``known``), or read now."""
        if known is not None:
            return known.of_step(request_id, step)
        return await self.store.cards(request_id, step)

    async def _update_cards(self, request: Request, index: int, known: _Known | None) -> None:
        step = request.steps[index]
        for card in await self._cards(request.id, index, known):
            message = cards.approval_card(request, step, viewer=card.user)
            try:
                await self._call("chat.update", {"channel": card.channel, "ts": card.ts,
                                                 **message.as_kwargs()})
            except SlackApiError as exc:
                if exc.response.get("error") not in CARD_GONE:
                    raise
                # that copy is gone for good; the others, and what follows, still go out
                log.warning("%s's card of %s (%s %s) can no longer be updated: %s", card.user,
                            request.ref, card.channel, card.ts, exc.response.get("error"))

    async def _reminder(self, item: OutboxItem, request: Request,
                        payload: dict[str, Any], known: _Known | None) -> None:
        index, user = int(payload["step"]), str(payload["user"])
        step = request.steps[index]
        if step.status is not StepStatus.PENDING or user not in step.assignees:
            return
        message = cards.reminder_dm(request, step, int(payload["waited_seconds"]))
        await self._post_to_card(item, request, index, user, message.as_kwargs(), known)

    async def _answer(self, item: OutboxItem, request: Request,
                      payload: dict[str, Any], known: _Known | None) -> None:
        index, number = int(payload["step"]), int(payload["question"])
        step = request.steps[index]
        message = cards.answer_reply(request, step, number)
        await self._post_to_card(item, request, index, step.questions[number].by,
                                 message.as_kwargs(), known)

    async def _post_to_card(self, item: OutboxItem, request: Request, step: int, user: str,
                            kwargs: dict[str, Any], known: _Known | None) -> None:
        """Post in the thread of ``user``'s card for ``step``, or by DM if it has none."""
        card = next((c for c in await self._cards(request.id, step, known) if c.user == user),
                    None)
        if card is not None:
            await self._post(item, user=user, kwargs=kwargs, channel=card.channel,
                             thread_ts=card.ts)
        else:
            await self._post(item, user=user, kwargs=kwargs)

    async def _tell(self, item: OutboxItem, user: str, text: str,
                    response_url: object) -> None:
        """Ephemeral through the interaction's ``response_url`` while it works (Slack keeps
        one for 30 minutes), else by DM: ``chat.postEphemeral`` cannot reach someone in
        another person's DM."""
        if isinstance(response_url, str) and response_url:
            webhook = AsyncWebhookClient(response_url, timeout=10, session=self.http)
            answer = await webhook.send(text=text, response_type="ephemeral",
                                        replace_original=False)
            if answer.status_code == 200:
                return
            if answer.status_code == 429 or answer.status_code >= 500:
                raise OSError(f"response_url answered {answer.status_code}")
            log.info("response_url answered %s; telling %s by DM", answer.status_code, user)
        await self._post(item, user=user, kwargs={"text": text})

    async def _post(self, item: OutboxItem, *, user: str, kwargs: dict[str, Any],
                    channel: str | None = None, thread_ts: str | None = None,
                    event_type: str = NOTICE_EVENT,
                    extra: dict[str, Any] | None = None) -> tuple[str, str]:
        """``chat.postMessage`` at most once per outbox row.

        Every post carries the row's id in its message metadata. When an earlier attempt's
        outcome is unknown (a crash, a timeout, a 5xx after Slack may have posted), the
        conversation is searched for that id first, so a retry never posts twice.
        """
        if item.attempts > 1:
            found = await self._find_posted(item, user=user, channel=channel,
                                            thread_ts=thread_ts)
            if found is not None:
                log.info("outbox %s was already posted (%s %s); not posting again", item.id,
                         *found)
                return found
        response = await self._call("chat.postMessage", {
            "channel": channel or user, "thread_ts": thread_ts, **kwargs,
            "metadata": {"event_type": event_type,
                         "event_payload": {"outbox_id": item.id, **(extra or {})}}})
        return str(response["channel"]), str(response["ts"])

    async def _call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """One Web API call with a JSON body, answered as a dict; an error answer raises
        ``SlackApiError`` with the response (status, headers, ``error``), as slack_sdk does.

        The outbox's calls go straight through the shared connection pool: slack_sdk's
        per-call work (argument conversion, URL joining, request and response objects,
        a retry loop the outbox does not use) cost a third of a card's delivery. Without
        a pool (not started yet), the call goes through the client.
        """
        args = {k: v for k, v in args.items() if v is not None}
        if self.http is None or self.http.closed:
            data = (await self.client.api_call(method, json=args)).data
            return data if isinstance(data, dict) else {}
        base = self.client.base_url
        url = base + method if base.endswith("/") else f"{base}/{method}"
        # (orjson: a card's 2 KB of blocks in 3 µs instead of 22)
        async with self.http.post(url, data=orjson.dumps(args), headers={
                "Authorization": f"Bearer {self.client.token}",
                "Content-Type": "application/json; charset=utf-8"}) as response:
            status, headers = response.status, response.headers
            body = await response.read()
        try:
            data = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            data = {}
        if status == 200 and isinstance(data, dict) and data.get("ok"):
            return data
        answer = AsyncSlackResponse(client=self.client, http_verb="POST", api_url=url,
                                    req_args={}, data=data if isinstance(data, dict) else {},
                                    headers=dict(headers), status_code=status)
        answer.validate()  # type: ignore[no-untyped-call]  # raises SlackApiError
        raise SlackApiError(f"{method} failed (status {status})",  # type: ignore[no-untyped-call]
                            answer)

    async def _find_posted(self, item: OutboxItem, *, user: str, channel: str | None,
                           thread_ts: str | None) -> tuple[str, str] | None:
        if channel is None:
            opened = await self.client.conversations_open(users=user)
            channel = str(opened["channel"]["id"])
        if thread_ts is not None:
            page = await self.client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=200)
        else:
            page = await self.client.conversations_history(
                channel=channel, include_all_metadata=True, limit=200)
        for message in page.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("outbox_id") == item.id:
                return channel, str(message["ts"])
        return None

    async def publish_home(self, user: str) -> None:
        """Publish ``user``'s App Home as the database has it now.

        Replicas refresh one person's Home concurrently, and the publish that reaches Slack
        last may have been rendered from older state than another. So each publisher reads
        again after its publish and publishes again if the view is already out of date:
        the last publish is always checked against the state after it, and any change
        after that check queues a refresh of its own.

        Within one process, one person's publishes take turns (read, then publish), so
        the last one made is from the latest read: when this process is the only
        publisher, that check (a second read and render per publish) is skipped.
        """
        async with self._home_locks[hash(user) % len(self._home_locks)]:
            view = await self._home_view(user)
            for _ in range(HOME_REPUBLISH):
                await self._call("views.publish", {"user_id": user, "view": view})
                if self.only_publisher:
                    return
                current = await self._home_view(user)
                if current == view:
                    return
                view = current
        log.info("the App Home of %s kept changing; its next refresh shows the rest", user)

    async def _home_view(self, user: str) -> dict[str, Any]:
        # only the rows the view shows, and counts of the rest: an approver with
        # thousands waiting costs a few dozen documents, not thousands
        waiting, waiting_total, mine, mine_total = await self.store.home(
            user, waiting=cards.HOME_WAITING_MAX, mine=cards.HOME_MINE_MAX)
        return cards.home_view(waiting, mine, user, waiting_total=waiting_total,
                               mine_total=mine_total)


async def _at_most(limit: int, jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs``, ``limit`` at a time: as many tasks as that, each taking the next job
    when its last one is done (a task and a semaphore turn per job cost more than the
    job's own bookkeeping when there are a hundred of them a round)."""
    pending = iter(jobs)

    async def runner() -> None:
        for job in pending:
            await job

    try:
        await asyncio.gather(*(runner() for _ in range(min(limit, len(jobs)))))
    finally:
        for job in pending:  # not started: a runner failed (the database went away)
            job.close()


def _retry_after(exc: Exception) -> float | None:
    if isinstance(exc, SlackApiError) and exc.response.status_code == 429:
        raw = exc.response.headers.get("Retry-After") or exc.response.headers.get(
            "retry-after")
        try:
            return max(float(raw), 0.0) if raw is not None else 1.0
        except (TypeError, ValueError):
            return 1.0
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.status_code}: {exc.response.get('error')}"
    return f"{type(exc).__name__}: {exc}"
