"""Delegation (out of office): who stands in for whom, and until when.

A delegation says "``delegator``'s approval steps go to ``delegate`` until ``until``".
Chains resolve (A→B→C sends A's steps to C); a delegation that would close a loop is
refused when it is set. Separation of duties wins over delegation: a delegate who may not
decide a step (the requester, or someone who decided an earlier level) is skipped, and
the step stays with the person before them in the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from flows.errors import RequestInvalid


@dataclass(frozen=True, slots=True)
class Delegation:
    delegate: str
    until: datetime


Delegations = Mapping[str, Delegation]  # delegator -> delegation


def active(delegations: Delegations, at: datetime) -> dict[str, Delegation]:
    return {who: d for who, d in delegations.items() if d.until > at}


def resolve(user: str, delegations: Delegations, *, at: datetime,
            excluded: set[str] | frozenset[str] = frozenset()) -> str:
    """Who decides for ``user`` at ``at``: the end of the chain of active delegations,
    stopping before anyone excluded (and before a loop, which ``check`` prevents)."""
    current, seen = user, {user}
    while True:
        nxt = delegations.get(current)
        if nxt is None or nxt.until <= at or nxt.delegate in seen or nxt.delegate in excluded:
            return current
        current = nxt.delegate
        seen.add(current)


def check(delegator: str, delegate: str, delegations: Delegations, *, at: datetime,
          until: datetime) -> None:
    """Refuse a delegation to oneself, into the past, or one that would make a loop."""
    if delegate == delegator:
        raise RequestInvalid("delegate", "you cannot delegate to yourself")
    if until <= at:
        raise RequestInvalid("until", "the end date must be in the future")
    current, seen = delegate, {delegate}
    while True:
        nxt = delegations.get(current)
        if nxt is None or nxt.until <= at:
            return
        if nxt.delegate == delegator:
            raise RequestInvalid("delegate", f"that would make a loop: {delegate}'s steps "
                                             f"already come to {delegator}")
        if nxt.delegate in seen:
            return
        current = nxt.delegate
        seen.add(current)

