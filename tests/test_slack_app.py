"""``/purchase``, the request modal, signatures and ``/healthz``, through the real app.

Every test plays people with signed HTTP requests to the real web app, served on a local
port (Bolt listeners, store, outbox worker), against the stand-in Slack Web API; nothing
calls a listener directly. Decisions live in ``test_slack_decisions.py``, the App Home
and escaping in ``test_slack_home.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.kwargs_injection.async_utils import build_async_required_kwargs
from slack_bolt.response import BoltResponse

from bot.app import build_app
from bot.ids import ActionId, CallbackId, StepValue
from bot.listener_args import NamedArguments
from bot.runtime import Runtime
from bot.server import build_web
from bot.settings import Settings
from bot.standin import signing
from bot.standin.web_api import FakeSlack
from bot.standin.workspace import Workspace, has_buttons, serve_locally
from flows.model import RequestStatus
from flows.policy import parse_policy
from storage.db import Database
from tests.slack_support import (
    POLICY,
    ack_text,
    audit,
    block_text,
    create,
    dm_texts,
    errors_of,
    events_of,
    failed_calls,
    is_plain_ack,
    non_card_dms,
    refusals,
    workspace,
)

MODAL_INPUTS = {"amount", "currency", "vendor", "purpose", "cost_center"}


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    async with workspace() as running:
        yield running


def form(amount: str | None = "25,000", currency: str | None = "EUR",
         vendor: str | None = "Acme GmbH", purpose: str | None = "Desks for the new office",
         cost_center: str | None = "ENG-001"
         ) -> tuple[dict[str, str | None], dict[str, str | None]]:
    return ({"amount": amount, "vendor": vendor, "purpose": purpose,
             "cost_center": cost_center}, {"currency": currency})


# --------------------------------------------------------------------------- the modal


async def test_purchase_alone_opens_the_request_modal(ws: Workspace) -> None:
    response = await ws.command("U_ALICE", "")

    assert response.status_code == 200 and ack_text(response) == ""
    [opened] = ws.slack.calls("views.open")
    assert opened.error is None
    view = ws.slack.last_view("U_ALICE")
    assert view is not None and view["callback_id"] == CallbackId.PURCHASE_REQUEST.value
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert set(inputs) == MODAL_INPUTS
    for block_id, block in inputs.items():
        assert block["element"]["action_id"] == block_id
        assert block.get("optional", False) is (block_id == "cost_center")
    currencies = [o["value"] for o in inputs["currency"]["element"]["options"]]
    assert currencies[0] == "USD" and {"EUR", "GBP"} <= set(currencies)
    assert await ws.runtime.store.get(1) is None  # opening the form creates nothing


async def test_modal_submission_creates_the_request_with_a_receipt_and_a_card(
        ws: Workspace) -> None:
    texts, selects = form()
    response = await ws.submit("U_ALICE", CallbackId.PURCHASE_REQUEST, texts=texts,
                               selects=selects)

    assert is_plain_ack(response)
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.PENDING
    assert (request.amount, request.currency, request.vendor, request.cost_center) == (
        Decimal("25000"), "EUR", "Acme GmbH", "ENG-001")
    [receipt] = dm_texts(ws, "U_ALICE")
    assert "PR-1" in receipt and "€25,000.00" in receipt
    card = ws.card("U_BOB", "PR-1")
    assert has_buttons(card)
    shown = block_text(card)
    for part in ("PR-1", "<@U_ALICE>", "€25,000.00", "Acme GmbH", "Desks for the new office",
                 "Manager", "ENG-001"):
        assert part in shown, part
    assert await events_of(ws, 1) == ["submitted", "card_sent"]


INVALID_FORMS: list[tuple[str, str | None, str, str, str, str]] = [
    ("0", "USD", "Acme", "Desks", "amount", "more than zero"),
    ("-5", "USD", "Acme", "Desks", "amount", "not an amount"),
    ("NaN", "USD", "Acme", "Desks", "amount", "not an amount"),
    ("12,34,5", "USD", "Acme", "Desks", "amount", "not an amount"),
    ("1.005", "USD", "Acme", "Desks", "amount", "not an amount"),
    ("1,000,000,000,001", "USD", "Acme", "Desks", "amount", "at most"),
    ("", "USD", "Acme", "Desks", "amount", "enter an amount"),
    ("100", "ABC", "Acme", "Desks", "currency", "not a currency"),
    ("100", "JPY", "Acme", "Desks", "currency", "not accepted"),
    ("100", None, "Acme", "Desks", "currency", "choose a currency"),
    ("100", "USD", "Acme", "", "purpose", "what is bought"),
    ("100", "USD", "Acme", "   ", "purpose", "what is bought"),
    ("100", "USD", "", "Desks", "vendor", "who you are buying from"),
]


async def test_invalid_modal_input_answers_errors_naming_the_field(ws: Workspace) -> None:
    for amount, currency, vendor, purpose, field, says in INVALID_FORMS:
        texts, selects = form(amount=amount, currency=currency, vendor=vendor,
                              purpose=purpose)
        response = await ws.submit("U_ALICE", CallbackId.PURCHASE_REQUEST, texts=texts,
                                   selects=selects)

        errors = errors_of(response)
        assert field in errors and says in errors[field], (amount, currency, errors)
        assert set(errors) <= MODAL_INPUTS

    assert await ws.runtime.store.get(1) is None
    assert ws.slack.calls("chat.postMessage") == []
    assert await audit(ws) == []


async def test_every_wrong_field_of_the_modal_is_named_at_once(ws: Workspace) -> None:
    texts, selects = form(amount="abc", currency="ABC", vendor="", purpose="")
    errors = errors_of(await ws.submit("U_ALICE", CallbackId.PURCHASE_REQUEST, texts=texts,
                                       selects=selects))
    assert set(errors) == {"amount", "currency", "vendor", "purpose"}


async def test_an_unroutable_modal_submission_is_refused_with_the_reason(
        ws: Workspace) -> None:
    texts, selects = form(amount="2,000", currency="USD")
    errors = errors_of(await ws.submit("U_NOBODY", CallbackId.PURCHASE_REQUEST, texts=texts,
                                       selects=selects))
    assert any("route" in text for text in errors.values()), errors
    assert set(errors) <= MODAL_INPUTS
    assert await ws.runtime.store.get(1) is None


# --------------------------------------------------------------------------- /purchase <amount>


VALID_COMMANDS = [
    ("$1,200 Laptops for new hires", "1200", "USD", "$1,200.00"),
    ("$1,200 USD Laptops for new hires", "1200", "USD", "$1,200.00"),
    ("1200.50 Monitors for the design team", "1200.50", "USD", "$1,200.50"),
    ("1,200 EUR Chairs for the meeting room", "1200", "EUR", "€1,200.00"),
    ("€950 Standing desk", "950", "EUR", "€950.00"),
    ("1,000,000,000,000 GBP Buy the company", "1000000000000", "GBP", "£1,000,000,000,000.00"),
]


async def test_purchase_with_an_amount_creates_the_request_at_once(ws: Workspace) -> None:
    for n, (text, amount, currency, shown) in enumerate(VALID_COMMANDS, start=1):
        answer = ack_text(await ws.command("U_ALICE", text))

        assert f"PR-{n}" in answer and shown in answer, (text, answer)
        request = await ws.runtime.store.get(n)
        assert request is not None
        assert (request.amount, request.currency, request.vendor) == (
            Decimal(amount), currency, None), text
        assert request.status is RequestStatus.PENDING
        assert len(ws.cards_of("U_BOB")) == n
        assert f"PR-{n}" in block_text(ws.card("U_BOB", f"PR-{n}"))
    assert non_card_dms(ws, "U_ALICE") == []  # each ack carried PR-<n>: no receipt DM


INVALID_COMMANDS = [
    ("NaN Laptops", "not an amount"),
    ("nan Laptops", "not an amount"),
    ("inf Laptops", "not an amount"),
    ("1e309 Laptops", "not an amount"),
    ("-0 Laptops", "not an amount"),
    ("0 Laptops", "more than zero"),
    ("0.00 Laptops", "more than zero"),
    ("12,34,5 Laptops", "not an amount"),
    ("1.005 Laptops", "not an amount"),
    ("1,000,000,000,001 Laptops", "at most 1,000,000,000,000"),
    ("100 ABC Laptops", "ABC is not a currency code"),
    ("100 JPY Laptops", "not accepted here"),
    ("1200", "say what you are buying"),
    ("$1,200 USD", "say what you are buying"),
    ("frobnicate PR-1", "I don't know"),
    ("status", "say which request"),
    ("status PR-x", "not a request ID"),
    ("cancel PR-1 PR-2", "one request ID"),
]


async def test_invalid_purchase_text_is_answered_in_the_ack_and_creates_nothing(
        ws: Workspace) -> None:
    for text, says in INVALID_COMMANDS:
        answer = ack_text(await ws.command("U_ALICE", text))
        assert says in answer, (text, answer)

    assert await ws.runtime.store.get(1) is None
    assert [c.method for c in ws.slack.calls() if c.method != "auth.test"] == []
    assert await audit(ws) == []


async def test_an_unroutable_request_is_refused_with_the_reason(ws: Workspace) -> None:
    answer = ack_text(await ws.command("U_NOBODY", "2,000 Laptops for the team"))
    assert "can't be routed" in answer and "U_NOBODY" in answer
    assert await ws.runtime.store.get(1) is None


# --------------------------------------------------------------------------- status, list, help


async def test_help_explains_every_form(ws: Workspace) -> None:
    answer = ack_text(await ws.command("U_ALICE", "help"))
    for form_text in ("/purchase status PR-42", "/purchase list", "/purchase cancel PR-42",
                      "/purchase &lt;amount&gt; [&lt;CUR&gt;] &lt;purpose&gt;"):
        assert form_text in answer


async def test_status_shows_state_level_and_who_it_waits_for(ws: Workspace) -> None:
    request_id = await create(ws, "U_ALICE", "€25,000 Desks for the new office")

    mine = ack_text(await ws.command("U_ALICE", f"status PR-{request_id}"))
    assert "PR-1" in mine and "pending" in mine and "Manager" in mine
    assert "<@U_BOB>" in mine and "€25,000.00" in mine
    assert "step 1 of 2" in mine
    # the approver may look too; anyone else is told it is not there for them
    assert "<@U_BOB>" in ack_text(await ws.command("U_BOB", "status PR-1"))
    for user, text in [("U_EVE", "status PR-1"), ("U_ALICE", "status PR-99")]:
        answer = ack_text(await ws.command(user, text))
        assert "There is no request" in answer and "Desks" not in answer

    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    later = ack_text(await ws.command("U_ALICE", "status PR-1"))
    assert "Finance" in later and "<@U_FIN1>" in later and "<@U_FIN2>" in later
    assert "step 2 of 2" in later


async def test_list_shows_own_requests_and_what_waits_for_the_user(ws: Workspace) -> None:
    assert "You have no requests" in ack_text(await ws.command("U_ALICE", "list"))
    await create(ws, "U_ALICE", "$9,000 Monitors for the team")
    await create(ws, "U_BOB", "$2,000 Offsite catering")

    alice = ack_text(await ws.command("U_ALICE", "list"))
    assert "Your requests" in alice and "PR-1" in alice and "pending" in alice
    assert "Waiting for your decision" not in alice
    bob = ack_text(await ws.command("U_BOB", "list"))
    assert "Waiting for your decision" in bob and "PR-1" in bob
    assert "Your requests" in bob and "PR-2" in bob
    carol = ack_text(await ws.command("U_CAROL", "list"))
    assert "Waiting for your decision" in carol and "PR-2" in carol and "PR-1" not in carol


# --------------------------------------------------------------------------- cancel


async def test_the_requester_cancels_a_pending_request(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    card = ws.card("U_BOB", "PR-1")
    updates_before = len(ws.slack.calls("chat.update"))

    answer = ack_text(await ws.command("U_ALICE", "cancel PR-1"))

    assert "Cancelled" in answer and "PR-1" in answer
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.CANCELLED
    # the approver's card is updated in place: same message, no buttons, says why
    assert len(ws.slack.calls("chat.update")) == updates_before + 1
    updated = ws.slack.message(card["channel"], card["ts"])
    assert updated is not None and not has_buttons(updated)
    assert "Cancelled by the requester" in block_text(updated)
    assert len(ws.cards_of("U_BOB")) == 1
    [told] = non_card_dms(ws, "U_ALICE")
    assert "PR-1" in block_text(told) and "cancelled" in block_text(told)
    assert await events_of(ws, 1) == ["submitted", "card_sent", "cancelled"]
    # a cancelled request takes no more decisions
    await ws.click("U_BOB", card, ActionId.APPROVE)
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.CANCELLED


async def test_cancel_is_refused_with_the_reason_for_anyone_else_or_when_decided(
        ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the team")

    answer = ack_text(await ws.command("U_BOB", "cancel PR-1"))
    assert "Only the requester can cancel PR-1" in answer
    assert "There is no request PR-7" in ack_text(await ws.command("U_ALICE", "cancel PR-7"))
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    answer = ack_text(await ws.command("U_ALICE", "cancel PR-1"))
    assert "already approved" in answer

    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.APPROVED
    refused = [(e.actor, e.data["action"], e.data["code"]) for e in await refusals(ws)]
    assert refused == [("U_BOB", "cancel", "not_requester"),
                       ("U_ALICE", "cancel", "request_not_pending")]
    assert "cancelled" not in await events_of(ws, 1)
    assert not any("cancelled" in text for text in dm_texts(ws, "U_ALICE"))


# --------------------------------------------------------------------------- signatures


def _tampered(request: signing.SignedRequest, *, drop: str) -> signing.SignedRequest:
    headers = {k: v for k, v in request.headers.items() if k != drop}
    return signing.SignedRequest(request.body, headers)


@pytest.mark.parametrize("how", ["bad_signature", "stale", "future", "no_signature",
                                 "no_timestamp", "changed_body"])
async def test_unsigned_or_wrongly_signed_requests_get_401_and_change_nothing(
        ws: Workspace, how: str) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the team")
    card = ws.card("U_BOB", "PR-1")
    calls_before = len(ws.slack.calls())
    trail_before = await audit(ws)
    wrong, stale = how == "bad_signature", how == "stale"
    ts = int(time.time()) + 6 * 60 if how == "future" else None  # a clock far ahead

    value = StepValue(request_id=1, step=0).encode()
    requests = [
        signing.slash_command(ws.secret, text="$2,000 Chairs", user_id="U_ALICE",
                              response_url=ws.slack.response_url(),
                              bad_signature=wrong, stale=stale, timestamp=ts),
        signing.slash_command(ws.secret, text="", user_id="U_ALICE",
                              response_url=ws.slack.response_url(),
                              bad_signature=wrong, stale=stale, timestamp=ts),
        signing.slash_command(ws.secret, text="cancel PR-1", user_id="U_ALICE",
                              response_url=ws.slack.response_url(),
                              bad_signature=wrong, stale=stale, timestamp=ts),
        signing.block_actions(ws.secret, user_id="U_BOB", action_id="approve", value=value,
                              message=card, response_url=ws.slack.response_url(),
                              bad_signature=wrong, stale=stale, timestamp=ts),
        signing.block_actions(ws.secret, user_id="U_BOB", action_id="reject", value=value,
                              message=card, response_url=ws.slack.response_url(),
                              bad_signature=wrong, stale=stale, timestamp=ts),
        signing.view_submission(ws.secret, user_id="U_ALICE",
                                callback_id=CallbackId.PURCHASE_REQUEST.value,
                                values=signing.input_values(*form()),
                                bad_signature=wrong, stale=stale, timestamp=ts),
        signing.app_home_opened(ws.secret, user_id="U_ALICE", bad_signature=wrong,
                                stale=stale, timestamp=ts),
    ]
    for request in requests:
        if how == "no_signature":
            request = _tampered(request, drop="X-Slack-Signature")
        elif how == "no_timestamp":
            request = _tampered(request, drop="X-Slack-Request-Timestamp")
        elif how == "changed_body":
            request = signing.SignedRequest(request.body.replace(b"U_", b"U_X"),
                                            request.headers)
        response = await ws.send(request)
        assert response.status_code == 401, (how, response.text)
    await ws.settle()

    assert len(ws.slack.calls()) == calls_before  # no Slack call at all
    assert await audit(ws) == trail_before
    assert await ws.runtime.store.get(2) is None
    request_1 = await ws.runtime.store.get(1)
    assert request_1 is not None and request_1.status is RequestStatus.PENDING


async def test_a_correctly_signed_request_is_accepted(ws: Workspace) -> None:
    """The same builders, signed right, do get through (so the 401s above mean something)."""
    response = await ws.send(signing.slash_command(
        ws.secret, text="help", user_id="U_ALICE", response_url=ws.slack.response_url()))
    assert response.status_code == 200 and "/purchase" in ack_text(response)


async def test_the_url_verification_handshake_is_answered(ws: Workspace) -> None:
    response = await ws.send(signing.url_verification(ws.secret, challenge="c-123"))
    assert response.status_code == 200 and response.json() == {"challenge": "c-123"}


# --------------------------------------------------------------------------- Bolt's arguments


def bolt_requests(ws: Workspace) -> list[AsyncBoltRequest]:
    """One request of each kind the app listens to, as Bolt parses them."""
    url = ws.slack.response_url()
    value = StepValue(request_id=1, step=0).encode()
    signed = [
        signing.slash_command(ws.secret, text="$9,000 Monitors", user_id="U_ALICE",
                              response_url=url),
        *(signing.block_actions(ws.secret, user_id="U_BOB", action_id=action.value,
                                value=value, channel_id="D_U_BOB", message_ts="1.000001",
                                response_url=url) for action in ActionId),
        *(signing.view_submission(ws.secret, user_id="U_ALICE", callback_id=callback.value,
                                  values={}) for callback in CallbackId),
        signing.app_home_opened(ws.secret, user_id="U_ALICE"),
        signing.event_callback(ws.secret, event={"type": "tokens_revoked", "tokens": {}}),
    ]
    return [AsyncBoltRequest(body=s.body.decode(), headers=s.headers) for s in signed]


async def test_listeners_get_what_bolts_own_injection_would_give_them(ws: Workspace) -> None:
    """bot.listener_args builds only the arguments a listener names: they match Bolt's own
    (kwargs injection), and so does which listener a request goes to."""
    listeners = ws.app._async_listeners
    assert listeners and all(isinstance(one, NamedArguments) for one in listeners)
    for request in bolt_requests(ws):
        ws.app._init_context(request)
        response = BoltResponse(status=200, body="")
        matched = []
        for listener in listeners:
            bolts = listener.listener
            ours_match = await listener.async_matches(req=request, resp=response)
            assert ours_match == await bolts.async_matches(req=request, resp=response)
            if not ours_match:
                continue
            matched.append(listener)
            expected = build_async_required_kwargs(
                logger=bolts.logger, required_arg_names=list(bolts.arg_names),
                request=request, response=response, this_func=bolts.ack_function)
            assert listener.arguments(request) == expected
        assert len(matched) == 1, request.body


async def test_each_request_gets_bolts_context_with_the_runtimes_client(ws: Workspace) -> None:
    [command, *_] = bolt_requests(ws)
    ours = AsyncBoltRequest(body=command.raw_body, headers=command.headers)
    ws.app._init_context(ours)
    bolts = AsyncBoltRequest(body=command.raw_body, headers=command.headers)
    AsyncApp._init_context(ws.app, bolts)  # what Bolt itself puts there
    assert ours.context.keys() == bolts.context.keys()
    assert ours.context.client is ws.runtime.client  # the same client, not a copy per request
    for key in bolts.context.keys() - {"client"}:
        assert ours.context[key] == bolts.context[key], key


# --------------------------------------------------------------------------- health


async def test_healthz_answers_ok_while_the_database_answers(ws: Workspace) -> None:
    response = await ws.http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


REFUSED_DB = "postgresql+asyncpg://approvals@127.0.0.1:9/approvals"  # port 9: nothing listens
SECRET = "signing-secret"


@contextlib.asynccontextmanager
async def app_on(database: Database) -> AsyncIterator[tuple[httpx.AsyncClient, FakeSlack]]:
    """The real app (no background work) on ``database``, against a stand-in Slack."""
    async with FakeSlack() as slack:
        settings = Settings(SLACK_BOT_TOKEN=slack.token, SLACK_SIGNING_SECRET=SECRET,
                            SLACK_API_URL=slack.base_url, DATABASE_URL=database.url,
                            _env_file=None)
        runtime = Runtime(settings=settings, policy=parse_policy(POLICY), policy_source=POLICY,
                          db=database)
        web_app = build_web(runtime, build_app(runtime, process_before_response=True))
        try:
            async with serve_locally(web_app) as http:
                yield http, slack
        finally:
            await runtime.close()


async def test_healthz_answers_503_when_the_database_refuses_connections() -> None:
    async with app_on(Database(REFUSED_DB)) as (http, _):
        response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] != "ok"


async def test_healthz_answers_503_in_time_when_the_database_says_nothing() -> None:
    """A server that accepts connections and never answers (a hung database, a black hole)."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        database = Database(f"postgresql+asyncpg://approvals@127.0.0.1:{port}/approvals",
                            ping_timeout=0.3)
        async with app_on(database) as (http, _):
            started = asyncio.get_running_loop().time()
            response = await asyncio.wait_for(http.get("/healthz"), timeout=5)
            waited = asyncio.get_running_loop().time() - started
    finally:
        server.close()
        await server.wait_closed()
    assert response.status_code == 503
    assert waited < 2


async def test_with_the_database_down_people_are_told_to_try_again() -> None:
    async with app_on(Database(REFUSED_DB)) as (http, slack):
        async def send(request: signing.SignedRequest) -> httpx.Response:
            return await http.post("/slack/events", content=request.body,
                                   headers=request.headers)

        for text in ("$9,000 Monitors for the team", "status PR-1", "list", "cancel PR-1"):
            answer = ack_text(await send(signing.slash_command(
                SECRET, text=text, user_id="U_ALICE", response_url=slack.response_url())))
            assert "database is not answering" in answer and "try again" in answer, text
        for action in ("approve", "reject"):
            url = slack.response_url()
            response = await send(signing.block_actions(
                SECRET, user_id="U_BOB", action_id=action,
                value=StepValue(request_id=1, step=0).encode(), channel_id="D_U_BOB",
                message_ts="1.000001", response_url=url))
            assert response.status_code == 200
            [told] = slack.responses(url)
            assert "database is not answering" in told["text"], action
        errors = errors_of(await send(signing.view_submission(
            SECRET, user_id="U_ALICE", callback_id=CallbackId.PURCHASE_REQUEST.value,
            values=signing.input_values(*form()))))
        assert any("database is not answering" in text for text in errors.values())
        assert slack.calls("chat.postMessage") == [] and slack.calls("views.open") == []


async def test_no_listener_error_reached_slack(ws: Workspace) -> None:
    """A plain flow leaves no call the stand-in refused (bad blocks, unknown channel...)."""
    await create(ws, "U_ALICE", "€25,000 Desks for the new office")
    await ws.click("U_BOB", ws.card("U_BOB", "PR-1"), ActionId.APPROVE)
    await ws.reject("U_FIN1", ws.card("U_FIN1", "PR-1"), "Not this quarter")
    assert failed_calls(ws) == []


async def test_a_form_that_cannot_be_opened_is_not_a_silent_failure(ws: Workspace) -> None:
    """Slack refuses ``views.open`` (here: a trigger used twice, ``expired_trigger_id``):
    the person is told, by the command's response_url or, from the App Home, by DM."""
    trigger = signing.trigger_id("U_ALICE")
    first, again = ws.slack.response_url(), ws.slack.response_url()
    for url in (first, again):
        response = await ws.send(signing.slash_command(
            ws.secret, text="", user_id="U_ALICE", response_url=url, trigger=trigger))
        assert response.status_code == 200 and ack_text(response) == ""
    assert [c.error for c in ws.slack.calls("views.open")] == [None, "expired_trigger_id"]
    assert ws.slack.responses(first) == []
    [told] = ws.slack.responses(again)
    assert told["response_type"] == "ephemeral" and "couldn't open" in told["text"]

    await ws.open_home("U_ALICE")
    home = ws.slack.home_of("U_ALICE")
    assert home is not None
    await ws.send(signing.block_actions(
        ws.secret, user_id="U_ALICE", action_id=ActionId.OPEN_REQUEST_MODAL.value, value="",
        view=home, trigger=trigger))
    assert any("couldn't open" in text for text in dm_texts(ws, "U_ALICE"))
    assert await ws.runtime.store.get(1) is None


async def test_a_rejection_form_that_cannot_be_opened_says_so(ws: Workspace) -> None:
    await create(ws, "U_ALICE", "$9,000 Monitors for the team")
    card = ws.card("U_BOB", "PR-1")
    trigger = signing.trigger_id("U_BOB")
    await ws.send(signing.slash_command(ws.secret, text="", user_id="U_BOB",
                                        response_url=ws.slack.response_url(), trigger=trigger))
    url = ws.slack.response_url(channel=card["channel"], ts=card["ts"])

    await ws.send(signing.block_actions(
        ws.secret, user_id="U_BOB", action_id=ActionId.REJECT.value,
        value=StepValue(request_id=1, step=0).encode(), message=card, response_url=url,
        trigger=trigger))

    [told] = ws.slack.responses(url)
    assert "couldn't open the rejection form" in told["text"]
    request = await ws.runtime.store.get(1)
    assert request is not None and request.status is RequestStatus.PENDING
    assert has_buttons(ws.card("U_BOB", "PR-1"))
