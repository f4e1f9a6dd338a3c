"""Money: what people may type as an amount, conversion to the cent, showing amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flows.errors import RequestInvalid
from flows.money import convert, format_money, parse_amount

RATES = {"EUR": Decimal("1.08"), "GBP": Decimal("1.27")}


@pytest.mark.parametrize(("text", "expected"), [
    ("$1,200", "1200"),
    ("1200.50", "1200.50"),
    ("1,200", "1200"),
    ("1,200.50", "1200.50"),
    ("€5", "5"),
    ("£3.5", "3.5"),
    ("0.01", "0.01"),
    (" 42 ", "42"),
    ("1,000,000,000,000", "1000000000000"),
])
def test_parse_amount_accepts(text: str, expected: str) -> None:
    assert parse_amount(text) == Decimal(expected)


@pytest.mark.parametrize(("text", "words"), [
    ("NaN", "is not an amount"),
    ("1e309", "is not an amount"),
    ("-0", "is not an amount"),
    ("-5", "is not an amount"),
    ("0", "more than zero"),
    ("0.00", "more than zero"),
    ("12,34,5", "is not an amount"),
    ("1.234", "is not an amount"),
    ("1,2000", "is not an amount"),
    ("1.", "is not an amount"),
    ("inf", "is not an amount"),
    ("", "enter an amount"),
    ("   ", "enter an amount"),
    ("$", "enter an amount"),
    ("1000000000000.01", "at most 1,000,000,000,000"),
])
def test_parse_amount_refuses(text: str, words: str) -> None:
    with pytest.raises(RequestInvalid) as caught:
        parse_amount(text)
    assert caught.value.field == "amount"
    assert words in caught.value.message


def test_parse_amount_names_the_field_it_is_told() -> None:
    with pytest.raises(RequestInvalid) as caught:
        parse_amount("x", field="total")
    assert str(caught.value).startswith("total: ")


@pytest.mark.parametrize(("amount", "currency", "text"), [
    ("120000", "USD", "$120,000.00"),
    ("25000", "EUR", "€25,000.00"),
    ("9000.5", "USD", "$9,000.50"),
    ("1000000000000", "USD", "$1,000,000,000,000.00"),
    ("0.01", "GBP", "£0.01"),
])
def test_format_money_shows_the_amount_in_full(amount: str, currency: str, text: str) -> None:
    assert format_money(Decimal(amount), currency) == text


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("9259.26", "EUR", "10000.00"),  # 10,000.0008
    ("25000", "EUR", "27000.00"),
    ("0.01", "EUR", "0.01"),  # 0.0108
    ("0.005", "USD", "0.01"),  # half up
    ("1.115", "GBP", "1.42"),  # 1.41605
    ("12", "USD", "12.00"),
])
def test_convert_rounds_to_the_cent(amount: str, currency: str, expected: str) -> None:
    converted = convert(Decimal(amount), currency, base="USD", rates=RATES)
    assert converted == Decimal(expected)
    assert converted.as_tuple().exponent == -2


def test_convert_refuses_a_currency_without_a_rate() -> None:
    with pytest.raises(RequestInvalid) as caught:
        convert(Decimal(1), "CHF", base="USD", rates=RATES)
    assert caught.value.field == "currency"
    assert "CHF is not accepted here (accepted: EUR, GBP, USD)" in caught.value.message
