"""The audit trail's hash chain: canonical JSON, SHA-256, and verification.

Each entry's ``hash`` is ``sha256(prev_hash + canonical_json(entry))`` where the entry holds
its sequence number, request, event, actor, time and data. Changing, removing or
reordering any entry breaks the chain at that entry; removing entries at the end is caught
by comparing with the chain's recorded head. Storage appends; this module only computes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

GENESIS = "0" * 64

EVENTS = frozenset({
    "submitted", "annotated", "auto_approved", "card_sent", "reminded", "escalated",
    "delegated", "info_requested", "info_answered", "approved", "rejected", "cancelled",
    "click_refused",
})


def _default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable in an audit entry: {type(value).__name__}")


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: one byte string per meaning."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default, allow_nan=False)


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """The data as it will read back from JSON (tuples as lists, decimals as text)."""
    result: dict[str, Any] = json.loads(canonical_json(data))
    return result


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds: ``2026-11-25T04:16:27.000000+00:00``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    request: str | None  # "PR-42", or None for an installation-wide event
    event: str
    actor: str
    at: str  # format_time()
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "request": self.request, "event": self.event,
                "actor": self.actor, "at": self.at, "data": self.data}


def digest(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def make_entry(*, seq: int, prev_hash: str, request: str | None, event: str, actor: str,
               at: datetime, data: dict[str, Any]) -> Entry:
    stamp, clean = format_time(at), normalise(data)
    body = {"seq": seq, "request": request, "event": event, "actor": actor,
            "at": stamp, "data": clean}
    return Entry(seq=seq, request=request, event=event, actor=actor, at=stamp,
                 data=clean, prev_hash=prev_hash, hash=digest(prev_hash, body))


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain first fails, and how."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.problem}"


def verify(entries: Iterable[Entry], *, head: tuple[int, str] | None) -> Break | None:
    """Walk ``entries`` in sequence order; return the first break, or ``None``.

    ``head`` is the last (seq, hash) the trail recorded, which catches entries removed from
    the end; ``None`` means the trail recorded nothing.
    """
    prev_hash, expected_seq = GENESIS, 1
    for entry in entries:
        if entry.seq != expected_seq:
            missing = "removed" if entry.seq > expected_seq else "out of order"
            return Break(expected_seq if entry.seq > expected_seq else entry.seq,
                         f"entry {expected_seq} is {missing} (found {entry.seq} instead)")
        if entry.prev_hash != prev_hash:
            return Break(entry.seq, "does not follow the entry before it "
                                    "(an earlier entry was changed, removed or reordered)")
        if digest(prev_hash, entry.body()) != entry.hash:
            return Break(entry.seq, "its content was changed after it was written")
        prev_hash, expected_seq = entry.hash, expected_seq + 1
    last = expected_seq - 1
    if head is None:
        if last:
            return Break(last, "the trail's head record is missing")
        return None
    head_seq, head_hash = head
    if head_seq != last:
        return Break(last + 1, f"entries {last + 1} to {head_seq} were removed from the end"
                     if head_seq > last else "the trail's head record was changed")
    if head_hash != prev_hash:
        return Break(last, "does not match the trail's recorded head")
    return None
