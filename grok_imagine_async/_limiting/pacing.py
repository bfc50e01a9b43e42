"""How fast to send and how to react to the server's rate-limit answers. Pure, no I/O.

:class:`~grok_imagine_async.LocalRateLimiter` keeps the event-loop machinery; the arithmetic it
relies on lives here so tests can call it directly:

- :func:`paced_rate`: the steady rate that keeps every sliding window under the quota;
- :class:`GrantHistory`: when each recent permit was granted, to count our own requests;
- :func:`jitter_tolerance`: how far the server's count may stray from ours on its own;
- :class:`LatencySpread`: how unevenly answers take their time;
- :func:`react`: what one answer's headers mean for every sender (pause, slow down, nothing);
- :func:`hold_until`: the earliest time the next permit may be granted, given that reaction;
- :class:`WindowLog`: which permits may still count in the server's window (window pacing).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .plans import RateLimit


def catch_up(limit: RateLimit, headroom: float) -> float:
    """Permits of catch-up the pacing bucket holds beyond one: ``headroom * requests``.

    A bucket of capacity exactly 1 loses every millisecond by which the event loop wakes late
    (a busy loop, a descheduled process), and at 1000 requests per 6 s, a permit every 6 ms,
    that loss is several percent. Capacity ``1 + catch_up`` lets late grants be followed by
    early ones, making up for up to about ``headroom * period`` seconds of lateness, at the
    cost of ``catch_up`` permits per window.
    """
    return headroom * limit.requests


def paced_rate(limit: RateLimit, headroom: float, *, spread: float = 0.0) -> float:
    """Permits per second such that no window of ``period * (1 + headroom)`` exceeds the quota.

    A bucket of capacity ``c = 1 + s`` (``s`` = :func:`catch_up`) leaking at rate ``r`` grants
    at most ``c + r * L`` permits in any closed interval of length ``L``. Solving
    ``c + r * L < requests + 1`` for ``L = period * (1 + headroom)`` gives
    ``r = (requests - s) / L``: two requests may then travel ``headroom * period`` seconds apart
    in latency and still never be seen by the server as more than ``requests`` in one
    ``period``. The steady pace is ``(1 - headroom) / (1 + headroom)`` of the quota: 98 % for
    the default ``headroom=0.01``.

    Args:
        limit: The quota.
        headroom: The fraction of the period kept as jitter margin.
        spread: Seconds by which recent answers' latencies differed. When it is more than the
            headroom's margin, the window is stretched by ``spread`` instead: requests that
            travel that unevenly need that much more room (an overloaded server queues them,
            then sees them bunched).
    """
    stretch = max(headroom * limit.period, spread)
    return (limit.requests - catch_up(limit, headroom)) / (limit.period + stretch)


def window_stretch(limit: RateLimit, headroom: float, spread: float) -> float:
    """Seconds to stretch the window by for latencies that differ by ``spread``.

    The headroom's ``headroom * period`` while ``spread`` fits in it; beyond, ``spread`` rounded
    up to a quarter of that (so the pace changes in steps, not at every answer), and never more
    than one period.
    """
    margin = headroom * limit.period
    step = margin / 4
    stretch = max(margin, step * math.ceil(spread / step - 1e-9))
    return min(stretch, max(margin, limit.period))


def jitter_tolerance(limit: RateLimit, headroom: float, *, spread: float = 0.0) -> int:
    """How many requests the server may count beyond our own estimate without anyone else.

    We count our requests by grant time, the server by arrival time. With arrival delays that
    differ by up to ``d`` seconds, about ``d * rate`` of ours can fall on the other side of the
    window's start, and as many sent after the observed request can overtake it. ``d`` is the
    headroom's ``headroom * period``, or the ``spread`` of recent answers' latencies when that
    is larger, plus a couple for rounding.
    """
    jitter = max(headroom * limit.period, 2.0 * spread)
    return math.ceil(jitter * limit.per_second) + 2


class LatencySpread:
    """How unevenly answers take their time: an estimate of the spread of their latencies.

    The smoothed mean deviation of TCP's retransmission timer (RFC 6298: gains 1/8 and 1/4),
    times four. Queueing that bunches requests raises it within a few answers; one slow answer
    among fast ones moves it once and fades over the next few.

    Example:
        >>> latency = LatencySpread()
        >>> latency.add(0.5); latency.add(0.5)
        >>> latency.spread
        0.0
        >>> latency.add(1.5)
        >>> latency.spread
        1.0
    """

    __slots__ = ("_deviation", "_smoothed")

    def __init__(self) -> None:
        self._smoothed: float | None = None
        self._deviation = 0.0

    def add(self, latency: float) -> None:
        """Record one answer's latency in seconds (from permit to answer)."""
        if self._smoothed is None:
            self._smoothed = latency
            return
        self._deviation += 0.25 * (abs(self._smoothed - latency) - self._deviation)
        self._smoothed += 0.125 * (latency - self._smoothed)

    @property
    def spread(self) -> float:
        """Four smoothed mean deviations, in seconds (0.0 before two answers)."""
        return 4.0 * self._deviation


@dataclass(frozen=True, slots=True)
class Slowdown:
    """Grants at least ``spacing`` seconds apart, for ``lasting`` seconds from now."""

    spacing: float
    lasting: float


@dataclass(frozen=True, slots=True)
class Reaction:
    """What every sender must do after one answer.

    Attributes:
        pause: Seconds from now during which no permit is granted (None: no pause).
        slowdowns: Slower spacings to keep on top of the normal pace (the strictest one wins).
    """

    pause: float | None = None
    slowdowns: tuple[Slowdown, ...] = ()


def react(
    *,
    limit: RateLimit,
    rate: float,
    rate_limited: bool,
    remaining: int | None,
    reset_after: float | None,
    retry_after: float | None,
    own_in_window: int | None,
    sent_since: int,
    tolerance: int,
    margin: int,
    default_pause: float,
) -> Reaction:
    """Turn one answer's rate-limit headers into a :class:`Reaction`.

    Rules, in order:

    1. A 429 pauses everyone for ``Retry-After``, else ``X-RateLimit-Reset``, else
       ``default_pause``.
    2. Otherwise, if the server's ``Remaining`` is explained by our own requests (it is at least
       ``requests - own_in_window - tolerance``), nothing changes: our pacing already keeps every
       window under the quota, even when the window is exactly full (``Remaining: 0``).
    3. Otherwise someone else used ``requests - own_in_window - remaining`` of the window.

       - Until the reset: requests we sent after the observed one (``sent_since``) also come
         out of ``Remaining``. If nothing is left, everyone pauses until the reset; if less is
         left than our pace would send before it, the rest is spread evenly until the reset.
         That is exact for a fixed window, whose reset restores the whole quota.
       - For the next period: we keep to the share the others left us, less ``margin``,
         assuming they go on as they did. A sliding window frees its quota gradually (its
         reset only says when the oldest request leaves), so this is what stops two processes
         from taking turns at 429s; the margin keeps their sum off the limit itself.

    Every wait is clamped to one ``period``: no window stays closed longer than its own length,
    so a longer value can only come from clock skew (a Unix-time reset read on a clock that
    jumped). A 429 pause is at least one paced interval, so that a zero hint cannot turn into
    one 429 per interval.

    Args:
        limit: The quota.
        rate: Our paced rate in permits per second (see :func:`paced_rate`).
        rate_limited: Whether the answer was a 429.
        remaining: ``X-RateLimit-Remaining`` (None: unknown).
        reset_after: Seconds from now until the server's window frees quota (None: unknown).
        retry_after: ``Retry-After`` in seconds (None: not given).
        own_in_window: Our own permits in the ``period`` that ended with the observed request,
            that request included (None: too old to tell).
        sent_since: Permits granted after the observed request's permit.
        tolerance: Requests the server may count beyond ``own_in_window`` because of latency
            jitter (see :func:`jitter_tolerance`).
        margin: Requests a window to leave unused below our share when someone else is on the
            token (the tolerance for the headroom's jitter alone).
        default_pause: The pause when a 429 (or an unexplained ``Remaining: 0``) gives no time.

    Returns:
        The reaction: a pause, slowdowns, both, or nothing.
    """

    def clamp(seconds: float) -> float:
        return min(max(seconds, 0.0), limit.period)

    if rate_limited:
        hint = retry_after if retry_after is not None else reset_after
        wait = clamp(hint) if hint is not None else clamp(default_pause)
        return Reaction(pause=max(wait, 1.0 / rate))
    if remaining is None:
        return Reaction()
    if own_in_window is not None and remaining >= limit.requests - own_in_window - tolerance:
        return Reaction()
    until_reset = clamp(reset_after) if reset_after is not None else None
    budget = remaining - sent_since
    pause: float | None = None
    if budget <= 0:
        pause = until_reset if until_reset is not None else clamp(default_pause)
    if own_in_window is None:  # an old answer: enough to stop, too stale to slow down on
        return Reaction(pause=pause or None)
    others = limit.requests - own_in_window - remaining
    share = max(1, limit.requests - others - margin)
    slowdowns = [Slowdown(spacing=limit.requests / (rate * share), lasting=limit.period)]
    horizon = until_reset if until_reset is not None else limit.period
    if 0 < budget < math.floor(horizon * rate) + 1:
        slowdowns.append(Slowdown(spacing=horizon / budget, lasting=horizon))
    return Reaction(pause=pause or None, slowdowns=tuple(slowdowns))


def hold_until(
    *, paused_until: float, last_grant: float, slowdowns: Iterable[tuple[float, float]]
) -> float:
    """The earliest clock time the next permit may be granted under the server's reactions.

    The pacing bucket adds its own wait on top; this only covers pauses and slowdowns.

    Args:
        paused_until: End of the current pause (in the past when none).
        last_grant: When the previous permit was granted.
        slowdowns: ``(spacing, until)`` pairs: grants at least ``spacing`` apart until the
            clock time ``until``.
    """
    earliest = paused_until
    for spacing, until in slowdowns:
        earliest = max(earliest, min(last_grant + spacing, until))
    return earliest


class GrantHistory:
    """Grant times of recent permits, by serial, to count our own requests in a window.

    Serials are consecutive from 1. Only the last ``keep`` seconds are remembered.

    Example:
        >>> history = GrantHistory(keep=10.0)
        >>> for t in (0.0, 1.0, 2.0, 3.0):
        ...     _ = history.add(t)
        >>> history.count_in_window(4, period=2.5)  # serials 2, 3, 4 at t = 1, 2, 3
        3
    """

    __slots__ = ("_first_serial", "_keep", "_start", "_times")

    def __init__(self, *, keep: float) -> None:
        self._keep = keep
        self._times: list[float] = []
        self._start = 0  # index in _times of the oldest remembered grant
        self._first_serial = 1  # serial of _times[_start]

    @property
    def last_serial(self) -> int:
        """The serial of the latest grant (0 before the first)."""
        return self._first_serial + len(self._times) - self._start - 1

    def add(self, now: float) -> int:
        """Record a grant at ``now`` and return its serial."""
        self._times.append(now)
        self._forget(now - self._keep)
        return self.last_serial

    def count_in_window(self, serial: int, *, period: float) -> int | None:
        """Grants up to and including ``serial`` in the ``period`` seconds that end with it.

        Returns None when that window reaches back beyond what is remembered.
        """
        index = self._start + serial - self._first_serial
        if serial < self._first_serial or index >= len(self._times):
            return None
        granted_at = self._times[index]
        # If older grants were forgotten, they might have been inside the window.
        if self._first_serial > 1 and self._times[self._start] > granted_at - period:
            return None
        first = bisect.bisect_right(self._times, granted_at - period, self._start, index + 1)
        return index + 1 - first

    def _forget(self, before: float) -> None:
        times = self._times
        start = self._start
        while start < len(times) - 1 and times[start] < before:
            start += 1
        self._first_serial += start - self._start
        self._start = start
        if start > 1024 and start * 2 > len(times):  # compact now and then, amortised O(1)
            del times[:start]
            self._start = 0


class WindowLog:
    """Which recent permits may still count in the server's window, for window pacing.

    A request reaches the server no earlier than its permit and no later than its answer. A
    permit therefore holds one of the ``requests`` places until ``window`` seconds after its
    answer, after which no window of the server can hold it together with a request granted
    then. Until its answer comes, a permit is assumed to reach the server within
    ``unanswered`` seconds of its grant (the client's timeouts see to that); an answer that
    comes later than that but while the place is still held extends the hold.

    Example:
        >>> log = WindowLog(2, window=10.0, unanswered=30.0)
        >>> log.grant(1, now=0.0)
        >>> log.grant(2, now=0.0)
        >>> log.opens_at(now=0.0)  # both places taken until an answer comes
        40.0
        >>> log.answered(1, now=1.5)
        True
        >>> log.opens_at(now=2.0)
        11.5
    """

    __slots__ = ("_heap", "_release", "_requests", "_unanswered", "_window")

    def __init__(self, requests: int, *, window: float, unanswered: float) -> None:
        self._requests = requests
        self._window = window
        self._unanswered = unanswered
        self._release: dict[int, float] = {}  # serial -> when its place frees up
        self._heap: list[tuple[float, int]] = []  # (release, serial), stale entries skipped

    def grant(self, serial: int, *, now: float) -> None:
        """A permit was granted at ``now``: it takes a place until its answer."""
        self._set(serial, now + self._unanswered + self._window)

    def answered(self, serial: int, *, now: float) -> bool:
        """The permit's answer came at ``now``; True if that frees its place sooner."""
        release = self._release.get(serial)
        if release is None or release <= now:  # its place is free already
            return False
        self._set(serial, now + self._window)
        return now + self._window < release

    def opens_at(self, *, now: float) -> float:
        """When a new permit may be granted: ``-inf`` if a place is free now."""
        heap, release = self._heap, self._release
        while heap and (release.get(heap[0][1]) != heap[0][0] or heap[0][0] <= now):
            when, serial = heapq.heappop(heap)
            if release.get(serial) == when:  # expired, not merely superseded
                del release[serial]
        if len(release) < self._requests:
            return -math.inf
        return heap[0][0]

    def _set(self, serial: int, when: float) -> None:
        self._release[serial] = when
        heapq.heappush(self._heap, (when, serial))
