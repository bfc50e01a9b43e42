"""The local limiter's bookkeeping of its own permits: when they were granted and answered, which
may still count in the server's window, and a wake-up for the waiting leader. Pure but for
:class:`Wakeup`.
"""

from __future__ import annotations

import bisect
import heapq
import math

import anyio

from .._clock import Clock


class TimeLog:
    """Clock times of recent events (our grants, our answers), numbered from 1 in order.

    Only the last ``keep`` seconds are remembered.

    Example:
        >>> log = TimeLog(keep=10.0)
        >>> for t in (0.0, 1.0, 2.0, 3.0):
        ...     _ = log.add(t)
        >>> log.after(2)  # the first serial after 2, and the times from it on
        (3, [2.0, 3.0])
        >>> log.count_after(1.5)  # at t = 2, 3
        2
    """

    __slots__ = ("_first_serial", "_keep", "_start", "_times")

    def __init__(self, *, keep: float) -> None:
        self._keep = keep
        self._times: list[float] = []
        self._start = 0  # index in _times of the oldest remembered time
        self._first_serial = 1  # serial of _times[_start]

    @property
    def last_serial(self) -> int:
        """The serial of the latest event (0 before the first)."""
        return self._first_serial + len(self._times) - self._start - 1

    def add(self, now: float) -> int:
        """Record an event at ``now`` (no earlier than the last) and return its serial."""
        self._times.append(now)
        self._forget(now - self._keep)
        return self.last_serial

    def after(self, serial: int, *, upto: int | None = None) -> tuple[int, list[float]]:
        """The first serial after ``serial`` remembered, and the times from it on (to ``upto``
        included if given), oldest first."""
        first = max(serial + 1, self._first_serial)
        index = self._start + first - self._first_serial
        end = None if upto is None else self._start + upto - self._first_serial + 1
        return first, self._times[index:end]

    def count_in_window(self, serial: int, *, period: float) -> int | None:
        """Events up to and including ``serial`` in the ``period`` seconds that end with it.

        Returns None when that window reaches back beyond what is remembered.
        """
        index = self._start + serial - self._first_serial
        if serial < self._first_serial or index >= len(self._times):
            return None
        at = self._times[index]
        # If older events were forgotten, they might have been inside the window.
        if self._first_serial > 1 and self._times[self._start] > at - period:
            return None
        first = bisect.bisect_right(self._times, at - period, self._start, index + 1)
        return index + 1 - first

    def count_after(self, when: float) -> int:
        """Events remembered that happened after ``when``."""
        times = self._times
        return len(times) - bisect.bisect_right(times, when, self._start)

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
    """Which recent permits may still count in the server's window.

    Whatever the feedback says, no window of the server may hold more of our requests than it
    has places. A request reaches the server no earlier than its permit and no later than its
    answer. A permit therefore holds one of the places until ``window`` seconds after its
    answer, after which no window of the server can hold it together with a request granted
    then. Until its answer comes, a permit is assumed to reach the server within
    ``unanswered`` seconds of its grant (the client's timeouts see to that); an answer that
    comes later than that but while the place is still held extends the hold.

    Example:
        >>> log = WindowLog(window=10.0, unanswered=30.0)
        >>> log.grant(1, now=0.0)
        >>> log.grant(2, now=0.0)
        >>> log.opens_at(now=0.0, places=2)  # both places taken until an answer comes
        40.0
        >>> log.answered(1, now=1.5)
        True
        >>> log.opens_at(now=2.0, places=2)
        11.5
    """

    __slots__ = ("_heap", "_release", "_unanswered", "_window")

    def __init__(self, *, window: float, unanswered: float) -> None:
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

    def forget(self, serial: int) -> None:
        """The permit's request never reached the server: its place is free."""
        self._release.pop(serial, None)

    def opens_at(self, *, now: float, places: int) -> float:
        """When a new permit may be granted, ``places`` being ours: ``-inf`` if one is free."""
        heap, release = self._heap, self._release
        while heap and (release.get(heap[0][1]) != heap[0][0] or heap[0][0] <= now):
            when, serial = heapq.heappop(heap)
            if release.get(serial) == when:  # expired, not merely superseded
                del release[serial]
        excess = len(release) - places
        if excess < 0:
            return -math.inf
        if excess == 0:
            return heap[0][0]
        return sorted(release.values())[excess]  # others took places: rare, and short-lived

    def _set(self, serial: int, when: float) -> None:
        self._release[serial] = when
        heapq.heappush(self._heap, (when, serial))


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
