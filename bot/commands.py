"""What people type: ``/purchase`` text and the request modal, parsed into typed commands.

``/purchase`` forms (see ``help_text``)::

    /purchase                                  -> OpenModal
    /purchase help                             -> ShowHelp
    /purchase status PR-42                     -> ShowStatus(request_id=42)
    /purchase list                             -> ListRequests
    /purchase cancel PR-42                     -> CancelRequest(request_id=42)
    /purchase <amount> [<CUR>] <purpose>       -> CreateRequest(amount, currency, purpose)

An amount follows :func:`flows.money.parse_amount`; a leading symbol (``$``, ``€``...) sets
its currency unless a code follows; three capital letters right after the amount are a
currency code. Wrong input raises :class:`flows.errors.RequestInvalid` naming the field and
what is wrong. :func:`parse_modal` applies the same rules per field of the modal and returns
the errors in the shape ``response_action: errors`` wants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from bot.ids import SLASH_COMMAND, InputId
from flows.errors import RequestInvalid
from flows.model import parse_ref
from flows.money import SYMBOLS, is_currency, parse_amount


@dataclass(frozen=True, slots=True)
class OpenModal:
    """``/purchase`` alone: open the request modal."""


@dataclass(frozen=True, slots=True)
class ShowHelp:
    """``/purchase help``."""


@dataclass(frozen=True, slots=True)
class ShowStatus:
    """``/purchase status PR-42``."""

    request_id: int


@dataclass(frozen=True, slots=True)
class ListRequests:
    """``/purchase list``: the user's requests and what waits for them."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """``/purchase cancel PR-42``."""

    request_id: int


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """``/purchase <amount> [<CUR>] <purpose>``; ``currency`` is ``None`` when not given
    and no accepted currencies were passed to :func:`parse_command` (the base currency)."""

    amount: Decimal
    currency: str | None
    purpose: str


@dataclass(frozen=True, slots=True)
class DelegateTo:
    """``/purchase delegate @user until 2026-12-24``: away until the end of that day (UTC)."""

    delegate: str
    until: date


@dataclass(frozen=True, slots=True)
class DelegateOff:
    """``/purchase delegate off``: back; steps handed over come back."""


Command = (OpenModal | ShowHelp | ShowStatus | ListRequests | CancelRequest | CreateRequest
           | DelegateTo | DelegateOff)


@dataclass(frozen=True, slots=True)
class RequestForm:
    """A valid submission of the request modal."""

    amount: Decimal
    currency: str
    vendor: str
    purpose: str
    cost_center: str | None


_SYMBOL = "[" + "".join(re.escape(s) for s in SYMBOLS) + "]"
_CREATE = re.compile(
    rf"^(?P<amount>{_SYMBOL}?\s*[^\s]+)(?:\s+(?P<code>[A-Z]{{3}})(?=\s|$))?\s*(?P<purpose>.*)$",
    re.DOTALL)
_NOT_FINITE = re.compile(r"^[+-]?(?:nan|inf|infinity)$", re.IGNORECASE)
_EXAMPLE = f"{SLASH_COMMAND} 1,200 USD Laptops for new hires"


def help_text() -> str:
    """The answer to ``/purchase help`` (mrkdwn: ``<`` and ``>`` written as entities)."""
    c = SLASH_COMMAND
    return "\n".join([
        "*Purchase approvals*",
        f"• `{c}` opens a form for a new request (amount, currency, vendor, purpose, "
        "cost center).",
        f"• `{c} &lt;amount&gt; [&lt;CUR&gt;] &lt;purpose&gt;` requests at once, "
        f"e.g. `{_EXAMPLE}`. "
        "The currency is optional (the default is the policy's), a symbol works too: "
        f"`{c} €950 Standing desk`.",
        f"• `{c} status PR-42` shows where a request stands and who it waits for.",
        f"• `{c} list` lists your requests and what waits for your decision.",
        f"• `{c} cancel PR-42` cancels your request while it is pending.",
        f"• `{c} delegate @someone until 2026-12-24` sends your approvals to someone else "
        f"while you are away (until the end of that day, UTC); `{c} delegate off` ends it.",
        f"• `{c} help` shows this.",
        "Approvers get a card by DM with *Approve* and *Reject* buttons; "
        "the App Home shows everything in one place.",
    ])


def _unescape(text: str) -> str:
    # Slack sends ``&``, ``<`` and ``>`` of a command's text as entities; the cards escape
    # what they show, so the text is kept as the person typed it.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _ref(word: str, args: str) -> int:
    parts = args.split()
    if not parts:
        raise RequestInvalid("request", f"say which request: `{SLASH_COMMAND} {word} PR-42`")
    if len(parts) > 1:
        raise RequestInvalid(
            "request", f"`{word}` takes one request ID, e.g. `{SLASH_COMMAND} {word} PR-42`")
    request_id = parse_ref(parts[0])
    if request_id is None:
        raise RequestInvalid(
            "request", f"'{parts[0][:40]}' is not a request ID; they look like PR-42")
    return request_id


def _currency(code: str, currencies: Sequence[str] | None) -> str:
    if not is_currency(code):
        raise RequestInvalid(
            "currency", f"{code} is not a currency code; use one such as USD or EUR right "
                        f"after the amount, e.g. `{_EXAMPLE}`")
    if currencies and code not in currencies:
        raise RequestInvalid(
            "currency", f"{code} is not accepted here (accepted: {', '.join(currencies)})")
    return code


def parse_command(text: str, *, currencies: Sequence[str] | None = None) -> Command:
    """Parse the text of ``/purchase``.

    ``currencies`` are the accepted codes, the base currency first (the policy's
    ``accepted_currencies``): with them an unaccepted currency is an error and a request
    without one gets the base currency. Raises :class:`RequestInvalid` for wrong input.
    """
    raw = text.strip()
    if raw.lower().startswith("delegate"):
        return _delegate(_unescape(raw[len("delegate"):]))
    text = _unescape(plain_mentions(raw)).strip()
    if not text:
        return OpenModal()
    word, *rest = text.split(maxsplit=1)
    args = rest[0] if rest else ""
    keyword = word.lower()
    if keyword == "help":
        return ShowHelp()
    if keyword == "list":
        if args.strip():
            raise RequestInvalid("command", f"`list` takes nothing more: `{SLASH_COMMAND} list`")
        return ListRequests()
    if keyword == "status":
        return ShowStatus(_ref(keyword, args))
    if keyword == "cancel":
        return CancelRequest(_ref(keyword, args))
    if keyword == "delegate":
        return _delegate(args)
    if not _looks_like_amount(word):
        raise RequestInvalid(
            "command", f"I don't know '{word[:40]}'. Start with an amount, e.g. `{_EXAMPLE}`, "
                       f"or see `{SLASH_COMMAND} help`")
    return _create(text, currencies)


_MENTION = re.compile(r"^<@([A-Za-z0-9_]+)(?:\|[^>]*)?>$")
_DELEGATE_USAGE = f"`{SLASH_COMMAND} delegate @someone until 2026-12-24` or " \
                  f"`{SLASH_COMMAND} delegate off`"


def _delegate(args: str) -> DelegateTo | DelegateOff:
    words = args.split()
    if [w.lower() for w in words] == ["off"]:
        return DelegateOff()
    if len(words) != 3 or words[1].lower() != "until":
        raise RequestInvalid("command", f"use {_DELEGATE_USAGE}")
    mention = _MENTION.match(words[0])
    if mention is None:
        raise RequestInvalid("delegate", f"'{words[0][:40]}' is not a person: mention them "
                                         f"with @, as in {_DELEGATE_USAGE}")
    try:
        until = date.fromisoformat(words[2])
    except ValueError:
        raise RequestInvalid("until", f"'{words[2][:20]}' is not a date: write it as "
                                      "2026-12-24") from None
    return DelegateTo(delegate=mention.group(1), until=until)


def plain_mentions(text: str) -> str:
    """Slack's escaped mentions and links (``<@U1|bob>``, ``<#C1|general>``, ``<url|x>``)
    as a person typed them, so a purpose keeps its words and pings nobody."""
    text = re.sub(r"<@[A-Za-z0-9_]+\|([^>]*)>", r"@\1", text)
    text = re.sub(r"<#[A-Za-z0-9_]+\|([^>]*)>", r"#\1", text)
    return re.sub(r"<(https?://[^|>]+)(?:\|[^>]*)?>", r"\1", text)


def _looks_like_amount(word: str) -> bool:
    """Whether ``word`` is meant as an amount (even a wrong one) rather than a subcommand."""
    return (word[:1] in SYMBOLS or any(ch.isdigit() for ch in word)
            or _NOT_FINITE.match(word) is not None)


def _create(text: str, currencies: Sequence[str] | None) -> CreateRequest:
    match = _CREATE.match(text)
    if match is None:  # pragma: no cover - the pattern matches any non-empty text
        raise RequestInvalid("amount", f"start with an amount, e.g. `{_EXAMPLE}`")
    raw_amount = match["amount"]
    amount = parse_amount(raw_amount)
    code = match["code"]
    symbol = raw_amount[:1] if raw_amount[:1] in SYMBOLS else None
    currency: str | None
    if code is not None:
        currency = _currency(code, currencies)
    elif symbol is not None:
        currency = _currency(SYMBOLS[symbol], currencies)
    else:
        currency = currencies[0] if currencies else None
    purpose = match["purpose"].strip()
    if not purpose:
        raise RequestInvalid(
            "purpose", f"say what you are buying and why after the amount, e.g. `{_EXAMPLE}`")
    return CreateRequest(amount=amount, currency=currency, purpose=purpose)


# --------------------------------------------------------------------------- the modal


def _value(values: Mapping[str, Any], field: InputId) -> str:
    """The text or selected option of input ``field`` (block_id == action_id), or ``""``."""
    block = values.get(field.value)
    action = block.get(field.value) if isinstance(block, Mapping) else None
    if not isinstance(action, Mapping):
        return ""
    raw = action.get("value")
    selected = action.get("selected_option")
    if isinstance(selected, Mapping):
        raw = selected.get("value")
    return raw.strip() if isinstance(raw, str) else ""


def parse_modal(values: Mapping[str, Any],
                currencies: Sequence[str]) -> RequestForm | dict[str, str]:
    """A valid :class:`RequestForm` from ``view.state.values``, or the errors by block_id.

    The errors dict is what ``ack(response_action="errors", errors=...)`` takes.
    """
    errors: dict[str, str] = {}
    currency = _value(values, InputId.CURRENCY)
    try:
        currency = _currency(currency, currencies) if currency else ""
    except RequestInvalid as exc:
        errors[InputId.CURRENCY.value] = exc.message
    if not currency:
        errors.setdefault(InputId.CURRENCY.value, "choose a currency")

    raw_amount = _value(values, InputId.AMOUNT)
    amount = Decimal(0)
    try:
        amount = parse_amount(raw_amount)
        symbol = raw_amount[:1]
        if symbol in SYMBOLS and currency and SYMBOLS[symbol] != currency:
            errors[InputId.AMOUNT.value] = (f"{symbol} means {SYMBOLS[symbol]}, but the currency "
                                      f"is {currency}: leave the symbol out")
    except RequestInvalid as exc:
        errors[InputId.AMOUNT.value] = exc.message

    vendor = _value(values, InputId.VENDOR)
    if not vendor:
        errors[InputId.VENDOR.value] = "enter who you are buying from"
    purpose = _value(values, InputId.PURPOSE)
    if not purpose:
        errors[InputId.PURPOSE.value] = "say what is bought and why"
    cost_center = _value(values, InputId.COST_CENTER) or None
    if errors:
        return errors
    return RequestForm(amount=amount, currency=currency, vendor=vendor, purpose=purpose,
                       cost_center=cost_center)


__all__ = [
    "CancelRequest",
    "Command",
    "CreateRequest",
    "DelegateOff",
    "DelegateTo",
    "ListRequests",
    "OpenModal",
    "RequestForm",
    "ShowHelp",
    "ShowStatus",
    "help_text",
    "parse_command",
    "parse_modal",
]
