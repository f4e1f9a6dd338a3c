"""``/purchase`` text and the request modal, parsed by ``bot.commands``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from bot.commands import (
    CancelRequest,
    CreateRequest,
    DelegateOff,
    DelegateTo,
    ListRequests,
    OpenModal,
    RequestForm,
    ShowHelp,
    ShowStatus,
    help_text,
    parse_command,
    parse_modal,
)
from bot.standin.signing import input_values
from flows.errors import RequestInvalid

ACCEPTED = ("USD", "EUR", "GBP")  # the example policy's, base currency first


@pytest.mark.parametrize(("text", "expected"), [
    ("", OpenModal()),
    ("   ", OpenModal()),
    ("help", ShowHelp()),
    ("HELP", ShowHelp()),
    ("list", ListRequests()),
    ("status PR-42", ShowStatus(42)),
    ("status pr-42", ShowStatus(42)),
    ("status 42", ShowStatus(42)),
    ("cancel PR-7", CancelRequest(7)),
    ("$1,200 USD Laptops for new hires",
     CreateRequest(Decimal("1200"), "USD", "Laptops for new hires")),
    ("1200.50 Chairs", CreateRequest(Decimal("1200.50"), "USD", "Chairs")),
    ("1,200 EUR Desks", CreateRequest(Decimal("1200"), "EUR", "Desks")),
    ("€5 Coffee beans", CreateRequest(Decimal("5"), "EUR", "Coffee beans")),
    ("£19.99 Book", CreateRequest(Decimal("19.99"), "GBP", "Book")),
    ("$5 EUR Stickers", CreateRequest(Decimal("5"), "EUR", "Stickers")),  # the code wins
    ("$ 1,200 Laptops", CreateRequest(Decimal("1200"), "USD", "Laptops")),
    ("1,000,000,000,000 USD Everything", CreateRequest(Decimal("1000000000000"), "USD",
                                                       "Everything")),
    ("1200 USDC cables", CreateRequest(Decimal("1200"), "USD", "USDC cables")),
    ("300 Two lines\nof purpose", CreateRequest(Decimal("300"), "USD",
                                                "Two lines\nof purpose")),
    # Slack sends & < > of a command's text as entities; the purpose keeps what was typed
    ("5 &lt;!channel&gt; R&amp;D", CreateRequest(Decimal("5"), "USD", "<!channel> R&D")),
])
def test_valid_commands(text: str, expected: object) -> None:
    assert parse_command(text, currencies=ACCEPTED) == expected


def test_without_accepted_currencies_the_currency_is_left_to_the_caller() -> None:
    assert parse_command("1200 Chairs") == CreateRequest(Decimal("1200"), None, "Chairs")
    assert parse_command("1200 CHF Chairs") == CreateRequest(Decimal("1200"), "CHF", "Chairs")


@pytest.mark.parametrize(("text", "field", "says"), [
    ("NaN Laptops", "amount", "'NaN' is not an amount"),
    ("inf Laptops", "amount", "'inf' is not an amount"),
    ("1e309 Laptops", "amount", "'1e309' is not an amount"),
    ("-0 Laptops", "amount", "'-0' is not an amount"),
    ("-5 Laptops", "amount", "'-5' is not an amount"),
    ("0 Laptops", "amount", "more than zero"),
    ("0.00 Laptops", "amount", "more than zero"),
    ("12,34,5 Laptops", "amount", "'12,34,5' is not an amount"),
    ("1.234 Laptops", "amount", "at most two decimals"),
    ("1,000,000,000,000.01 USD Everything", "amount", "at most 1,000,000,000,000"),
    ("$ Laptops", "amount", "is not an amount"),
    ("1200 ABC Laptops", "currency", "ABC is not a currency code"),
    ("1200 CHF Laptops", "currency", "CHF is not accepted here (accepted: USD, EUR, GBP)"),
    ("¥100 Noodles", "currency", "JPY is not accepted here"),
    ("1200", "purpose", "say what you are buying"),
    ("1200 USD", "purpose", "say what you are buying"),
    ("1200 USD   ", "purpose", "say what you are buying"),
    ("status", "request", "say which request"),
    ("status PR-x", "request", "'PR-x' is not a request ID"),
    ("status PR-1 PR-2", "request", "takes one request ID"),
    ("cancel", "request", "say which request"),
    ("list everything", "command", "`list` takes nothing more"),
    ("delegate @bob", "command", "delegate @someone until"),
    ("delegate <@U_BOB> until 24.12.2026", "until", "is not a date"),
    ("delegate bob until 2026-12-24", "delegate", "is not a person"),
    ("Laptops for new hires", "command", "I don't know 'Laptops'"),
])
def test_invalid_commands_say_what_is_wrong(text: str, field: str, says: str) -> None:
    with pytest.raises(RequestInvalid) as caught:
        parse_command(text, currencies=ACCEPTED)
    assert caught.value.field == field
    assert says in caught.value.message


def test_help_lists_every_subcommand() -> None:
    text = help_text()
    assert "<" not in text and ">" not in text  # mrkdwn: placeholders as entities
    for form in ("`/purchase`", "`/purchase &lt;amount&gt; [&lt;CUR&gt;] &lt;purpose&gt;`",
                 "`/purchase status PR-42`", "`/purchase list`", "`/purchase cancel PR-42`",
                 "`/purchase help`", "/purchase 1,200 USD Laptops for new hires"):
        assert form in text, form


# --------------------------------------------------------------------------- the modal


def values(amount: str | None = "1,200.50", currency: str | None = "EUR",
           vendor: str | None = "Acme GmbH", purpose: str | None = "Desks for the team",
           cost_center: str | None = None) -> dict[str, Any]:
    """``view.state.values`` as Slack sends it for the request modal."""
    return input_values({"amount": amount, "vendor": vendor, "purpose": purpose,
                         "cost_center": cost_center}, {"currency": currency})


def test_valid_modal() -> None:
    assert parse_modal(values(), ACCEPTED) == RequestForm(
        amount=Decimal("1200.50"), currency="EUR", vendor="Acme GmbH",
        purpose="Desks for the team", cost_center=None)
    form = parse_modal(values(amount=" €99 ", cost_center=" ENG-001 "), ACCEPTED)
    assert isinstance(form, RequestForm)
    assert form.amount == Decimal("99") and form.cost_center == "ENG-001"


@pytest.mark.parametrize(("state", "errors"), [
    (values(amount="NaN"), {"amount"}),
    (values(amount="1e309"), {"amount"}),
    (values(amount="-0"), {"amount"}),
    (values(amount="0"), {"amount"}),
    (values(amount="12,34,5"), {"amount"}),
    (values(amount=None), {"amount"}),
    (values(amount="$5"), {"amount"}),  # $ is USD, the select says EUR
    (values(currency="ABC"), {"currency"}),
    (values(currency="CHF"), {"currency"}),
    (values(currency=None), {"currency"}),
    (values(purpose="   "), {"purpose"}),
    (values(purpose=None), {"purpose"}),
    (values(vendor=" "), {"vendor"}),
    (values(amount="x", currency="ABC", purpose=""), {"amount", "currency", "purpose"}),
    ({}, {"amount", "currency", "vendor", "purpose"}),
    ({"amount": "garbage", "currency": {"currency": 5}}, {"amount", "currency", "vendor",
                                                          "purpose"}),
])
def test_invalid_modal_names_each_field(state: dict[str, Any], errors: set[str]) -> None:
    result = parse_modal(state, ACCEPTED)
    assert isinstance(result, dict)
    assert set(result) == errors
    assert all(isinstance(message, str) and message for message in result.values())


def test_delegate_commands() -> None:
    assert parse_command("delegate <@U_BOB|bob> until 2026-12-24") == DelegateTo(
        delegate="U_BOB", until=date(2026, 12, 24))
    assert parse_command("delegate <@U_BOB> until 2026-12-24") == DelegateTo(
        delegate="U_BOB", until=date(2026, 12, 24))
    assert parse_command("delegate OFF") == DelegateOff()


def test_escaped_mentions_in_a_purpose_become_plain_words() -> None:
    parsed = parse_command("$5 Pens for <@U_X|carol> and <#C1|general>, see <https://x.test|x>")
    assert isinstance(parsed, CreateRequest)
    assert parsed.purpose == "Pens for @carol and #general, see https://x.test"
