"""Items due at given times on one heap and one timer (5,000 jobs in flight: one sleeper)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class DueQueue(Generic[T]):
    """Items by due time (ties in scheduling order); :meth:`next_due` returns each when due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._changed = anyio.Event()

    def schedule(self, item: T, when: float) -> None:
        """Make ``item`` due at ``when``; wakes :meth:`next_due` if it is now the first."""
        heapq.heappush(self._heap, (when, next(self._order), item))
        if self._heap[0][2] is item:
            self._changed.set()

    def reschedule_all(self, when: Callable[[T, float], float]) -> None:
        """Move every queued item to ``when(item, its current due time)``, in one pass."""
        self._heap = [(when(item, due), order, item) for due, order, item in self._heap]
        heapq.heapify(self._heap)
        self._changed.set()

    def take(self, chosen: Callable[[T], bool]) -> list[T]:
        """Remove and return every queued item ``chosen`` picks (O(n), one re-heapify)."""
        taken = [item for _, _, item in self._heap if chosen(item)]
        if taken:
            self._heap = [entry for entry in self._heap if not chosen(entry[2])]
            heapq.heapify(self._heap)
        return taken

    def due_before(self, when: float) -> int:
        """How many items are due at or before ``when`` (O(n): asked only while idle)."""
        return sum(1 for due, _, _ in self._heap if due <= when)

    def items(self, *, first_only: bool = False) -> list[T]:
        """Every queued item, in no particular order (or only the first due)."""
        if first_only:
            return [self._heap[0][2]] if self._heap else []
        return [item for _, _, item in self._heap]

    async def next_due(self, *, early: Callable[[float], T | None] | None = None) -> T:
        """Wait until the first item is due, remove and return it (one consumer); meanwhile
        the queued item ``early(now)`` returns (asked every 0.25 s) is taken at once."""
        while True:
            if self._heap:
                when, now = self._heap[0][0], anyio.current_time()
                if when <= now:
                    return heapq.heappop(self._heap)[2]
                chosen = None if early is None else early(now)
                if chosen is not None:
                    self._heap = [entry for entry in self._heap if entry[2] is not chosen]
                    heapq.heapify(self._heap)
                    return chosen
                with anyio.move_on_after(when - now if early is None else min(when - now, 0.25)):
                    await self._changed.wait()
            else:
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = anyio.Event()
