"""The in-process rate limiter: the waiter line, the feedback interpreter and the bookkeeping
of its own permits."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

import anyio

from .._clock import DEFAULT_CLOCK, Clock
from .._errors import ConfigurationError
from .feedback import DEFAULT_HEADROOM, Estimate, grant, held_until, read_answer, ready_at
from .line import SlotLine
from .plans import Plan, RateLimit, resolve_rate_limit
from .protocol import LimiterStatistics, Permit, Priority, RateLimitFeedback


class TimeLog:
    """Clock times of the last ``keep`` seconds' events (grants, answers), numbered from 1; with
    ``gaps``, also the smallest gap between two events in a row after any of them."""

    __slots__ = ("_first_serial", "_gap_serials", "_gaps", "_keep", "_serial", "_start", "_times")

    def __init__(self, *, keep: float, gaps: bool = False) -> None:
        self._keep = keep
        self._times: list[float] = []
        self._start = 0  # index in _times of the oldest remembered time
        self._first_serial = 1  # serial of _times[_start]
        self._serial = 0  # serial of _times[-1]
        # A sliding minimum of the gaps (time less the one before), by serial: its first entry
        # past a serial is the smallest gap after it. Two lists: no object per event.
        self._gap_serials: list[int] | None = [] if gaps else None
        self._gaps: list[float] = []

    def add(self, now: float) -> int:
        """Record an event at ``now`` (no earlier than the last) and return its serial."""
        times = self._times
        self._serial = serial = self._serial + 1
        serials = self._gap_serials
        if serials is not None and times:
            gap = now - times[-1]
            gaps = self._gaps
            while gaps and gaps[-1] >= gap:
                gaps.pop()
                serials.pop()
            gaps.append(gap)
            serials.append(serial)
        times.append(now)
        if times[self._start] < now - self._keep:  # forget the oldest (times sorted)
            start = min(bisect.bisect_left(times, now - self._keep, self._start), len(times) - 1)
            self._first_serial += start - self._start
            self._start = start
            if start > 1024 and start * 2 > len(times):  # compact now and then, amortised O(1)
                del times[:start]
                self._start = 0
                if serials is not None:
                    forgotten = bisect.bisect_left(serials, self._first_serial)
                    del serials[:forgotten], self._gaps[:forgotten]
        return serial

    def after(self, serial: int, upto: int, skip: set[int]) -> Sequence[float]:
        """The times remembered after ``serial`` to ``upto`` included, less ``skip``'s."""
        first = serial + 1 if serial >= self._first_serial else self._first_serial
        start = self._start - self._first_serial
        times = self._times[start + first : start + upto + 1]
        if not skip:
            return times
        return [when for s, when in enumerate(times, start=first) if s not in skip]

    def later(self, serial: int, skip: set[int]) -> tuple[Sequence[float], float | None]:
        """The times remembered after ``serial``, less ``skip``'s, and with nothing skipped the
        smallest gap between two in a row (inf: fewer than two; only with ``gaps``)."""
        first = serial + 1 if serial >= self._first_serial else self._first_serial
        times = self._times[self._start + first - self._first_serial :]
        if skip:
            return [when for s, when in enumerate(times, start=first) if s not in skip], None
        if len(times) < 2:
            return times, math.inf
        serials = self._gap_serials
        assert serials is not None
        return times, self._gaps[bisect.bisect_left(serials, first + 1)]

    def count_in_window(self, serial: int, *, period: float) -> int | None:
        """Events up to and including ``serial`` in the ``period`` seconds that end with it (None:
        that window reaches back beyond what is remembered)."""
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


class WindowLog:
    """Which recent permits may still count in the server's window: each holds a place until
    ``window`` seconds after its answer (until then, ``unanswered`` after its grant)."""

    __slots__ = ("_queues", "_release", "_unanswered", "_window")

    def __init__(self, *, window: float, unanswered: float) -> None:
        self._window = window
        self._unanswered = unanswered
        self._release: dict[int, float] = {}  # serial -> when its place frees up
        # Release times (and serials) set at grants, then at answers: each queue in time order
        # as the clock gives them, so no heap; stale entries skipped.
        self._queues: tuple[tuple[deque[float], deque[int]], ...] = (
            (deque(), deque()),
            (deque(), deque()),
        )

    def grant(self, serial: int, now: float) -> None:
        """A permit was granted at ``now``: it takes a place until its answer."""
        self._release[serial] = when = now + self._unanswered + self._window
        times, serials = self._queues[0]
        times.append(when)
        serials.append(serial)

    def answered(self, serial: int, now: float) -> None:
        """The permit's answer came at ``now``: its place frees a window later."""
        release = self._release.get(serial)
        if release is not None and release > now:  # else its place is free already
            self._release[serial] = when = now + self._window
            times, serials = self._queues[1]
            times.append(when)
            serials.append(serial)

    def forget(self, serial: int) -> None:
        """The permit's request never reached the server: its place is free."""
        self._release.pop(serial, None)

    def opens_at(self, *, now: float, places: int) -> float:
        """When a new permit may be granted, ``places`` being ours: ``-inf`` if one is free."""
        release = self._release
        # Fewer places taken than ours: one is free (the due ones are released when a grant
        # fills a multiple of 256, so memory stays bounded).
        if len(release) < places and len(release) & 255:
            return -math.inf
        for times, serials in self._queues:
            while times and times[0] <= now:  # a place freed, unless its time moved since
                when = times.popleft()
                serial = serials.popleft()
                if release.get(serial) == when:
                    del release[serial]
        excess = len(release) - places
        if excess < 0:
            return -math.inf
        if excess > 0:
            return sorted(release.values())[excess]  # others took places: rare, and short-lived
        first = math.inf  # the next place to free up: times whose place moved skipped for good
        for times, serials in self._queues:
            while times and release.get(serials[0]) != times[0]:
                times.popleft()
                serials.popleft()
            if times and times[0] < first:
                first = times[0]
        return first


class LocalRateLimiter:
    """Paces one process's requests to one token's quota and follows the server's answers
    (the model: the rate-limits guide), for the tasks of one event loop (asyncio or trio).

    Args:
        limit: A plan, its name, a :class:`RateLimit` or a quota text (``"100/6s"``).
        headroom: Fraction of the interval added between permits, ``0 < headroom <= 0.5``.
        default_pause: Seconds to pause after a 429 that names no time (default one period).
        clock: Source of timestamps; it must move with the event loop's.

    Raises:
        ConfigurationError: On an unknown plan name, a headroom out of range or a negative pause.
    """

    def __init__(
        self,
        limit: str | Plan | RateLimit = "free",
        *,
        headroom: float = DEFAULT_HEADROOM,
        default_pause: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._limit = resolve_rate_limit(limit)
        if not 0.0 < headroom <= 0.5:
            raise ConfigurationError(f"headroom must be in (0, 0.5], got {headroom!r}")
        if default_pause is not None and not default_pause >= 0:
            raise ConfigurationError(f"default_pause must be >= 0 seconds, got {default_pause!r}")
        self._default_pause = default_pause
        self._clock = clock or DEFAULT_CLOCK
        period = self._limit.period
        self._estimate = Estimate(self._limit, headroom)
        self._line: SlotLine[Permit] = SlotLine(self._clock.monotonic)
        self._history = TimeLog(keep=3 * period, gaps=True)  # grant times, by serial
        self._answered = TimeLog(keep=3 * period)  # when answers came
        self._half = self._limit.requests // 2  # a Remaining from which on a bucket is a window
        # A request reaches the server within a period of its permit (the client's timeouts).
        self._window = WindowLog(window=period * (1 + headroom), unanswered=period)
        # Unanswered permits, oldest first: (grant time, answers read before the grant).
        self._pending: dict[int, tuple[float, int]] = {}
        self._answers = self._granted = self._server_pauses = self._rate_limited = 0  # counters
        self._given_back: set[int] = set()  # permits whose request never reached the server
        self._woken: anyio.Event | None = None  # set when the leader's wait may end sooner

    @property
    def limit(self) -> RateLimit:
        """The quota being enforced."""
        return self._limit

    @property
    def headroom(self) -> float:
        """Fraction of the interval added between permits."""
        return self._estimate.headroom

    @property
    def estimate(self) -> Estimate:
        """What the answers so far say of the server's quota (a snapshot)."""
        return self._estimate.copy()

    @property
    def rate(self) -> float:
        """The pace in permits per second (the plan's, less 429s' halvings and others' use)."""
        return self._estimate.pace

    def __repr__(self) -> str:
        return (
            f"LocalRateLimiter({self._limit.text}, headroom={self._estimate.headroom:g}, "
            f"granted={self._granted}, waiting={len(self._line)})"
        )

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait until one more request may be sent without exceeding the quota (cancelled, it
        takes no permit); report the answer to the permit with :meth:`observe`."""
        if not self._line.waiters:  # nobody goes first: a permit due now needs no waiter
            now = self._clock.monotonic()
            if self._due(now) <= now:
                self._granted += 1
                return self._issue(now)
        permit = await self._line.wait_turn(int(priority), self._next_slot)
        assert permit is not None  # the local line always hands a permit
        self._granted += 1
        return permit

    async def _next_slot(self, _priority: int) -> Permit:
        while True:
            now = self._clock.monotonic()
            when = self._due(now)
            if when <= now:
                return self._issue(now)
            # An answer may allow more sooner; a lost request frees its place after a period.
            self._woken = anyio.Event()
            with anyio.move_on_after(min(when - now, self._limit.period)):
                await self._woken.wait()

    def _due(self, now: float) -> float:
        """When the next permit may go (``now`` or later): the pace and the window's places."""
        pending = self._pending
        # Permits a period old and unanswered reached the server, if at all: forgotten.
        lost = now - self._limit.period
        while pending:
            serial = next(iter(pending))
            if pending[serial][0] > lost:
                break
            del pending[serial]
        estimate = self._estimate
        when = ready_at(estimate, now=now)
        opens = self._window.opens_at(now=now, places=estimate.places)
        if opens > when:
            when = opens
        if len(pending) >= estimate.size:
            oldest = next(iter(pending.values()))[0]
            when = max(when, held_until(estimate, unanswered=len(pending), oldest=oldest, now=now))
        return when

    def _issue(self, now: float) -> Permit:
        serial = self._history.add(now)
        self._window.grant(serial, now)
        self._pending[serial] = (now, self._answers)
        grant(self._estimate, now=now)
        return Permit(now, serial)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Read an answer's status and rate-limit headers into the estimate, as soon as it is
        read (the round trip is taken from the permit to now)."""
        now = self._clock.monotonic()
        permit = feedback.permit
        serial = permit.serial
        granted_at = permit.granted_at
        pending = self._pending
        _, answers_then = pending.pop(serial, (0.0, -1))
        overlapped = answers_then != self._answers
        self._answers += 1
        self._answered.add(now)
        self._window.answered(serial, now)
        rate_limited = feedback.status_code == 429
        if rate_limited:
            self._rate_limited += 1
        estimate = self._estimate
        serial_before = estimate.serial
        hold_before = estimate.hold_until
        between = own_in_window = own_at_most = later_gap = None
        later: Sequence[float] = ()
        earlier: list[float] = []
        remaining = feedback.remaining
        if remaining is not None:
            history, given_back = self._history, self._given_back
            if 0 < serial_before < serial and estimate.in_order:
                between = history.after(serial_before, serial, given_back)
            later, later_gap = history.later(serial, given_back)
            for s, (when, _) in pending.items():  # in grant order
                if s >= serial:
                    break
                earlier.append(when)
            # Only a window's or an empty answer's others matter (the answer makes a bucket a
            # window only if Remaining + 1, its new size, is more than half the quota).
            if estimate.is_window or not remaining or remaining >= self._half:
                period = self._limit.period
                own_in_window = history.count_in_window(serial, period=period)
                # Answered since a period before its grant, or on its way: maybe in its window.
                own_at_most = self._answered.count_after(granted_at - period) + len(pending)
        read_answer(
            estimate,
            serial,
            granted_at,
            now,
            feedback.status_code,
            remaining,
            feedback.reset_after,
            feedback.retry_after,
            between,
            earlier,
            own_in_window,
            own_at_most,
            later,
            overlapped,
            later_gap,
            default_pause=self._default_pause,
        )
        given_back = self._given_back
        if given_back and estimate.serial > serial_before:
            given_back.difference_update([s for s in given_back if s <= estimate.serial])
        if rate_limited and hold_before <= now < estimate.hold_until:
            self._server_pauses += 1
        if self._woken is not None:
            self._woken.set()

    def give_back(self, permit: Permit) -> None:
        """The request sent under ``permit`` never reached the server: its place in the window
        frees at once, and the pace takes it as never granted."""
        serial = permit.serial
        if self._pending.pop(serial, None) is None:
            return  # answered, lost or given back already
        self._window.forget(serial)
        given_back = self._given_back
        given_back.add(serial)
        if len(given_back) > 4096:  # no answer with headers came for long: forget the oldest
            given_back.difference_update(sorted(given_back)[:2048])
        self._estimate.tat -= 1.0 / self._estimate.pace  # its room back in the bucket
        if self._woken is not None:
            self._woken.set()

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters (``server_pauses``: the 429 pauses that began);
        outside the event loop too, where no pause is current."""
        try:
            now = self._clock.monotonic()
        except RuntimeError:  # no running event loop: whatever pause there was is over
            now = math.inf
        hold = self._estimate.hold_until
        return LimiterStatistics(
            limit=self._limit,
            permits_granted=self._granted,
            waiting=len(self._line),
            total_wait_time=self._line.total_wait,
            server_pauses=self._server_pauses,
            rate_limited_responses=self._rate_limited,
            paused_until=hold if hold > now else None,
            stalled_for=self._line.stalled_for(now),
        )
