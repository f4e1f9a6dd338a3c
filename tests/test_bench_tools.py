"""The benchmarks' own tools: the lean Slack stand-in (``bench.slack_lean``), driven by a
real ``AsyncWebClient``, and the load generator (``bench.loadgen``) against tiny local
servers answering with ``Content-Length``, chunked bodies, or a dropped connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bench.http11 import Parser
from bench.loadgen import FAILED, Encoded, burst
from bench.slack_lean import TOKEN, LeanSlack, serve
from bot.standin import signing

CARD_BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*PR-7* · €25,000.00"}},
    {"type": "actions", "block_id": "decision", "elements": [
        {"type": "button", "action_id": "approve", "value": '{"r":7,"s":0}',
         "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "action_id": "reject", "value": '{"r":7,"s":0}',
         "text": {"type": "plain_text", "text": "Reject"}}]},
]


def card_metadata(outbox_id: int) -> dict[str, Any]:
    return {"event_type": "approval_card",
            "event_payload": {"outbox_id": outbox_id, "request": 7, "step": 0}}


@pytest.fixture
async def lean() -> AsyncIterator[tuple[LeanSlack, str]]:
    slack = LeanSlack(llm_delay=0.0)
    server = await serve(slack)
    port = server.sockets[0].getsockname()[1]
    try:
        yield slack, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.json()


# --------------------------------------------------------------------------- the stand-in


async def test_a_card_is_posted_recorded_updated_and_found_by_its_metadata(
        lean: tuple[LeanSlack, str]) -> None:
    _, url = lean
    client = AsyncWebClient(token=TOKEN, base_url=f"{url}/api/")
    assert (await client.auth_test())["user_id"] == "U_BOT"

    posted = await client.chat_postMessage(channel="U_MANAGER", text="PR-7 needs you",
                                           blocks=CARD_BLOCKS, metadata=card_metadata(41))
    assert posted["channel"] == "D_U_MANAGER"
    assert posted["message"]["blocks"] == CARD_BLOCKS
    assert posted["message"]["metadata"] == card_metadata(41)
    notice = await client.chat_postMessage(channel="D_U_MANAGER", text="a notice")
    assert float(notice["ts"]) > float(posted["ts"])  # unique and increasing

    cards = await get_json(f"{url}/bench/cards?since=0")
    assert cards["next"] == 2
    assert cards["cards"] == [{
        "request": 7, "step": 0, "outbox": 41, "user": "U_MANAGER", "channel": "D_U_MANAGER",
        "at": cards["cards"][0]["at"], "value": '{"r":7,"s":0}', "position": 0}]
    assert (await get_json(f"{url}/bench/cards?since=1"))["cards"] == []

    decided = [CARD_BLOCKS[0], {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "Approved by <@U_MANAGER>"}]}]
    updated = await client.chat_update(channel=posted["channel"], ts=posted["ts"],
                                       text="PR-7 approved", blocks=decided)
    assert updated["message"]["blocks"] == decided

    # what the product does before posting again: look for the outbox id
    opened = await client.conversations_open(users="U_MANAGER")
    assert opened["channel"]["id"] == "D_U_MANAGER"
    history = await client.conversations_history(channel="D_U_MANAGER",
                                                 include_all_metadata=True, limit=200)
    found = [m for m in history["messages"]
             if ((m.get("metadata") or {}).get("event_payload") or {}).get("outbox_id") == 41]
    assert [m["ts"] for m in found] == [posted["ts"]]
    assert found[0]["text"] == "PR-7 approved" and found[0]["blocks"] == decided
    without = await client.conversations_history(channel="D_U_MANAGER")
    assert all("metadata" not in m for m in without["messages"])

    reply = await client.chat_postMessage(channel="D_U_MANAGER", thread_ts=posted["ts"],
                                          text="reminder", metadata=card_metadata(42))
    thread = await client.conversations_replies(channel="D_U_MANAGER", ts=posted["ts"],
                                                include_all_metadata=True)
    assert [m["ts"] for m in thread["messages"]] == [posted["ts"], reply["ts"]]
    assert thread["messages"][1]["metadata"]["event_payload"]["outbox_id"] == 42

    counts = await get_json(f"{url}/bench/counts")
    assert counts["chat.postMessage"] == 3 and counts["chat.update"] == 1


async def test_a_card_in_any_key_order_is_recorded_alike(lean: tuple[LeanSlack, str]) -> None:
    """slack_sdk's encoding (channel first, metadata last) is read without decoding the
    blocks; any other order is decoded in full, to the same effect."""
    _, url = lean
    card = {"text": "PR-7 needs you", "blocks": CARD_BLOCKS, "metadata": card_metadata(51)}
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    answers = []
    async with aiohttp.ClientSession() as http:
        for body in ({"channel": "U_MANAGER", **card}, {**card, "channel": "U_MANAGER"},
                     {"channel": "U_MANAGER", "metadata": card_metadata(51),
                      "blocks": CARD_BLOCKS, "text": "PR-7 needs you"}):
            async with http.post(f"{url}/api/chat.postMessage", data=json.dumps(body),
                                 headers=auth) as response:
                answers.append(await response.json())
    cards = (await get_json(f"{url}/bench/cards?since=0"))["cards"]
    assert [{k: v for k, v in c.items() if k not in {"at", "position"}} for c in cards] == [
        {"request": 7, "step": 0, "outbox": 51, "user": "U_MANAGER",
         "channel": "D_U_MANAGER", "value": '{"r":7,"s":0}'}] * 3
    for answer in answers:
        assert answer["ok"] and answer["channel"] == "D_U_MANAGER"
        message = answer["message"]
        assert (message["text"], message["blocks"], message["metadata"]) == (
            "PR-7 needs you", CARD_BLOCKS, card_metadata(51))


async def test_the_other_methods_the_product_calls(lean: tuple[LeanSlack, str]) -> None:
    slack, url = lean
    client = AsyncWebClient(token=TOKEN, base_url=f"{url}/api/")
    home = {"type": "home", "blocks": CARD_BLOCKS[:1]}
    first = await client.views_publish(user_id="U_MANAGER", view=home)
    again = await client.views_publish(user_id="U_MANAGER", view=home)
    assert first["view"]["id"] == again["view"]["id"]
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Reject PR-7"},
             "callback_id": "reject_reason", "blocks": CARD_BLOCKS[:1]}
    assert (await client.views_open(trigger_id="1.2.3", view=modal))["view"]["id"]
    ephemeral = await client.chat_postEphemeral(channel="D_U_MANAGER", user="U_MANAGER",
                                                text="not yours to decide")
    assert ephemeral["message_ts"]
    webhook = AsyncWebhookClient(f"{url}/response/bench")
    assert (await webhook.send(text="Submitted PR-7.")).status_code == 200
    assert slack.responses == [("bench", {"text": "Submitted PR-7."})]
    assert (await get_json(f"{url}/bench/counts"))["response_url"] == 1
    # form-encoded, with JSON in a field, as some clients send
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/api/chat.postMessage",
            data={"token": TOKEN, "channel": "C_GENERAL", "text": "hi",
                  "metadata": json.dumps(card_metadata(43))}) as response:
        answer = await response.json()
    assert answer["ok"] and answer["channel"] == "C_GENERAL"
    assert answer["message"]["metadata"] == card_metadata(43)


async def test_a_wrong_or_missing_token_is_refused_as_slack_does(
        lean: tuple[LeanSlack, str]) -> None:
    _, url = lean
    with pytest.raises(SlackApiError) as caught:
        await AsyncWebClient(token="xoxb-stolen", base_url=f"{url}/api/").chat_postMessage(
            channel="U_MANAGER", text="hi")
    assert caught.value.response.status_code == 200
    assert caught.value.response["error"] == "invalid_auth"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/auth.test") as response:
            assert response.status == 200
            assert (await response.json()) == {"ok": False, "error": "not_authed"}
        async with http.post(f"{url}/api/no.such.method",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert (await response.json()) == {"ok": False, "error": "unknown_method"}
    assert (await get_json(f"{url}/bench/cards?since=0")) == {"cards": [], "next": 1}


async def test_the_slow_model_answers_each_request_on_its_own_clock(
        lean: tuple[LeanSlack, str]) -> None:
    slack, url = lean
    slack.llm_delay = 0.25
    loop = asyncio.get_running_loop()

    async def ask(http: aiohttp.ClientSession) -> float:
        async with http.post(f"{url}/v1/chat/completions",
                             json={"model": "small", "messages": []}) as response:
            answer = await response.json()
        assert answer["model"] == "small"
        assert json.loads(answer["choices"][0]["message"]["content"])["risk"] == "medium"
        return loop.time()

    started = loop.time()
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as http:
        finished = await asyncio.gather(*(ask(http) for _ in range(8)))
    # eight connections, each waiting its own 0.25 s: together (2 s one after another)
    assert max(finished) - started < 1.0


# --------------------------------------------------------------------------- the load generator


async def test_the_load_generator_reads_length_and_chunked_bodies_and_counts_drops() -> None:
    async def events(request: web.Request) -> web.StreamResponse:
        text = (await request.read()).decode()
        if "drop" in text:
            assert request.transport is not None
            request.transport.close()  # no answer at all
            return web.Response(text="never sent")
        if "chunked" in text:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in (b"Submitted ", b"PR-2", b"."):
                await response.write(piece)
            await response.write_eof()
            return response
        return web.Response(text="Submitted PR-1.")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    bodies = [signing.sign(f"text={word}".encode(), "secret")
              for word in ("plain", "chunked", "drop", "plain", "chunked")]
    try:
        load = await burst(f"http://127.0.0.1:{port}", Encoded(bodies), seconds=30,
                           concurrency=1, once=True)
        cycled = await burst(f"http://127.0.0.1:{port}", bodies[:2], seconds=0.2,
                             concurrency=2)
    finally:
        await runner.cleanup()
    assert [(status, text) for _, _, status, text in load.results if status != FAILED] == [
        (200, "Submitted PR-1."), (200, "Submitted PR-2."), (200, "Submitted PR-1."),
        (200, "Submitted PR-2.")]
    assert [r[2] for r in load.results] == [200, 200, FAILED, 200, 200]
    assert "ConnectionResetError" in load.results[2][3]
    assert load.non_2xx == 1 and load.ended >= load.started
    assert len(cycled.results) > len(bodies[:2]) and cycled.non_2xx == 0


def test_the_parser_takes_messages_split_anywhere() -> None:
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nSubm\r\n7\r\nitted P\r\n4\r\nR-3.\r\n0\r\nX-Trailer: 1\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    for step in (1, 3, len(wire)):
        parser = Parser(response=True)
        messages = [m for at in range(0, len(wire), step)
                    for m in parser.feed(wire[at:at + step])]
        assert [(m.status, m.body, m.keep_alive) for m in messages] == [
            (200, b"Submitted PR-3.", True), (200, b"ok", False)]
        assert parser.idle
    until_close = Parser(response=True)
    assert until_close.feed(b"HTTP/1.0 200 OK\r\n\r\nall of it") == []
    last = until_close.eof()
    assert last is not None and last.body == b"all of it" and not last.keep_alive
