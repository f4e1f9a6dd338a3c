"""The Bolt app: Slack listeners that acknowledge, hand off to the store, and answer.

Each listener is a few lines: parse what Slack sent (typed values from :mod:`bot.ids` and
:mod:`bot.commands`), run one command through :class:`storage.store.Store`, answer the
person, and wake the outbox worker, which sends and updates the cards. Who may decide is
checked by the core for every click, never by who was shown a button. Errors become
one sentence for the person in :func:`user_message`; nobody sees a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltRequest, AsyncRespond
from slack_bolt.logger import get_bolt_app_logger
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import DBAPIError, OperationalError

from bot import cards
from bot.commands import (
    CancelRequest,
    CreateRequest,
    DelegateOff,
    DelegateTo,
    ListRequests,
    OpenModal,
    ShowHelp,
    ShowStatus,
    help_text,
    parse_command,
    parse_modal,
)
from bot.ids import (
    SLASH_COMMAND,
    ActionId,
    CallbackId,
    EventType,
    InputId,
    RejectMetadata,
    RequestModalMetadata,
    StepValue,
)
from bot.listener_args import pass_only_named
from bot.runtime import Runtime
from bot.text import escape
from flows.errors import ApprovalsError, RequestInvalid, Unroutable
from flows.machine import AnswerInfo, AskInfo, Cancel, Reject, Submit
from storage.store import UNKNOWN_STEP

log = logging.getLogger("approvals.slack")

ANSWER_WITHIN = 2.5  # seconds: Slack gives 3 to acknowledge
FORM_FAILED = ("I couldn't open the request form. Try again, or request at once: "
               "`/purchase 1,200 USD Laptops for new hires`.")
CONFIRM_WITHIN = 2.2  # seconds a submission's write may take before we answer anyway
UNCONFIRMED = ("I couldn't confirm your request in time; it may still go through. Check "
               "`/purchase list` in a minute before submitting it again.")
CLICK_UNCONFIRMED = ("I couldn't confirm your approval in time; it may still count. The "
                     "card shows the outcome in a moment: click again only if it does not.")
TRY_AGAIN = ("The approvals database is not answering right now. Nothing was changed; "
             "try again in a moment.")


def user_message(exc: BaseException) -> str:
    """The one place an exception becomes words for a person."""
    if isinstance(exc, RequestInvalid):
        return f"That didn't work: {exc.message}."
    if isinstance(exc, Unroutable):
        return f"This request can't be routed: {exc}. Ask your finance team to check the policy."
    if isinstance(exc, ApprovalsError):
        return str(exc)
    if isinstance(exc, OperationalError | DBAPIError | OSError | TimeoutError):
        return TRY_AGAIN
    return "Something went wrong on our side and nothing was changed. Try again in a moment."


async def bounded(work: Awaitable[str]) -> str:
    """``work``'s answer, or a clear one if it fails or is too slow to ack in time."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            return await work
    except Exception as exc:
        if not isinstance(exc, ApprovalsError):
            log.exception("a Slack request failed")
        return user_message(exc)


async def create_request(runtime: Runtime, parsed: CreateRequest, user: str) -> str:
    """``/purchase <amount> [<CUR>] <purpose>`` by ``user``: accepted (numbered, its first
    approver named) or refused with the reason. What the Bolt listener and the fast path
    for this command (:mod:`bot.fastpath`) both answer; wrap it in :func:`bounded`."""
    try:
        async with asyncio.timeout(CONFIRM_WITHIN):
            received = await runtime.store.receive(Submit(
                requester=user, amount=parsed.amount,
                currency=parsed.currency or runtime.policy.currency,
                purpose=parsed.purpose, at=runtime.clock.now()),
                policy=runtime.policy, source=runtime.policy_source)
    except TimeoutError:
        return UNCONFIRMED  # its write may still land: never say "nothing changed"
    runtime.received(received)
    return cards.submitted_text(received.request)


class _TokenGivenTwice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that our client (built from the same
    token, with SLACK_API_URL) wins; that is the intent, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


class _SharedClientApp(AsyncApp):
    """Bolt's app, handing every request the runtime's Web API client.

    Bolt (since 1.15) builds a new client for each request, so that a listener may change
    its token without touching other requests; building one reads the proxy variables
    from the environment, a few percent of the server's CPU per acknowledgement. Our
    listeners never change the client, and every Slack call shares one connection pool
    anyway. The context holds what Bolt's own ``_init_context`` puts there
    (``test_slack_app.py`` checks it still does).
    """

    def _init_context(self, req: AsyncBoltRequest) -> None:
        req.context["logger"] = get_bolt_app_logger(app_name=self.name,
                                                    base_logger=self._base_logger)
        req.context["token"] = self._token
        req.context["client"] = self.client
        req.context["listener_runner"] = self.listener_runner


def build_app(runtime: Runtime, *, process_before_response: bool = False) -> AsyncApp:
    """The Bolt app for ``runtime`` (HTTP or Socket Mode).

    Request verification (signature and age) is on whenever there is a signing secret,
    which HTTP mode requires; the middleware for what the app never receives (the bot's
    own messages as events, workflow function tokens) is left out.
    """
    settings = runtime.settings
    framework = logging.getLogger("slack_bolt.AsyncApp")
    if not any(isinstance(f, _TokenGivenTwice) for f in framework.filters):
        framework.addFilter(_TokenGivenTwice())
    app = _SharedClientApp(
        signing_secret=settings.slack_signing_secret, client=runtime.client,
        process_before_response=process_before_response,
        request_verification_enabled=settings.slack_signing_secret is not None,
        ignoring_self_events_enabled=False, attaching_function_token_enabled=False)
    store, clock = runtime.store, runtime.clock

    def currencies() -> tuple[str, ...]:
        return runtime.policy.accepted_currencies

    async def tell(body: dict[str, Any], client: AsyncWebClient, text: str,
                   respond: AsyncRespond | None = None) -> None:
        """An answer only the clicker sees: ephemeral via response_url, else by DM."""
        user = body["user"]["id"]
        try:
            if respond is not None and body.get("response_url"):
                await respond(text=text, response_type="ephemeral", replace_original=False)
            else:
                await client.chat_postMessage(channel=user, text=text)
        except Exception:
            log.exception("could not tell %s: %s", user, text)

    # ------------------------------------------------------------------ /purchase

    @app.command(SLASH_COMMAND)
    async def purchase(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient,
                       respond: AsyncRespond) -> None:
        user = command["user_id"]
        try:
            parsed = parse_command(command.get("text") or "", currencies=currencies())
        except RequestInvalid as exc:
            # the message may quote what was typed: escaped, it can't ping or link
            await ack(text=f"{escape(exc.message)}\n\n{help_text()}")
            return
        if isinstance(parsed, OpenModal):
            await ack()
            opened = await open_request_modal(client, command["trigger_id"],
                                              RequestModalMetadata(
                                                  channel=command.get("channel_id"),
                                                  response_url=command.get("response_url")))
            if not opened:
                try:
                    await respond(text=FORM_FAILED, response_type="ephemeral")
                except Exception:
                    log.exception("could not tell %s the form did not open", user)
            return
        answer = await bounded(_answer(parsed, user))
        await ack(text=answer)
        # a new request is work for whoever creates it (woken again here: a write that was
        # not confirmed in time may still land); anything else may have queued messages,
        # timers or work for either half
        runtime.wake("work" if isinstance(parsed, CreateRequest) else "all")

    async def _answer(parsed: object, user: str) -> str:
        if isinstance(parsed, ShowHelp):
            return help_text()
        if isinstance(parsed, CreateRequest):
            return await create_request(runtime, parsed, user)
        if isinstance(parsed, ListRequests):
            return cards.list_text(await store.requests_of(user),
                                   await store.waiting_for(user))
        if isinstance(parsed, ShowStatus):
            request = await store.get(parsed.request_id)
            if request is None or not request.visible_to(user):
                return f"There is no request PR-{parsed.request_id} that you can see."
            return cards.status_text(request)
        if isinstance(parsed, DelegateTo):
            until = datetime.combine(parsed.until + timedelta(days=1), time(0), tzinfo=UTC)
            moved = await store.set_delegation(user, parsed.delegate, until=until,
                                               at=clock.now())
            text = (f"Until the end of {parsed.until.isoformat()} (UTC), your approval steps go "
                    f"to <@{parsed.delegate}>; cards and the audit trail say they decide on "
                    "your behalf.")
            if moved:
                text += f" {len(moved)} pending step(s) were handed over now."
            return text + f" End it early with `{SLASH_COMMAND} delegate off`."
        if isinstance(parsed, DelegateOff):
            back = await store.clear_delegation(user, at=clock.now())
            if back is None:
                return "You have no delegation to end."
            return "Welcome back: your delegation has ended" + (
                f", and {len(back)} pending step(s) came back to you." if back else ".")
        if isinstance(parsed, CancelRequest):
            outcome = await store.act(parsed.request_id, Cancel(actor=user, at=clock.now()))
            if outcome is None:
                return f"There is no request PR-{parsed.request_id}."
            if outcome.refusal is not None:
                return outcome.refusal.message
            return f"Cancelled *{outcome.request.ref}*."
        raise AssertionError(f"unhandled command {parsed!r}")

    async def open_request_modal(client: AsyncWebClient, trigger_id: str,
                                 metadata: RequestModalMetadata) -> bool:
        """Open the request form; ``False`` (logged) when Slack would not open it."""
        view = cards.request_modal(currencies(), base_currency=runtime.policy.currency,
                                   metadata=metadata)
        try:
            await client.views_open(trigger_id=trigger_id, view=view)
        except Exception:
            log.exception("views.open failed")
            return False
        return True

    @app.view(CallbackId.PURCHASE_REQUEST.value)
    async def request_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = body["user"]["id"]
        form = parse_modal(view["state"]["values"], currencies())
        if isinstance(form, dict):
            await ack(response_action="errors", errors=form)
            return
        try:
            async with asyncio.timeout(CONFIRM_WITHIN):
                received = await store.receive(Submit(
                    requester=user, amount=form.amount, currency=form.currency,
                    vendor=form.vendor, purpose=form.purpose, cost_center=form.cost_center,
                    at=clock.now()),
                    policy=runtime.policy, source=runtime.policy_source, receipt=True)
        except TimeoutError:
            await ack(response_action="errors", errors={InputId.PURPOSE.value: UNCONFIRMED})
            return
        except RequestInvalid as exc:
            field = exc.field if exc.field in {i.value for i in InputId} else InputId.AMOUNT
            await ack(response_action="errors", errors={str(field): exc.message})
            return
        except Exception as exc:
            if not isinstance(exc, ApprovalsError):
                log.exception("submission failed")
            await ack(response_action="errors",
                      errors={InputId.PURPOSE.value: user_message(exc)})
            return
        await ack()
        runtime.received(received)

    # ------------------------------------------------------------------ decisions

    @app.action(ActionId.APPROVE.value)
    async def approve(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                      client: AsyncWebClient, respond: AsyncRespond) -> None:
        """Record the click, then acknowledge: the decision (and the card updates, or the
        clicker being told why not) follows in the background, and survives a crash."""
        user = body["user"]["id"]
        value = StepValue.parse(action.get("value"))
        failed: Exception | None = None
        if value is not None:
            try:
                async with asyncio.timeout(ANSWER_WITHIN):
                    await store.receive_click(value.request_id, value.step, actor=user,
                                              at=clock.now(),
                                              response_url=body.get("response_url"))
            except Exception as exc:
                failed = exc
        await ack()
        if value is None:
            await refuse_unknown(body, client, respond, action.get("value"), "approve")
        elif isinstance(failed, TimeoutError):  # its write may still land
            await tell(body, client, CLICK_UNCONFIRMED, respond)
        elif failed is not None:
            if not isinstance(failed, ApprovalsError):
                log.error("could not record an approve click: %s", failed)
            await tell(body, client, user_message(failed), respond)
        else:
            runtime.wake("delivery")  # the click is decided where the outbox is sent

    @app.action(ActionId.REJECT.value)
    async def reject(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                     client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        user = body["user"]["id"]
        value = await clicked_step(body, action, client, respond, "reject")
        if value is None:
            return
        try:
            refusal = await store.refuse_unless_decider(
                value.request_id, value.step, actor=user, action="reject", at=clock.now())
            request = None if refusal else await store.get(value.request_id)
        except Exception as exc:
            await tell(body, client, user_message(exc), respond)
            return
        if refusal is not None or request is None:
            await tell(body, client, refusal.message if refusal else "That request is gone.",
                       respond)
            return
        container = body.get("container") or {}
        metadata = RejectMetadata(request_id=value.request_id, step=value.step,
                                  channel=container.get("channel_id"),
                                  ts=container.get("message_ts"),
                                  response_url=body.get("response_url"))
        view = cards.reject_modal(request, request.steps[value.step], metadata)
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=view)
        except Exception:
            log.exception("views.open for a rejection failed")
            await tell(body, client, "I couldn't open the rejection form; click Reject again.",
                       respond)

    @app.view(CallbackId.REJECT_REASON.value)
    async def reject_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await step_text_submitted(
            ack, body, view, InputId.REASON.value, "Give a reason for the rejection.",
            lambda step, actor, text: Reject(step=step, actor=actor, reason=text,
                                             at=clock.now()))

    @app.action(ActionId.REQUEST_INFO.value)
    async def request_info(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        await open_step_modal(body, action, client, respond, ask=True)

    @app.action(ActionId.ANSWER_INFO.value)
    async def answer_info(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                          client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        await open_step_modal(body, action, client, respond, ask=False)

    async def open_step_modal(body: dict[str, Any], action: dict[str, Any],
                              client: AsyncWebClient, respond: AsyncRespond, *,
                              ask: bool) -> None:
        """Open the question (approver) or answer (requester) modal, if still fitting."""
        user = body["user"]["id"]
        value = await clicked_step(body, action, client, respond,
                                   "request_info" if ask else "answer_info")
        if value is None:
            return
        try:
            request = await store.get(value.request_id)
        except Exception as exc:
            await tell(body, client, user_message(exc), respond)
            return
        step = request.step(value.step) if request else None
        if request is None or step is None:
            await refuse_unknown(body, client, respond, action.get("value"),
                                 "request_info" if ask else "answer_info")
            return
        refusal = await store.refuse_unless_decider(
            value.request_id, value.step, actor=user, answering=not ask,
            action="request_info" if ask else "answer_info", at=clock.now())
        if refusal is not None:
            await tell(body, client, refusal.message, respond)
            return
        container = body.get("container") or {}
        metadata = RejectMetadata(request_id=value.request_id, step=value.step,
                                  channel=container.get("channel_id"),
                                  ts=container.get("message_ts"),
                                  response_url=body.get("response_url"))
        view = (cards.ask_modal(request, step, metadata) if ask
                else cards.answer_modal(request, step, metadata))
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=view)
        except Exception:
            log.exception("views.open failed")
            await tell(body, client, "I couldn't open the form; click the button again.",
                       respond)

    @app.view(CallbackId.REQUEST_INFO.value)
    async def question_submitted(ack: AsyncAck, body: dict[str, Any],
                                 view: dict[str, Any]) -> None:
        await step_text_submitted(
            ack, body, view, InputId.QUESTION.value, "Write your question first.",
            lambda step, actor, text: AskInfo(step=step, actor=actor, question=text,
                                              at=clock.now()))

    @app.view(CallbackId.INFO_ANSWER.value)
    async def answer_submitted(ack: AsyncAck, body: dict[str, Any],
                               view: dict[str, Any]) -> None:
        await step_text_submitted(
            ack, body, view, InputId.ANSWER.value, "Write your answer first.",
            lambda step, actor, text: AnswerInfo(step=step, actor=actor, answer=text,
                                                 at=clock.now()))

    async def step_text_submitted(
            ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], field: str,
            empty: str, command: Callable[[int, str, str], Reject | AskInfo | AnswerInfo]
    ) -> None:
        """A modal about one step (reject reason, question, answer) becomes one command."""
        user = body["user"]["id"]
        metadata = RejectMetadata.parse(view.get("private_metadata"))
        text = _input(view, field)
        if metadata is None:
            await ack(response_action="errors", errors={field: "This form is no longer valid."})
            return
        if not text.strip():
            await ack(response_action="errors", errors={field: empty})
            return
        try:
            async with asyncio.timeout(ANSWER_WITHIN):
                outcome = await store.act(metadata.request_id,
                                          command(metadata.step, user, text))
        except Exception as exc:
            await ack(response_action="errors", errors={field: user_message(exc)})
            return
        if outcome is None:
            await ack(response_action="errors", errors={field: "That request is gone."})
        elif outcome.refusal is not None:
            await ack(response_action="errors", errors={field: outcome.refusal.message})
        else:
            await ack()
        runtime.wake()

    async def clicked_step(body: dict[str, Any], action: dict[str, Any],
                           client: AsyncWebClient, respond: AsyncRespond,
                           name: str) -> StepValue | None:
        """The step a button names; a forged or garbled value is refused (and audited)."""
        value = StepValue.parse(action.get("value"))
        if value is None:
            await refuse_unknown(body, client, respond, action.get("value"), name)
        return value

    async def refuse_unknown(body: dict[str, Any], client: AsyncWebClient,
                             respond: AsyncRespond, raw: object, action: str) -> None:
        user = body["user"]["id"]
        text = UNKNOWN_STEP
        try:
            await store.record(request_id=None, event="click_refused", actor=user,
                               data={"action": action, "code": "unknown_step",
                                     "value": str(raw)[:200], "reason": text},
                               at=clock.now())
        except Exception:
            log.exception("could not audit a refused click")
        await tell(body, client, text, respond)

    @app.action(ActionId.OPEN_REQUEST_MODAL.value)
    async def new_request(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if not await open_request_modal(client, body["trigger_id"], RequestModalMetadata()):
            await tell(body, client, FORM_FAILED)

    # ------------------------------------------------------------------ events

    @app.event(EventType.APP_HOME_OPENED.value)
    async def home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab") not in (None, "home"):
            return
        event_id = body.get("event_id")
        if event_id and not await store.first_delivery(str(event_id), at=clock.now()):
            return  # a retry of a delivery already handled
        try:
            await runtime.deliverer.publish_home(event["user"])
        except Exception:
            log.exception("could not publish the App Home of %s", event.get("user"))

    @app.event(EventType.APP_UNINSTALLED.value)
    @app.event(EventType.TOKENS_REVOKED.value)
    async def uninstalled(event: dict[str, Any]) -> None:
        log.warning("Slack says the app lost access (%s); deliveries will fail until it is "
                    "reinstalled", event.get("type"))

    @app.error
    async def on_error(error: Exception) -> None:
        log.error("unhandled error in a Slack listener: %s", error, exc_info=error)

    pass_only_named(app)
    return app


def _input(view: dict[str, Any], field: str) -> str:
    """The text typed in input ``field`` (block_id == action_id) of a submitted modal."""
    value = (((view.get("state") or {}).get("values") or {}).get(field) or {}).get(
        field, {}).get("value")
    return value if isinstance(value, str) else ""


