"""The quicker ``make_entry`` writes the same entries, hash for hash, as the original did.

Existing trails must still verify, so the hash of every entry has to stay byte-identical.
Below is a copy of the hashing as it was; random JSON-like data (nested dicts, lists,
tuples and sets, unicode with line separators and control characters, decimals, datetimes
naive and aware, big integers, keys that are not strings) is entered both ways, and the
entries -- or the errors -- must be the same.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.audit import GENESIS, Entry, canonical_json, format_time, make_entry, normalise

# --------------------------------------------------------------------------- the reference
# flows/audit.py as of 51e0381.


def ref_format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def ref_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return ref_format_time(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable in an audit entry: {type(value).__name__}")


def ref_canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=ref_default, allow_nan=False)


def ref_normalise(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ref_canonical_json(data))
    return result


def ref_digest(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + ref_canonical_json(body)).encode("utf-8")).hexdigest()


def ref_make_entry(*, seq: int, prev_hash: str, request: str | None, event: str, actor: str,
                   at: datetime, data: dict[str, Any]) -> tuple[Any, ...]:
    stamp, clean = ref_format_time(at), ref_normalise(data)
    body = {"seq": seq, "request": request, "event": event, "actor": actor,
            "at": stamp, "data": clean}
    return (seq, request, event, actor, stamp, clean, prev_hash, ref_digest(prev_hash, body))


# --------------------------------------------------------------------------- comparisons


def _fields(entry: Entry) -> tuple[Any, ...]:
    return (entry.seq, entry.request, entry.event, entry.actor, entry.at, entry.data,
            entry.prev_hash, entry.hash)


def _outcome(fn: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        result = fn(**kwargs)
    except Exception as exc:
        return "raised", (type(exc), str(exc))
    return "returned", _fields(result) if isinstance(result, Entry) else result


def _same_entry(**kwargs: Any) -> None:
    new, old = _outcome(make_entry, **kwargs), _outcome(ref_make_entry, **kwargs)
    assert new == old
    if new[0] == "returned":  # and the data reads back as it will from the database
        assert json.dumps(new[1][5], sort_keys=True) == json.dumps(old[1][5], sort_keys=True)


class Level(IntEnum):
    LOW = 1


class Code(StrEnum):
    SPLIT = "split_purchase"


ZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)),
         timezone(timedelta(0), "Z")]
datetimes = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.sampled_from(ZONES)))
unicode_text = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(["a", "é", "\u2028", "\u2029", "\x00", "\x1f", "\x7f",
                                      '"', "\\", "/", "\n", "😀", "\ufeff", "\ud800"])))
decimals = st.one_of(st.decimals(allow_nan=True, allow_infinity=True),
                     st.sampled_from([Decimal("-0"), Decimal("1E+3"), Decimal("0.10")]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False), unicode_text, decimals, datetimes,
    st.sampled_from([Level.LOW, Code.SPLIT, float("nan"), float("inf")]),
    st.builds(pow, st.just(10), st.integers(4290, 4310)))  # around int's 4300-digit limit
keys = st.one_of(unicode_text, unicode_text, st.sampled_from([Code.SPLIT]))
mixed_keys = st.one_of(st.integers(-20, 20), st.floats(allow_nan=False, width=16),
                       st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(mixed_keys, inner, max_size=4),
        st.dictionaries(keys, inner, max_size=3).map(OrderedDict),
        st.frozensets(st.one_of(st.integers(), unicode_text), max_size=3),
        st.sets(st.tuples(st.integers(), unicode_text), max_size=3),
    ),
    max_leaves=20)
datas = st.one_of(st.dictionaries(keys, values, max_size=6),
                  st.dictionaries(mixed_keys, values, max_size=4))
THOROUGH = settings(max_examples=800, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@THOROUGH
@given(data=datas, at=datetimes, seq=st.integers(0, 10**12),
       request=st.none() | st.text(max_size=12), event=st.text(max_size=12),
       actor=st.text(max_size=12), prev_hash=st.sampled_from([GENESIS, "ab" * 32, ""]))
def test_entries_are_hashed_as_before(data: dict[str, Any], at: datetime, seq: int,
                                      request: str | None, event: str, actor: str,
                                      prev_hash: str) -> None:
    _same_entry(seq=seq, prev_hash=prev_hash, request=request, event=event, actor=actor,
                at=at, data=data)


@settings(max_examples=300, deadline=None)
@given(data=datas, odd=st.one_of(values, st.just(True), st.just(object())))
def test_odd_headers_are_hashed_as_before(data: dict[str, Any], odd: Any) -> None:
    at = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    for field in ("seq", "request", "event", "actor"):
        fields: dict[str, Any] = {"seq": 7, "prev_hash": GENESIS, "request": "PR-7",
                                  "event": "submitted", "actor": "U_ALICE", "at": at,
                                  "data": data}
        fields[field] = odd
        _same_entry(**fields)


@THOROUGH
@given(value=values, at=datetimes)
def test_canonical_json_normalise_and_time_as_before(value: Any, at: datetime) -> None:
    assert _outcome(lambda: canonical_json(value)) == _outcome(lambda: ref_canonical_json(value))
    assert _outcome(lambda: normalise({"v": value})) == _outcome(
        lambda: ref_normalise({"v": value}))
    assert format_time(at) == ref_format_time(at)


@pytest.mark.parametrize("data", [
    {}, {"": ""}, {"a": {}}, {"a": []}, {"a": ()}, {2: "x", 10: "y"}, {"k": [{10: 1, 9: 2}]},
    {1.5: "x", 2: "y"}, {True: 1, 2: 2}, {"u": "\u2028\u2029\x00\x1f é"},
    {"f": 1e16, "g": -0.0, "h": 10**30, "i": 5e-324}, {"d": Decimal("1.50")},
    {"t": datetime(2026, 1, 1), "s": {3, 1}}, OrderedDict(b=1, a=2), {"e": Level.LOW},
    {Code.SPLIT: Code.SPLIT}, {"deep": [[[[[[[[[[1]]]]]]]]]]},
])
def test_particular_data_is_hashed_as_before(data: dict[Any, Any]) -> None:
    for at in (datetime(2026, 11, 25, 9, 0, tzinfo=UTC), datetime(2026, 11, 25, 9, 0)):
        _same_entry(seq=1, prev_hash=GENESIS, request="PR-1", event="submitted",
                    actor="U_ALICE", at=at, data=data)


def test_deep_and_circular_data_fail_as_before() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    circular: dict[str, Any] = {}
    circular["self"] = circular
    for data in ({"deep": deep}, circular):
        _same_entry(seq=1, prev_hash=GENESIS, request=None, event="submitted",
                    actor="U_ALICE", at=datetime(2026, 1, 1, tzinfo=UTC), data=data)
