"""Money: parsing what people type, converting with the policy's rates, showing amounts.

Amounts are :class:`~decimal.Decimal` everywhere, never ``float``. Converted amounts are
rounded to the cent (half up) before any comparison, so a route never depends on binary
floating point.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import format_currency, list_currencies

from flows.errors import RequestInvalid

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1000000000000")

# Symbols people type in front of an amount, and the currency each one means.
SYMBOLS: Mapping[str, str] = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}

_AMOUNT = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?$")


@lru_cache(maxsize=1)
def iso_currencies() -> frozenset[str]:
    """Every ISO 4217 code the CLDR data knows (``USD``, ``EUR``, ...)."""
    # X-codes are metals, test and "no currency" codes, never a price's currency
    return frozenset(code for code in list_currencies()
                     if len(code) == 3 and code.isupper() and not code.startswith("X"))


def is_currency(code: str) -> bool:
    return code in iso_currencies()


def parse_amount(text: str, *, field: str = "amount") -> Decimal:
    """Parse a positive amount as people type it: ``1200``, ``1,200.50``, ``$1,200``.

    Refuses anything that is not a positive, finite number of at most two decimals with
    well-formed thousands separators, or that exceeds 1,000,000,000,000.
    """
    raw = text.strip()
    if raw[:1] in SYMBOLS:
        raw = raw[1:].strip()
    if not raw:
        raise RequestInvalid(field, "enter an amount, for example 1,200.50")
    if not _AMOUNT.match(raw):
        raise RequestInvalid(
            field,
            f"'{text.strip()[:40]}' is not an amount: use digits, an optional thousands "
            "separator (1,200) and at most two decimals (1,200.50)",
        )
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only digits
        raise RequestInvalid(field, f"'{raw}' is not a number") from exc
    if value <= 0:
        raise RequestInvalid(field, "the amount must be more than zero")
    if value > MAX_AMOUNT:
        raise RequestInvalid(field, "the amount must be at most 1,000,000,000,000")
    return value


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def convert(amount: Decimal, currency: str, *, base: str,
            rates: Mapping[str, Decimal]) -> Decimal:
    """``amount`` of ``currency`` in the base currency, rounded to the cent."""
    if currency == base:
        return to_cents(amount)
    rate = rates.get(currency)
    if rate is None:
        known = ", ".join(sorted({base, *rates}))
        raise RequestInvalid("currency", f"{currency} is not accepted here (accepted: {known})")
    return to_cents(amount * rate)


@lru_cache(maxsize=4096)
def format_money(amount: Decimal, currency: str) -> str:
    """``$120,000.00``, ``€25,000.00``, ``CHF 1,200.00``: in full, never abbreviated.

    Babel's formatting costs tens of microseconds, and amounts vary too much for the cache
    to catch them all; so an amount that needs no rounding is written into the currency's
    template (read from Babel once, and checked against it), anything else by Babel. (The
    cache answers equal amounts alike: -0 as 0, whichever was asked for first.)"""
    template = _template(currency)
    if template is not None and template.fits(amount):
        return template.format(amount)
    return _format_currency(amount, currency)


def _format_currency(amount: Decimal, currency: str) -> str:
    text: str = format_currency(amount, currency, locale="en_US", format_type="standard")
    return text.replace("\xa0", " ")


_FAST_BELOW = Decimal(10) ** 15  # well above any amount: MAX_AMOUNT at any sane rate


@dataclass(frozen=True, slots=True)
class _Template:
    """How Babel writes a currency's amounts: ``prefix`` + ``1,234.50`` + ``suffix``."""

    prefix: str
    suffix: str
    digits: int  # decimals shown

    def fits(self, amount: Decimal) -> bool:
        """Amounts Babel writes as they are: non-negative, finite, no rounding needed."""
        if type(amount) is not Decimal or not amount.is_finite() or amount.is_signed():
            return False
        exponent = amount.as_tuple().exponent
        return isinstance(exponent, int) and exponent >= -self.digits and amount < _FAST_BELOW

    def format(self, amount: Decimal) -> str:
        return f"{self.prefix}{amount:,.{self.digits}f}{self.suffix}"


_PROBES = ("0", "7", "1234567", "1E+3", "9876543210123", "100000.1", "0.05", "42.42")


@lru_cache(maxsize=256)
def _template(currency: str) -> _Template | None:
    """The currency's template, if Babel writes every probe amount exactly so."""
    sample = _format_currency(Decimal(1234567), currency)
    prefix, found, tail = sample.partition("1,234,567")
    if not found:
        return None
    digits = len(tail) - 1 - len(tail[1:].lstrip("0")) if tail.startswith(".") else 0
    suffix = tail[1 + digits:] if digits else tail
    template = _Template(prefix, suffix, digits)
    for probe in map(Decimal, _PROBES):
        if template.fits(probe) and template.format(probe) != _format_currency(probe, currency):
            return None
    return template
