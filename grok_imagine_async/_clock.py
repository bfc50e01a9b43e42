"""Where time comes from: the event loop's clock (so tests can run on a virtual one), and Unix
time derived from it with an offset taken once per process."""

from __future__ import annotations

import asyncio
import threading
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


class _Running(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_RUNNING = _Running()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread, or None (trio, or no loop). Remembered: before
    Python 3.12 asking asyncio costs a system call (getpid), and the client asks several times a
    request. A loop that still runs in this thread is the one running (loops do not nest)."""
    loop = _RUNNING.loop
    if loop is None or not loop.is_running():
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        _RUNNING.loop = loop
    return loop


class LoopClock:
    """The default clock: the running event loop's time (``anyio.current_time()``)."""

    __slots__ = ()

    def monotonic(self) -> float:
        loop = running_loop()  # straight from an asyncio loop: a fraction of anyio's cost
        return loop.time() if loop is not None else anyio.current_time()

    def unix(self) -> float:
        return UNIX_OFFSET + self.monotonic()


DEFAULT_CLOCK: Clock = LoopClock()
