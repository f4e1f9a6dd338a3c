"""The audit trail's hash chain: canonical JSON, SHA-256, and verification.

Each entry's ``hash`` is ``sha256(prev_hash + canonical_json(entry))`` where the entry holds
its sequence number, request, event, actor, time and data. Changing, removing or
reordering any entry breaks the chain at that entry; removing entries at the end is caught
by comparing with the chain's recorded head. Storage appends; this module only computes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
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
    return _encode(value)


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """The data as it will read back from JSON (tuples as lists, decimals as text)."""
    result: dict[str, Any] = json.loads(_encode(data))
    return result


# ``json.dumps`` with these options builds an encoder per call, and the encoder builds
# json's C encoder per call: both are built once here. The C one runs without a check for
# circular data (its check keeps state between calls); circular data overflows the stack,
# and the checking encoder then says what ``json.dumps`` says.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=_default, allow_nan=False)
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_QUICK = None if _C_ENCODER is None else _C_ENCODER(
    None, _default, json.encoder.encode_basestring, None, ":", ",", True, False, False)


def _encode(value: object) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    default=_default, allow_nan=False)``."""
    if _QUICK is None:  # pragma: no cover - CPython has the C encoder
        return _CANONICAL.encode(value)
    try:
        return "".join(_QUICK(value, 0))
    except RecursionError:
        return _CANONICAL.encode(value)


class _Unsorted(Exception):
    """Raised while reading back an object whose keys were not written in text order."""


def _in_text_order(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object read back, as json.loads builds it, if its keys were written in ascending
    text order (sorted again as text, they stay where they are); else :class:`_Unsorted`."""
    result = dict(pairs)
    if len(result) != len(pairs) or list(result) != sorted(result):
        raise _Unsorted
    return result


# json.loads without its checks, for text the encoder above wrote (one value, no BOM), and
# one that also says whether that text is the canonical JSON of what it reads back
_decode: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]
_decode_sorted: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder(object_pairs_hook=_in_text_order).scan_once)  # type: ignore[attr-defined]


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds: ``2026-11-25T04:16:27.000000+00:00``."""
    if value.tzinfo is UTC and type(value) is datetime:
        return value.isoformat(timespec="microseconds")  # astimezone(UTC) returns it as is
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
    # the data's canonical JSON when this entry was just made ("" when read back): what
    # storage keeps, without writing the data out a second time
    data_json: str = ""

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "request": self.request, "event": self.event,
                "actor": self.actor, "at": self.at, "data": self.data}


def digest(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def make_entry(*, seq: int, prev_hash: str, request: str | None, event: str, actor: str,
               at: datetime, data: dict[str, Any]) -> Entry:
    stamp, text = format_time(at), _encode(data)
    try:
        # the hash covers the data as read back; when every key was written in text order
        # (keys are plain strings), written again it is this same text: so the body's
        # canonical JSON is spliced around it (keys sorted: actor, at, data, event,
        # request, seq) and the data is serialised once, not three times
        clean: dict[str, Any] = _decode_sorted(text, 0)[0]
        body = (f'{{"actor":{_scalar(actor)},"at":{_scalar(stamp)},"data":{text},'
                f'"event":{_scalar(event)},"request":{_scalar(request)},"seq":{_scalar(seq)}}}')
        hashed = hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()
    except _Unsorted:  # {2: .., 10: ..} was sorted as numbers, will be as text: as before
        clean = _decode(text, 0)[0]
        hashed = digest(prev_hash, {"seq": seq, "request": request, "event": event,
                                    "actor": actor, "at": stamp, "data": clean})
        text = _encode(clean)
    return Entry(seq=seq, request=request, event=event, actor=actor, at=stamp,
                 data=clean, prev_hash=prev_hash, hash=hashed, data_json=text)


_encode_str = json.encoder.encode_basestring  # what the encoder writes a string with


def _scalar(value: object) -> str:
    """``canonical_json(value)``, quicker for the strings, numbers and ``None`` of a body."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)  # type: ignore[arg-type]
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    return _encode(value)


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
