"""The audit hash chain: an intact trail verifies; every kind of tampering is named."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from flows.audit import GENESIS, Entry, canonical_json, format_time, make_entry, verify

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("submitted", "U_ALICE", {"amount": Decimal("25000"), "currency": "USD"}),
    ("annotated", "system", {"recommendation": "approve", "flags": ()}),
    ("card_sent", "system", {"step": 0, "to": "U_BOB"}),
    ("approved", "U_BOB", {"step": 0, "level": "Manager"}),
    ("approved", "U_FIN1", {"step": 1, "level": "Finance"}),
]


def _trail() -> list[Entry]:
    entries: list[Entry] = []
    prev = GENESIS
    for seq, (event, actor, data) in enumerate(EVENTS, start=1):
        entry = make_entry(seq=seq, prev_hash=prev, request="PR-42", event=event, actor=actor,
                           at=T0 + timedelta(minutes=seq), data=data)
        entries.append(entry)
        prev = entry.hash
    return entries


def _head(entries: list[Entry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


def test_intact_chain_verifies() -> None:
    trail = _trail()
    assert trail[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(trail))
    assert verify(trail, head=_head(trail)) is None


def test_empty_trail_with_no_head_verifies() -> None:
    assert verify([], head=None) is None


def test_entries_keep_data_as_it_reads_back_from_json() -> None:
    first = _trail()[0]
    assert first.data == {"amount": "25000", "currency": "USD"}
    assert first.at == "2026-11-25T09:01:00.000000+00:00"
    assert format_time(datetime(2026, 1, 1, 12)) == "2026-01-01T12:00:00.000000+00:00"
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_hash_is_deterministic() -> None:
    assert [e.hash for e in _trail()] == [e.hash for e in _trail()]


@pytest.mark.parametrize("change", [
    {"data": {"step": 0, "level": "Director"}},
    {"event": "rejected"},
    {"actor": "U_MALLORY"},
    {"at": "2026-11-25T09:30:00.000000+00:00"},
    {"request": "PR-43"},
])
def test_changed_entry_is_named(change: dict[str, object]) -> None:
    trail = _trail()
    trail[3] = replace(trail[3], **change)  # type: ignore[arg-type]
    broken = verify(trail, head=_head(trail))
    assert broken is not None
    assert broken.seq == 4
    assert str(broken) == "entry 4: its content was changed after it was written"


def test_changed_entry_with_its_hash_recomputed_breaks_the_next_link() -> None:
    trail = _trail()
    forged = make_entry(seq=4, prev_hash=trail[2].hash, request="PR-42", event="approved",
                        actor="U_MALLORY", at=T0, data={"step": 0})
    trail[3] = forged
    broken = verify(trail, head=_head(trail))
    assert broken is not None and broken.seq == 5
    assert "does not follow the entry before it" in broken.problem


def test_removed_middle_entry_is_named() -> None:
    trail = _trail()
    del trail[2]
    broken = verify(trail, head=(5, _trail()[-1].hash))
    assert broken is not None
    assert broken.seq == 3
    assert "entry 3 is removed (found 4 instead)" in broken.problem


def test_removed_middle_entry_with_renumbered_sequence_is_caught() -> None:
    trail = _trail()
    del trail[2]
    trail = [replace(e, seq=i) for i, e in enumerate(trail, start=1)]
    broken = verify(trail, head=(5, _trail()[-1].hash))
    assert broken is not None and broken.seq == 3


def test_removed_last_entry_is_caught_by_the_head() -> None:
    trail = _trail()
    head = _head(trail)
    broken = verify(trail[:-1], head=head)
    assert broken is not None
    assert broken.seq == 5
    assert broken.problem == "entries 5 to 5 were removed from the end"


def test_head_that_does_not_match_the_last_entry_is_caught() -> None:
    trail = _trail()
    broken = verify(trail, head=(5, "f" * 64))
    assert broken is not None and broken.seq == 5
    assert broken.problem == "does not match the trail's recorded head"
    broken = verify(trail, head=(4, trail[3].hash))
    assert broken is not None and "head record was changed" in broken.problem


def test_missing_head_is_caught() -> None:
    broken = verify(_trail(), head=None)
    assert broken is not None and broken.seq == 5
    assert "head record is missing" in broken.problem


def test_reordered_entries_are_named() -> None:
    trail = _trail()
    trail[1], trail[2] = trail[2], trail[1]
    broken = verify(trail, head=_head(_trail()))
    assert broken is not None and broken.seq == 2


def test_reordered_entries_with_renumbered_sequence_are_named() -> None:
    trail = _trail()
    trail[1], trail[2] = trail[2], trail[1]
    trail = [replace(e, seq=i) for i, e in enumerate(trail, start=1)]
    broken = verify(trail, head=_head(_trail()))
    assert broken is not None and broken.seq == 2
    assert "does not follow the entry before it" in broken.problem


def test_duplicated_entry_is_named() -> None:
    trail = _trail()
    trail.insert(2, trail[1])
    broken = verify(trail, head=_head(_trail()))
    assert broken is not None and broken.seq == 2
    assert "out of order" in broken.problem
