"""Counting one token's requests against its quota: sliding or fixed window (the clock's
intervals ``[k * period, (k + 1) * period)``), or GCRA (nginx ``limit_req``, whose
``burst=b nodelay`` is ``b + 1`` here). Pure."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from .._limiting.plans import RateLimit

_Mode = Literal["sliding", "fixed"]
EPSILON = 1e-6  # a client's float rounding of ``t + period`` must not turn into a 429


@dataclass(frozen=True, slots=True)
class WindowDecision:
    """The verdict on one request (the headers' numbers)."""

    admitted: bool
    remaining: int  # requests still admitted after this one
    reset_after: float  # seconds until quota frees up (the GCRA bucket is full), 0: none used
    retry_after: float  # seconds until a refused request would be admitted (0 when admitted)


class WindowCounter:
    """Admits at most ``limit.requests`` requests per ``limit.period`` seconds; refused ones
    count only with ``count_refused`` (a hammering client then stays locked out)."""

    __slots__ = ("_count", "_count_refused", "_times", "_window_start", "limit", "mode")

    def __init__(self, limit: RateLimit, mode: _Mode = "sliding", *, count_refused: bool = False):
        self.limit, self.mode, self._count_refused = limit, mode, count_refused
        self._times: deque[float] = deque()  # sliding: the requests still counted
        self._window_start, self._count = -math.inf, 0  # fixed: the current window

    def hit(self, now: float) -> WindowDecision:
        """Count one request at clock time ``now`` (never decreasing) and decide on it."""
        period, quota = self.limit.period, self.limit.requests
        if self.mode == "fixed":
            start = math.floor((now + EPSILON) / period) * period
            if start > self._window_start:
                self._window_start, self._count = start, 0
            admitted = self._count < quota
            self._count += admitted or self._count_refused
            reset_after = max(0.0, self._window_start + period - now)
            retry_after = 0.0 if admitted else reset_after
            return WindowDecision(admitted, max(0, quota - self._count), reset_after, retry_after)
        times = self._times
        while times and times[0] + period <= now + EPSILON:
            times.popleft()
        admitted = len(times) < quota
        if admitted or self._count_refused:
            times.append(now)
        reset_after = max(0.0, times[0] + period - now) if times else 0.0
        # Quota comes back when enough counted requests have left to drop below it.
        retry_after = 0.0 if admitted else max(0.0, times[len(times) - quota] + period - now)
        return WindowDecision(admitted, max(0, quota - len(times)), reset_after, retry_after)


class GcraCounter:
    """A leaky bucket of ``burst`` requests refilled at ``limit.requests / limit.period`` a
    second; its state is the time (TAT) at which it is full again, ``reset_after`` away."""

    __slots__ = ("_count_refused", "_interval", "_tat", "burst", "limit")

    def __init__(self, limit: RateLimit, *, burst: int, count_refused: bool = False) -> None:
        self.limit, self.burst, self._count_refused = limit, burst, count_refused
        self._interval = limit.period / limit.requests
        self._tat = -math.inf

    def hit(self, now: float) -> WindowDecision:
        interval, capacity = self._interval, self.burst * self._interval
        after = max(self._tat, now) + interval  # the TAT if this request is admitted
        admitted = after - now <= capacity + EPSILON
        if admitted or self._count_refused:
            self._tat = after
        held = (capacity - (max(self._tat, now) - now)) / interval
        remaining = max(0, min(self.burst, math.floor(held + 1e-9)))
        retry_after = 0.0 if admitted else max(0.0, after - capacity - now)
        return WindowDecision(admitted, remaining, max(0.0, self._tat - now), retry_after)


def max_in_window(times: list[float], period: float) -> int:
    """The most of ``times`` (sorted) inside any interval of ``period`` s, with :data:`EPSILON`."""
    best = first = 0
    for last, t in enumerate(times):
        while times[first] + period <= t + EPSILON:
            first += 1
        best = max(best, last - first + 1)
    return best
