"""Text for Slack's ``mrkdwn``: escaping untrusted input, clipping to limits, mentions, times.

Slack reads ``<...>`` in mrkdwn as a control sequence -- ``<!channel>`` pings a channel,
``<@U123>`` a person, ``<https://x|y>`` is a link -- and ``&`` starts an entity. Whatever a
person typed (a purpose, a vendor, a reason) or an advisor wrote therefore goes through
:func:`escape` before it reaches a mrkdwn field, and then through :func:`clip` so Slack never
refuses a message for being too long. Clipping comes *after* escaping (escaping lengthens
the text) and never cuts an entity or a ``<...>`` sequence in half; :func:`safe` does both.

``plain_text`` fields (button labels, headers, modal titles) are not parsed by Slack: they
are clipped, never escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import pairwise

ELLIPSIS = "…"
_LONGEST_ENTITY = len("&amp;")


def escape(text: str) -> str:
    """``text`` with ``&``, ``<`` and ``>`` turned into entities: no pings, no links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when cut.

    The cut never splits an entity (``&amp;``) or a ``<...>`` sequence (a mention, a date):
    it moves back to before it.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    amp = cut.rfind("&")
    if amp != -1 and len(cut) - amp < _LONGEST_ENTITY and ";" not in cut[amp:]:
        cut = cut[:amp]
    opening = cut.rfind("<")
    if opening != -1 and ">" not in cut[opening:]:
        cut = cut[:opening]
    return cut.rstrip() + ELLIPSIS


def safe(text: str, limit: int) -> str:
    """Untrusted ``text`` made ready for a mrkdwn field of at most ``limit`` characters."""
    return clip(escape(text), limit)


def quote(text: str) -> str:
    """``text`` as a mrkdwn block quote: every line starts with ``>``."""
    return "\n".join(f">{line}" for line in (text.splitlines() or [""]))


def user(uid: str) -> str:
    """A mention of a known user ID, ``<@U123>``.

    IDs come from the policy or from Slack, but a ``|`` would turn the mention into a label
    and ``<>&`` would break out of it, so they are removed or escaped all the same.
    """
    return f"<@{escape(uid.replace('|', ''))}>"


def users(uids: Sequence[str], *, conjunction: str = "or") -> str:
    """``<@A>``, ``<@A> or <@B>``, ``<@A>, <@B> or <@C>``."""
    mentions = [user(u) for u in uids]
    if len(mentions) <= 1:
        return "".join(mentions)
    return f"{', '.join(mentions[:-1])} {conjunction} {mentions[-1]}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def plain_when(moment: datetime) -> str:
    """``2024-05-01 14:03 UTC``: a time for plain text and for fallbacks."""
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


@lru_cache(maxsize=1024)
def when(moment: datetime) -> str:
    """A time Slack shows in each reader's own time zone, with a UTC fallback (cached: a
    card shows its request's times, the same on every copy and every update)."""
    stamp = int(_utc(moment).timestamp())
    return f"<!date^{stamp}^{{date_short_pretty}} at {{time}}|{plain_when(moment)}>"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def duration_words(seconds: int) -> str:
    """``45 seconds``, ``4 hours``, ``4 hours 30 minutes``, ``2 days``, ``1 day 6 hours``."""
    seconds = max(0, int(seconds))
    units = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    for (name, size), (smaller, smaller_size) in pairwise(units):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return _count(seconds // size, name) + (f" {_count(rest, smaller)}" if rest else "")
    return _count(seconds, "second")


__all__ = ["ELLIPSIS", "clip", "duration_words", "escape", "plain_when", "quote", "safe", "user",
           "users", "when"]
