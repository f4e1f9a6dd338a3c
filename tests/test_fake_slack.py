"""The fake Slack Web API (``bot.standin.web_api``), driven by a real ``AsyncWebClient``,
and the signed requests of ``bot.standin.signing``, checked with slack_sdk's verifier."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import cards
from bot.standin import signing
from bot.standin.web_api import FakeSlack

SECRET = "signing-secret"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*PR-1*"}}]
HOME = {"type": "home", "blocks": BLOCKS}
MODAL = {"type": "modal", "title": {"type": "plain_text", "text": "Reject PR-1"},
         "callback_id": "reject_reason", "blocks": BLOCKS}


async def error_of(call: Awaitable[Any]) -> str:
    """The ``error`` of a Web API call that must fail."""
    with pytest.raises(SlackApiError) as caught:
        await call
    return str(caught.value.response["error"])


# --------------------------------------------------------------------------- auth


async def test_auth(slack: FakeSlack) -> None:
    answer = await slack.client().auth_test()
    assert answer["user_id"] == "U_BOT" and answer["team_id"] == "T_FAKE"
    assert slack.base_url.endswith("/api/")
    assert await error_of(slack.client(token="xoxb-stolen").auth_test()) == "invalid_auth"
    async with aiohttp.ClientSession() as session, session.post(
            slack.base_url + "auth.test") as response:
        assert (await response.json())["error"] == "not_authed"
    assert [c.error for c in slack.calls("auth.test")] == [None, "invalid_auth", "not_authed"]


# --------------------------------------------------------------------------- messages


async def test_post_to_a_user_lands_in_their_dm(slack: FakeSlack) -> None:
    client = slack.client()
    first = await client.chat_postMessage(channel="U_ALICE", text="one", blocks=BLOCKS)
    second = await client.chat_postMessage(channel="U_ALICE", text="two")
    assert first["channel"] == second["channel"] == "D_U_ALICE"
    assert float(first["ts"]) < float(second["ts"])
    assert first["message"]["blocks"] == BLOCKS
    assert [m["text"] for m in slack.messages_to("U_ALICE")] == ["one", "two"]
    assert slack.messages_to("U_BOB") == []
    (call, _) = slack.calls("chat.postMessage")
    assert call.params["channel"] == "U_ALICE" and call.params["blocks"] == BLOCKS
    assert call.status == 200 and call.at <= time.time()


async def test_form_encoded_bodies_are_understood(slack: FakeSlack) -> None:
    answer = await slack.client().api_call(
        "chat.postMessage", data={"channel": "U_BOB", "text": "form",
                                  "blocks": json.dumps(BLOCKS)})
    assert answer["ok"] and slack.messages_to("U_BOB")[0]["blocks"] == BLOCKS


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
async def test_real_cards_are_accepted_and_bad_blocks_refused(slack: FakeSlack) -> None:
    client = slack.client()
    home = cards.home_view([], [], "U_ALICE")
    await client.views_publish(user_id="U_ALICE", view=home)
    too_long = [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    assert await error_of(client.chat_postMessage(channel="U_ALICE", text="x",
                                                  blocks=too_long)) == "invalid_blocks"
    assert await error_of(client.chat_postMessage(channel="U_ALICE")) == "no_text"


async def test_update_needs_an_existing_message(slack: FakeSlack) -> None:
    client = slack.client()
    posted = await client.chat_postMessage(channel="U_ALICE", text="pending")
    channel, ts = posted["channel"], posted["ts"]
    assert await error_of(client.chat_update(channel=channel, ts="1.000001",
                                             text="x")) == "message_not_found"
    assert await error_of(client.chat_update(channel="U_ALICE", ts=ts,
                                             text="x")) == "channel_not_found"
    updated = await client.chat_update(channel=channel, ts=ts, text="approved", blocks=BLOCKS)
    assert updated["ts"] == ts and updated["text"] == "approved"
    message = slack.message(channel, ts)
    assert message is not None and message["text"] == "approved" and "edited" in message
    assert [v["text"] for v in slack.versions(channel, ts)] == ["pending", "approved"]


async def test_threads_and_history_with_metadata(slack: FakeSlack) -> None:
    client = slack.client()
    opened = await client.conversations_open(users="U_FIN1")
    channel = opened["channel"]["id"]
    assert channel == slack.dm_channel("U_FIN1") == "D_U_FIN1"
    card = await client.chat_postMessage(
        channel=channel, text="card",
        metadata={"event_type": "approval_card", "event_payload": {"r": 42, "s": 1}})
    await client.chat_postMessage(channel=channel, text="reply", thread_ts=card["ts"])
    await client.chat_postMessage(channel="U_FIN1", text="later")
    assert await error_of(client.chat_postMessage(channel=channel, text="x",
                                                  thread_ts="9.000009")) == "thread_not_found"

    plain = await client.conversations_history(channel=channel)
    assert [m["text"] for m in plain["messages"]] == ["later", "card"]  # newest first
    assert all("metadata" not in m for m in plain["messages"])
    found = await client.conversations_history(channel=channel, include_all_metadata=True)
    tagged = [m for m in found["messages"]
              if m.get("metadata", {}).get("event_payload") == {"r": 42, "s": 1}]
    assert [m["ts"] for m in tagged] == [card["ts"]] and tagged[0]["reply_count"] == 1

    page = await client.conversations_history(channel=channel, limit=1)
    assert page["has_more"] and len(page["messages"]) == 1
    rest = await client.conversations_history(
        channel=channel, limit=1, cursor=page["response_metadata"]["next_cursor"])
    assert rest["messages"][0]["text"] == "card" and not rest["has_more"]
    assert await error_of(client.conversations_history(channel="D_NOBODY")) == (
        "channel_not_found")


async def test_ephemeral_cannot_reach_into_someone_elses_dm(slack: FakeSlack) -> None:
    client = slack.client()
    channel = slack.dm_channel("U_ALICE")
    assert await error_of(client.chat_postEphemeral(channel=channel, user="U_BOB",
                                                    text="no")) == "user_not_in_channel"
    sent = await client.chat_postEphemeral(channel=channel, user="U_ALICE", text="yes")
    assert sent["message_ts"]
    assert [e["text"] for e in slack.ephemerals("U_ALICE")] == ["yes"]
    assert slack.ephemerals("U_BOB") == []


async def test_unknown_users_when_users_are_declared() -> None:
    async with FakeSlack(users={"U_ALICE": {"real_name": "Alice", "tz": "Europe/Paris"}}) as s:
        client = s.client()
        info = await client.users_info(user="U_ALICE")
        assert info["user"]["real_name"] == "Alice" and info["user"]["tz"] == "Europe/Paris"
        assert await error_of(client.users_info(user="U_GHOST")) == "user_not_found"
        assert await error_of(client.chat_postMessage(channel="U_GHOST",
                                                      text="x")) == "user_not_found"


async def test_unknown_method(slack: FakeSlack) -> None:
    assert await error_of(slack.client().api_call("chat.teleport")) == "unknown_method"


# --------------------------------------------------------------------------- views


async def test_views(slack: FakeSlack) -> None:
    client = slack.client()
    trigger = signing.trigger_id("U_FIN1")
    opened = await client.views_open(trigger_id=trigger, view=MODAL)
    view_id = opened["view"]["id"]
    last = slack.last_view("U_FIN1")
    assert last is not None and last["callback_id"] == "reject_reason"
    assert slack.last_view("U_BOB") is None
    assert await error_of(client.views_open(trigger_id=trigger, view=MODAL)) == (
        "expired_trigger_id")
    bad = {**MODAL, "title": {"type": "plain_text", "text": "x" * 25}}
    assert await error_of(client.views_open(trigger_id=signing.trigger_id("U_FIN1"),
                                            view=bad)) == "invalid_arguments"

    await client.views_update(view_id=view_id, view={**MODAL, "callback_id": "changed"})
    last = slack.last_view("U_FIN1")
    assert last is not None and last["callback_id"] == "changed" and last["id"] == view_id
    assert await error_of(client.views_update(view_id="V_NONE", view=MODAL)) == "not_found"

    await client.views_publish(user_id="U_ALICE", view=HOME)
    again = await client.views_publish(user_id="U_ALICE", view=HOME)
    home = slack.home_of("U_ALICE")
    assert home is not None and home["id"] == again["view"]["id"] and home["type"] == "home"
    assert slack.home_of("U_BOB") is None


# --------------------------------------------------------------------------- failures


async def test_429_with_retry_after_is_retried_by_the_sdk_handler(slack: FakeSlack) -> None:
    client = slack.client(retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    slack.fail("chat.postMessage", status=429, times=1, retry_after=1)
    started = time.monotonic()
    answer = await client.chat_postMessage(channel="U_ALICE", text="hello")
    assert answer["ok"]
    assert time.monotonic() - started >= 1  # the client honoured Retry-After
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]
    assert len(slack.messages_to("U_ALICE")) == 1  # the refused call changed nothing


async def test_429_without_a_handler_surfaces_retry_after(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=429, times=1, retry_after=3)
    with pytest.raises(SlackApiError) as caught:
        await slack.client().chat_postMessage(channel="U_ALICE", text="hello")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] in ("3", ["3"])
    assert slack.messages_to("U_ALICE") == []
    assert (await slack.client().chat_postMessage(channel="U_ALICE", text="again"))["ok"]


async def test_500s(slack: FakeSlack) -> None:
    slack.fail("chat.update", status=500, times=2)
    slack.fail("auth.test", status=500, times=1)
    plain = slack.client()
    with pytest.raises(SlackApiError) as caught:
        await plain.auth_test()
    assert caught.value.response.status_code == 500
    posted = await plain.chat_postMessage(channel="U_ALICE", text="a")  # other methods work
    retrying = slack.client(retry_handlers=[AsyncServerErrorRetryHandler(
        max_retry_count=2, interval_calculator=FixedValueRetryIntervalCalculator(0.01))])
    await retrying.chat_update(channel=posted["channel"], ts=posted["ts"], text="b")
    assert [c.status for c in slack.calls("chat.update")] == [500, 500, 200]


async def test_a_fraction_of_calls_fails_repeatably() -> None:
    async def pattern(seed: int) -> list[int]:
        async with FakeSlack(seed=seed) as fake:
            fake.fail("users.info", status=500, rate=0.3)
            client = fake.client()
            for _ in range(40):
                with contextlib.suppress(SlackApiError):
                    await client.users_info(user="U_ALICE")
                await client.auth_test()  # another method is never failed
            assert all(c.status == 200 for c in fake.calls("auth.test"))
            return [c.status for c in fake.calls("users.info")]

    first, again, other = await pattern(7), await pattern(7), await pattern(8)
    assert first == again and first != other
    assert 4 <= first.count(500) <= 20


def test_fail_needs_a_count_or_a_rate() -> None:
    fake = FakeSlack()
    with pytest.raises(ValueError):
        fake.fail("auth.test", times=0)
    with pytest.raises(ValueError):
        fake.fail("auth.test", rate=1.5)


# --------------------------------------------------------------------------- response_url


async def test_response_url_receives_posts_and_can_replace_the_message(
        slack: FakeSlack) -> None:
    posted = await slack.client().chat_postMessage(channel="U_FIN1", text="card")
    url = slack.response_url(channel=posted["channel"], ts=posted["ts"])
    webhook = AsyncWebhookClient(url)
    answer = await webhook.send(text="Only assignees can decide", response_type="ephemeral",
                                replace_original=False)
    assert answer.status_code == 200
    await webhook.send(text="decided", replace_original=True)
    assert [p["text"] for p in slack.responses(url)] == ["Only assignees can decide",
                                                         "decided"]
    message = slack.message(posted["channel"], posted["ts"])
    assert message is not None and message["text"] == "decided"
    missing = await AsyncWebhookClient(f"{slack.url}/response/nope").send(text="x")
    assert missing.status_code == 404
    with pytest.raises(KeyError):
        slack.responses(f"{slack.url}/response/nope")


# --------------------------------------------------------------------------- signing


def _verify(signed: signing.SignedRequest, now: float | None = None) -> bool:
    verifier = SignatureVerifier(SECRET, clock=_Clock(now))
    return verifier.is_valid_request(signed.body, signed.headers)


class _Clock(Clock):
    def __init__(self, now: float | None) -> None:
        self._now = now

    def now(self) -> float:
        return time.time() if self._now is None else self._now


def _payload(signed: signing.SignedRequest) -> dict[str, object]:
    raw = parse_qs(signed.body.decode())["payload"][0]
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


def test_slash_command_is_signed_like_slack() -> None:
    signed = signing.slash_command(SECRET, text="$1,200 USD Laptops", user_id="U_ALICE",
                                   response_url="http://127.0.0.1/response/R1")
    assert _verify(signed)
    assert signed.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(signed.body.decode())
    assert form["command"] == ["/purchase"] and form["text"] == ["$1,200 USD Laptops"]
    assert form["user_id"] == ["U_ALICE"] and form["response_url"]
    assert signing.trigger_owner(form["trigger_id"][0]) == "U_ALICE"
    assert not _verify(signing.slash_command(SECRET, response_url="x", bad_signature=True))
    assert not _verify(signing.slash_command(SECRET, response_url="x", stale=True))
    body, headers = signing.slash_command(SECRET, response_url="x", timestamp=1_000_000)
    assert _verify(signing.SignedRequest(body, headers), now=1_000_100)


def test_block_actions_payload() -> None:
    message = {"type": "message", "ts": "1700000000.000100", "channel": "D_U_BOB",
               "text": "card", "blocks": BLOCKS}
    signed = signing.block_actions(SECRET, user_id="U_BOB", action_id="approve",
                                   value='{"r":1,"s":0}', message=message,
                                   response_url="http://127.0.0.1/response/R1")
    assert _verify(signed)
    payload = _payload(signed)
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U_BOB", "username": "u_bob", "name": "u_bob",
                               "team_id": "T_FAKE"}
    assert payload["actions"] == [{**payload["actions"][0],  # type: ignore[index]
                                   "action_id": "approve", "value": '{"r":1,"s":0}'}]
    assert payload["container"] == {"type": "message", "message_ts": "1700000000.000100",
                                    "channel_id": "D_U_BOB", "is_ephemeral": False}
    assert payload["channel"] == {"id": "D_U_BOB", "name": "directmessage"}
    assert payload["response_url"] == "http://127.0.0.1/response/R1"
    home = _payload(signing.block_actions(SECRET, user_id="U_BOB", action_id="approve",
                                          value="{}", view={"id": "V1", "type": "home"}))
    assert home["container"] == {"type": "view", "view_id": "V1"}
    assert "response_url" not in home and "message" not in home
    with pytest.raises(ValueError):
        signing.block_actions(SECRET, user_id="U_BOB", action_id="approve")


def test_view_submission_payload() -> None:
    values = signing.input_values({"reason": "Too expensive"})
    signed = signing.view_submission(SECRET, user_id="U_BOB", callback_id="reject_reason",
                                     values=values, private_metadata='{"r":1,"s":0}')
    assert _verify(signed)
    view = _payload(signed)["view"]
    assert isinstance(view, dict)
    assert view["callback_id"] == "reject_reason"
    assert view["private_metadata"] == '{"r":1,"s":0}'
    assert view["state"] == {"values": {"reason": {"reason": {
        "type": "plain_text_input", "value": "Too expensive"}}}}
    assert signing.input_values(selects={"currency": "EUR"})["currency"]["currency"][
        "selected_option"]["value"] == "EUR"


def test_events_are_json_and_carry_retries() -> None:
    signed = signing.app_home_opened(SECRET, user_id="U_ALICE", event_id="Ev1", retry_num=1)
    assert _verify(signed)
    assert signed.headers["Content-Type"] == "application/json"
    assert signed.headers["X-Slack-Retry-Num"] == "1"
    assert signed.headers["X-Slack-Retry-Reason"] == "http_timeout"
    body = json.loads(signed.body)
    assert body["type"] == "event_callback" and body["event_id"] == "Ev1"
    assert body["event"]["type"] == "app_home_opened" and body["event"]["tab"] == "home"
    assert body["event"]["user"] == "U_ALICE"
    first = json.loads(signing.app_home_opened(SECRET, user_id="U_A").body)["event_id"]
    second = json.loads(signing.app_home_opened(SECRET, user_id="U_A").body)["event_id"]
    assert first != second
    assert "X-Slack-Retry-Num" not in signing.app_home_opened(SECRET, user_id="U_A").headers
    assert json.loads(signing.url_verification(SECRET).body)["type"] == "url_verification"


def test_trigger_owner() -> None:
    assert signing.trigger_owner(signing.trigger_id("U_ALICE")) == "U_ALICE"
    assert signing.trigger_owner("12345.98765.abcd2358fdea") is None
    assert signing.trigger_owner("nonsense") is None
