"""The waiter line of both limiters, on anyio: one waiter at a time, the leader, fetches the
next slot and hands it to the first in line by then (priority, then arrival)."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

SlotT = TypeVar("SlotT")


@dataclass(eq=False)
class _Waiter(Generic[SlotT]):
    arrived: float
    served: bool = False
    slot: SlotT | None = None
    event: anyio.Event = field(default_factory=anyio.Event)


class SlotLine(Generic[SlotT]):
    """A priority line where one waiter at a time fetches slots for everyone; ``now`` is the
    limiter's clock (how long the waiters have gone without a slot)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.waiters: list[tuple[int, int, _Waiter[SlotT]]] = []
        self._arrivals = itertools.count()
        self._leading = False
        self._last_served = -math.inf
        self.total_wait = 0.0  # seconds waited in line, summed over all callers

    def stalled_for(self, now: float) -> float:
        """Seconds since the later of the last slot served and the oldest waiter's arrival."""
        if not self.waiters:
            return 0.0
        oldest = min(waiter.arrived for _, _, waiter in self.waiters)
        return max(0.0, now - max(oldest, self._last_served))

    def __len__(self) -> int:
        """Callers waiting right now."""
        return len(self.waiters)

    async def wait_turn(
        self, priority: int, fetch_slot: Callable[[int], Awaitable[SlotT]]
    ) -> SlotT | None:
        """The slot given to this caller (lower ``priority`` first), once due. The leader awaits
        ``fetch_slot`` with the first in line's priority (its errors are the leader's alone); a
        slot given to a cancelled caller passes down the line."""
        waiter: _Waiter[SlotT] = _Waiter(self._now())
        heapq.heappush(self.waiters, (priority, next(self._arrivals), waiter))
        try:
            while not waiter.served:
                if self._leading:
                    waiter.event = anyio.Event()
                    await waiter.event.wait()
                    continue
                self._leading = True
                try:
                    while not waiter.served:
                        self._serve_first(await fetch_slot(self.waiters[0][0]))
                        if not waiter.served:  # those served take their place back by priority
                            await anyio.lowlevel.checkpoint()
                finally:
                    self._leading = False
                    self._wake_first()
        except BaseException:  # out of the line; a slot it was given passes on
            if not waiter.served:
                self.waiters = [entry for entry in self.waiters if entry[2] is not waiter]
                heapq.heapify(self.waiters)
            elif self.waiters:
                self._serve_first(waiter.slot)
            self._wake_first()
            raise
        finally:
            self.total_wait += max(0.0, self._now() - waiter.arrived)
        return waiter.slot

    def _serve_first(self, slot: SlotT | None) -> None:
        _, _, first = heapq.heappop(self.waiters)
        first.served = True
        self._last_served = self._now()
        first.slot = slot
        first.event.set()

    def _wake_first(self) -> None:
        if self.waiters:
            self.waiters[0][2].event.set()
