"""Time under a test's control: an event loop whose clock jumps over idle time to its earliest
timer (real I/O still works, its latency invisible), and a clock moved by hand."""

from __future__ import annotations

import asyncio
import functools
import math
import selectors
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

from .._clock import UNIX_OFFSET

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A real selector that turns a timed wait with nothing ready into a clock jump."""

    loop: VirtualTimeEventLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready and timeout == 0 and not getattr(self.loop, "_ready", True):
            # Only a timer due now woke us: move on as a real clock would, or a callback
            # re-arming itself "when enough time passed" (aiolimiter) spins at one instant.
            self.loop.advance(max(1e-9, math.ulp(self.loop.time())))
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing scheduled: only real I/O (or another thread) can wake us
            return super().select(None)
        if self.loop._holds:  # a worker thread is busy for us (hold_time): look every 50 ms
            return super().select(min(timeout, 0.05))
        self.loop.advance(timeout)
        return []


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock that skips idle waits.

    Args:
        start: The clock's first reading (default: the real ``time.monotonic()``). Give a
            fixed one for a simulation that must repeat exactly.

    Example:
        >>> import anyio
        >>> async def main() -> float:
        ...     start = anyio.current_time()
        ...     await anyio.sleep(3600)
        ...     return anyio.current_time() - start
        >>> round(run_virtual(main))  # returns at once
        3600
    """

    def __init__(self, *, start: float | None = None) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = time.monotonic() if start is None else float(start)
        self._holds = 0  # hold_time() blocks running

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward by ``seconds`` (never backward)."""
        if seconds > 0:
            self._virtual_now += seconds

    @contextmanager
    def hold_time(self) -> Iterator[None]:
        """Keep the clock from jumping while blocking work runs in another thread (a loop
        waiting for a thread looks idle): hold it around your own ``to_thread`` calls."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1


def run_virtual(func: Callable[..., Awaitable[T]], *args: Any, start: float | None = None) -> T:
    """Return ``func(*args)``, run with anyio on a :class:`VirtualTimeEventLoop` from ``start``."""
    factory = functools.partial(VirtualTimeEventLoop, start=start)
    return anyio.run(func, *args, backend="asyncio", backend_options={"loop_factory": factory})


class ManualClock:
    """A clock that only moves when told to, for tests of time-dependent pure logic.

    Example:
        >>> clock = ManualClock(start=100.0)
        >>> clock.advance(2.5)
        >>> clock.monotonic()
        102.5
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        return self._now

    def unix(self) -> float:
        return UNIX_OFFSET + self._now

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (negative: a jump back)."""
        self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
