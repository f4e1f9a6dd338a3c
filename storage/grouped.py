"""Group commit: writes that queue while a transaction is being written share the next one.

A burst of acknowledgements then costs one transaction (one commit, one turn of the write
lock) per group instead of one per write, and a lone write goes out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Grouped(Generic[T, R]):
    """``await grouped(item)``: ``write`` is called with every item queued meanwhile and
    returns one result per item, in order; if it raises, every caller of that group gets
    the exception. ``room`` runs ahead of each group, waits while there is none (to hold
    back while full) and says how many items may go now (``None``: all); the rest wait
    for the next group, first in the queue."""

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], *,
                 room: Callable[[], Awaitable[int | None]] | None = None) -> None:
        self._write = write
        self._room = room
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, waiter))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # a caller that gives up (a timeout) does not cancel the others' transaction
        return await asyncio.shield(waiter)

    async def _drain(self) -> None:
        while self._queued:
            room = await self._room() if self._room is not None else None
            take = len(self._queued) if room is None else max(1, room)
            group, self._queued = self._queued[:take], self._queued[take:]
            try:
                results = await self._write([item for item, _ in group])
            except Exception as exc:
                for _, waiter in group:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for (_, waiter), result in zip(group, results, strict=True):
                if not waiter.done():
                    waiter.set_result(result)
