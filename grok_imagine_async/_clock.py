"""Where time comes from: the event loop's clock (so tests can run on a virtual one), and Unix
time derived from it with an offset taken once per process."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import anyio

# loop.time() is time.monotonic() on every stock asyncio loop; the virtual loop starts there too.
UNIX_OFFSET = time.time() - time.monotonic()


class Clock(Protocol):
    """A source of time; inject one where a test controls time without a loop."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (only differences are meaningful)."""

    def unix(self) -> float:
        """Seconds since the Unix epoch, consistent with :meth:`monotonic`."""


class LoopClock:
    """The default clock: the running event loop's time (``anyio.current_time()``)."""

    __slots__ = ()

    def monotonic(self) -> float:
        try:  # straight from an asyncio loop: a third of anyio.current_time()'s cost
            return asyncio.get_running_loop().time()
        except RuntimeError:  # not on asyncio: anyio knows
            return anyio.current_time()

    def unix(self) -> float:
        return UNIX_OFFSET + self.monotonic()


DEFAULT_CLOCK: Clock = LoopClock()
