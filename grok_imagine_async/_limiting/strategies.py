"""Pacing strategies: when the next permit may be granted, one class per ``pacing=`` mode.

:class:`~grok_imagine_async.LocalRateLimiter` owns the waiter queue and the server's pauses and
slowdowns; a strategy only decides how the quota is spread. Each one is told of every grant and
every answer, and waits on the limiter's behalf until a slot may be taken:

- :class:`EvenPacing` (``"even"``): one permit every ``1 / rate`` seconds from an
  :class:`aiolimiter.AsyncLimiter`, no burst ever;
- :class:`WindowPacing` (``"window"``): up to the quota at once within any window, each permit
  holding its place until a window after its answer.

The adaptive strategy lives in :mod:`.adaptive`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import anyio
from aiolimiter import AsyncLimiter

from .._clock import Clock
from .pacing import LatencySpread, WindowLog, catch_up, paced_rate, window_stretch
from .plans import RateLimit
from .protocol import RateLimitFeedback

HoldUntil = Callable[[], float]
"""The earliest clock time the server's pauses and slowdowns allow the next grant."""


class PacingStrategy(Protocol):
    """How a :class:`~grok_imagine_async.LocalRateLimiter` spreads its permits."""

    @property
    def rate(self) -> float:
        """The steady pace in permits per second (shortest 429 pause, slowdown spacing)."""

    @property
    def reads_remaining(self) -> bool:
        """True if the strategy reads ``X-RateLimit-Remaining`` itself.

        The limiter then reacts to 429s only, and leaves what ``Remaining`` means to the
        strategy instead of reading it as a window's count.
        """

    async def wait_for_slot(self, hold_until: HoldUntil) -> None:
        """Return when one more permit may be granted now (``hold_until`` included)."""

    def granted(self, serial: int, *, now: float) -> None:
        """A permit was granted at ``now``."""

    def answered(self, feedback: RateLimitFeedback, *, now: float) -> None:
        """The answer to ``feedback.permit`` was observed at ``now``."""


class EvenPacing:
    """One permit every ``1 / rate`` seconds, from an aiolimiter bucket with a little catch-up.

    The bucket's catch-up room is filled before the first grant and after any idle time or
    pause, so it never becomes a burst: the first permit is immediate, the next one a full
    interval later. A slot that turns out to fall inside a pause that began while we waited for
    it is thrown away, not granted late. While answers take unevenly long (see
    :class:`~grok_imagine_async._limiting.pacing.LatencySpread`) the pacing window is stretched.
    """

    reads_remaining = False

    def __init__(
        self, limit: RateLimit, *, headroom: float, clock: Clock, latency: LatencySpread
    ) -> None:
        self._limit = limit
        self._headroom = headroom
        self._clock = clock
        self._latency = latency
        self._catch_up = catch_up(limit, headroom)
        self._stretch = window_stretch(limit, headroom, 0.0)
        self._rate = paced_rate(limit, headroom, spread=self._stretch)
        self._bucket = self._new_bucket()
        self._bucket_full = False  # a replaced bucket must be filled before its first use
        self._last_take = -math.inf  # when a slot was last taken from the bucket

    @property
    def rate(self) -> float:
        """Permits per second; lower than usual while answers take unevenly long."""
        return self._rate

    async def wait_for_slot(self, hold_until: HoldUntil) -> None:
        """Take the next slot of the bucket outside any pause or slowdown."""
        while True:
            now = self._clock.monotonic()
            delay = hold_until() - now
            if delay > 0:
                await anyio.sleep(delay)
                continue
            self._follow_latency()
            capacity = 1.0 + self._catch_up
            if self._bucket_full:
                # A new bucket starts as if it had just granted: safe whatever the old one did.
                self._bucket_full = False
                await self._bucket.acquire(capacity)
            elif self._catch_up and now - self._last_take >= capacity / self._rate:
                # Idle (or paused) long enough for the bucket to empty: fill the catch-up room
                # first, so that it cannot turn into a burst. Immediate on an empty bucket.
                await self._bucket.acquire(self._catch_up)
            await self._bucket.acquire()
            self._last_take = self._clock.monotonic()
            if hold_until() <= self._last_take:
                return
            # The server asked for a pause while we waited: granting this slot now would send a
            # request inside it, and granting it after would bunch it with the next slot.

    def granted(self, serial: int, *, now: float) -> None:
        """Nothing to record: the bucket already counted the slot."""

    def answered(self, feedback: RateLimitFeedback, *, now: float) -> None:
        """Nothing to do: latency is followed through the shared spread at the next slot."""

    def _new_bucket(self) -> AsyncLimiter:
        capacity = 1.0 + self._catch_up
        return AsyncLimiter(capacity, capacity / self._rate)

    def _follow_latency(self) -> None:
        """Stretch the pacing window while answers take unevenly long, and back."""
        stretch = window_stretch(self._limit, self._headroom, self._latency.spread)
        if stretch != self._stretch:
            self._stretch = stretch
            self._rate = paced_rate(self._limit, self._headroom, spread=stretch)
            self._bucket = self._new_bucket()
            self._bucket_full = True


class Wakeup:
    """An event made when someone starts waiting and set when a wait may end sooner."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    async def wait_until(self, clock: Clock, when: float) -> None:
        """Sleep until the clock time ``when``, or until :meth:`wake` is called."""
        delay = when - clock.monotonic()
        if delay <= 0:
            return
        event = self._event = anyio.Event()
        with anyio.move_on_after(delay):
            await event.wait()

    def wake(self) -> None:
        """End the current wait, if any."""
        if self._event is not None:
            self._event.set()


class WindowPacing:
    """Up to the quota at once while fewer than ``requests`` permits may count in a window.

    A request reaches the server after its permit and before its answer, so a permit holds its
    place until ``period * (1 + headroom)`` after its answer is observed (a period longer if no
    answer comes): see :class:`~grok_imagine_async._limiting.pacing.WindowLog`.
    """

    reads_remaining = False

    def __init__(self, limit: RateLimit, *, headroom: float, clock: Clock) -> None:
        self._clock = clock
        self._rate = paced_rate(limit, headroom)
        self._log = window_log(limit, headroom)
        self._freed = Wakeup()

    @property
    def rate(self) -> float:
        """The even pace of the same quota (used for the shortest 429 pause)."""
        return self._rate

    async def wait_for_slot(self, hold_until: HoldUntil) -> None:
        """Return as soon as a place in the window is free outside any pause."""
        while True:
            now = self._clock.monotonic()
            when = max(self._log.opens_at(now=now), hold_until())
            if when <= now:
                return
            await self._freed.wait_until(self._clock, when)  # an answer may free a place sooner

    def granted(self, serial: int, *, now: float) -> None:
        """The permit takes a place until a window after its answer."""
        self._log.grant(serial, now=now)

    def answered(self, feedback: RateLimitFeedback, *, now: float) -> None:
        """An answer frees its permit's place sooner than assumed: wake the waiting pump."""
        if self._log.answered(feedback.permit.serial, now=now):
            self._freed.wake()


def window_log(limit: RateLimit, headroom: float) -> WindowLog:
    """The places of one window: held until a window after the answer, or a period unanswered."""
    return WindowLog(limit.requests, window=limit.period * (1 + headroom), unanswered=limit.period)
