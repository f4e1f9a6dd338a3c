"""Durations of the policy file: ``90s``, ``15m``, ``4h``, ``2d``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Parse ``<positive integer><s|m|h|d>``; raise ``ValueError`` with a clear message."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"'{text}' is not a duration: use a whole number and s, m, h or d (90s, 15m, 4h, 2d)"
        )
    count = int(match.group(1))
    if count <= 0:
        raise ValueError(f"'{text}' must be longer than zero")
    return timedelta(**{_UNITS[match.group(2)]: count})


def format_duration(value: timedelta) -> str:
    """The shortest exact form: ``2d``, ``4h``, ``90s``, or ``1d 2h`` when mixed."""
    seconds = int(value.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts) or "0s"
