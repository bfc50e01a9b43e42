"""Counting one token's requests against its quota, in a sliding or a fixed window. Pure, no I/O.

Sliding: a request counts for exactly ``period`` seconds after it was admitted, so no interval of
``period`` seconds ever holds more than ``requests`` admitted requests. Fixed: windows are the
intervals ``[k * period, (k + 1) * period)`` of the clock, each admitting ``requests``; two
adjacent windows can therefore admit ``2 * requests`` within one period, as real fixed-window
servers do.

Refused requests do not use up the quota unless ``count_refused`` is set (then a client that
keeps hammering stays locked out until it pauses, a stricter server behaviour).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from .._limiting.plans import RateLimit

WindowMode = Literal["sliding", "fixed"]

EPSILON = 1e-6
"""Seconds of tolerance at a window boundary: float rounding of ``t + period`` on the client side
must not turn an on-time request into a 429."""


@dataclass(frozen=True, slots=True)
class WindowDecision:
    """The limiter's verdict on one request.

    Attributes:
        admitted: Whether the request is within the quota.
        remaining: Requests still admitted in the current window after this one.
        reset_after: Seconds until the window frees quota: the oldest counted request leaves it
            (sliding) or the window restarts (fixed). 0 when nothing is counted.
        retry_after: Seconds until a refused request would be admitted (0 when admitted).
    """

    admitted: bool
    remaining: int
    reset_after: float
    retry_after: float


class WindowCounter:
    """Admits at most ``limit.requests`` requests per ``limit.period`` seconds.

    Args:
        limit: The quota.
        mode: ``"sliding"`` or ``"fixed"`` (see the module docstring).
        count_refused: Whether refused requests also use up quota.

    Example:
        >>> counter = WindowCounter(RateLimit(2, 10.0))
        >>> [counter.hit(t).admitted for t in (0.0, 1.0, 2.0, 10.5)]
        [True, True, False, True]
    """

    __slots__ = ("_count", "_count_refused", "_limit", "_mode", "_times", "_window_start")

    def __init__(
        self, limit: RateLimit, mode: WindowMode = "sliding", *, count_refused: bool = False
    ) -> None:
        if mode not in ("sliding", "fixed"):
            raise ValueError(f"window mode must be 'sliding' or 'fixed', got {mode!r}")
        self._limit = limit
        self._mode = mode
        self._count_refused = count_refused
        self._times: deque[float] = deque()  # sliding: times of the requests still counted
        self._window_start = -math.inf  # fixed: start of the current window
        self._count = 0  # fixed: requests counted in the current window

    @property
    def limit(self) -> RateLimit:
        """The quota enforced."""
        return self._limit

    @property
    def mode(self) -> WindowMode:
        """``"sliding"`` or ``"fixed"``."""
        return self._mode

    def hit(self, now: float) -> WindowDecision:
        """Count one request received at clock time ``now`` and decide on it.

        ``now`` must not decrease between calls.
        """
        if self._mode == "sliding":
            return self._hit_sliding(now)
        return self._hit_fixed(now)

    def _hit_sliding(self, now: float) -> WindowDecision:
        period, quota, times = self._limit.period, self._limit.requests, self._times
        while times and times[0] + period <= now + EPSILON:
            times.popleft()
        admitted = len(times) < quota
        if admitted or self._count_refused:
            times.append(now)
        remaining = max(0, quota - len(times))
        reset_after = max(0.0, times[0] + period - now) if times else 0.0
        retry_after = 0.0
        if not admitted:
            # Quota comes back when enough counted requests have left the window to drop below it.
            retry_after = max(0.0, times[len(times) - quota] + period - now)
        return WindowDecision(admitted, remaining, reset_after, retry_after)

    def _hit_fixed(self, now: float) -> WindowDecision:
        period, quota = self._limit.period, self._limit.requests
        start = math.floor((now + EPSILON) / period) * period
        if start > self._window_start:
            self._window_start, self._count = start, 0
        admitted = self._count < quota
        if admitted or self._count_refused:
            self._count += 1
        reset_after = max(0.0, self._window_start + period - now)
        retry_after = 0.0 if admitted else reset_after
        return WindowDecision(admitted, max(0, quota - self._count), reset_after, retry_after)


def max_in_window(times: list[float], period: float) -> int:
    """The largest number of ``times`` (sorted ascending) inside any interval of ``period`` s.

    Uses the same boundary tolerance as :class:`WindowCounter`, so a log of requests admitted by
    a sliding counter with ``period`` never exceeds its quota here.
    """
    best = 0
    first = 0
    for last, t in enumerate(times):
        while times[first] + period <= t + EPSILON:
            first += 1
        best = max(best, last - first + 1)
    return best
