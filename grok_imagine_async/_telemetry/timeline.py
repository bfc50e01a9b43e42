"""Turning event-loop times into the wall-clock nanoseconds OpenTelemetry timestamps are in.

The client and scheduler stamp events on the event loop's clock (``anyio.current_time()``),
which a test may run virtually. One anchor (wall time and loop time read together) maps any
loop time to wall time, so span durations are the loop's durations: real ones in production,
virtual ones in a simulation.
"""

from __future__ import annotations

import time

import anyio


class Timeline:
    """Maps loop times to epoch nanoseconds from one anchor, re-anchored if the loop changes."""

    __slots__ = ("_loop0", "_wall0")

    def __init__(self) -> None:
        self._wall0 = 0
        self._loop0: float | None = None

    def now(self) -> float:
        """The running loop's time."""
        return anyio.current_time()

    def to_ns(self, at: float) -> int:
        """``at`` (a loop time) in nanoseconds since the epoch."""
        if self._loop0 is None or at < self._loop0 - 1.0:  # first use, or a new event loop
            self._wall0, self._loop0 = time.time_ns(), anyio.current_time()
        return self._wall0 + int((at - self._loop0) * 1e9)
