"""Adaptive pacing: as much at once as the server's own ``X-RateLimit-Remaining`` says it holds.

Servers count a quota in different ways. A fixed or sliding window admits the whole quota at
once and says so (``Remaining`` starts near the quota); a leaky bucket (GCRA, nginx
``limit_req`` with a small ``burst``) admits only what its bucket holds and refills it at the
quota's rate (``Remaining`` never above the burst). :class:`AdaptivePacing` sends as if the
server were a bucket, of the size and level its answers show:

- **Size**: one more than the largest ``Remaining`` seen (1 until one is seen, so the first
  permits go out evenly), never more than the quota.
- **Level**: what the bucket will hold when a request granted now arrives. Each grant takes
  one; between answers it refills at the quota's rate less the headroom (a bucket's sustained
  rate) up to the size. Each answer that carries ``Remaining`` compares it with what the level
  said when that request was granted and moves the level by the difference (the server's word
  overrides our estimate), less what newer answers already moved it by and less the requests
  granted before it still unanswered (it may have overtaken them; in flight, they count as
  spent). In steady state that difference is what the bucket refilled while the request
  travelled, so no answer is needed before the next request goes.
- **Margins**: a permit is granted when the level holds one plus a reserve: one more once the
  bucket holds three or more (requests that overtake each other on the way), more while the
  answers' latencies spread (requests that travel faster than the ones before them arrive
  bunched), and the pace is kept to what the bucket can absorb of that spread.
- **Never more than the quota in any window**, whatever the headers say: the same places as
  window pacing (:class:`~grok_imagine_async._limiting.pacing.WindowLog`) bound it. On a window
  server the refill assumed between answers does not happen, and this bound is what keeps the
  requests within the window.
- **A 429 means the estimate was wrong** (the headers lie, or someone else drains the bucket):
  the level drops to empty, and both the refill rate and the largest size believed are halved,
  growing back by a step for every answer that follows without a 429.
"""

from __future__ import annotations

import bisect
import math

from .._clock import Clock
from .pacing import LatencySpread
from .plans import RateLimit
from .protocol import RateLimitFeedback
from .strategies import HoldUntil, Wakeup, window_log

LOWEST_FACTOR = 1 / 16
"""The refill rate never drops below this share of the quota's rate after 429s."""
RECOVERY = 1 / 32
"""Share of the quota's rate the refill regains with each answer that is not a 429."""
WARM_UP = 8
"""Answers before their latencies' spread is trusted; until then, their longest latency is."""


class BucketEstimate:
    """What the server's bucket holds for a request granted now, as its answers tell. Pure.

    Each grant takes one from the estimate, which refills at the believed rate up to the size.
    Each answer compares what the server says it held after that request (``Remaining``) with
    what the estimate said when the request was granted, and moves the estimate by the
    difference, less what earlier answers already moved it by since then. In steady state that
    difference is what the bucket refilled while the request travelled, so the estimate is
    what the server will hold when a request granted now arrives.

    Example:
        >>> bucket = BucketEstimate(RateLimit(10, 10.0), headroom=0.0)
        >>> bucket.level(now=0.0)  # nothing seen yet: a bucket of one, full
        1.0
        >>> predicted, moved = bucket.take(now=0.0)
        >>> bucket.report(remaining=4, predicted=predicted, moved=moved, overtaken=0, now=0.5)
        >>> bucket.size  # it held 4 more after our request
        5.0
        >>> bucket.level(now=0.5), bucket.level(now=1.0)  # and refills one a second
        (4.5, 5.0)
    """

    __slots__ = (
        "_ceiling",
        "_factor",
        "_jitter",
        "_level",
        "_limit",
        "_moved",
        "_rate",
        "_since",
        "_size",
    )

    def __init__(self, limit: RateLimit, *, headroom: float) -> None:
        self._limit = limit
        self._rate = limit.per_second * (1 - headroom)  # the sustained rate, with a margin
        self._factor = 1.0  # share of that rate believed to refill, lowered by 429s
        self._size = 1.0
        self._ceiling = float(limit.requests)  # the largest size believed, lowered by 429s
        self._level = 1.0
        self._since = 0.0  # when _level was set (irrelevant while the bucket of one is full)
        self._moved = 0.0  # the sum of every correction answers made
        self._jitter = 0.0

    @property
    def size(self) -> float:
        """Requests the bucket is believed to hold when full."""
        return self._size

    @property
    def rate(self) -> float:
        """Requests per second the bucket is believed to refill (and we may use)."""
        rate = self._factor * self._rate
        if self._jitter > 0 and self._size >= 2:
            # Requests whose travel times differ by up to `jitter` s can reach the server
            # bunched: no more of them may go out in that time than the bucket holds.
            rate = min(rate, (self._size - 1.0) / self._jitter)
        return rate

    def follow(self, *, jitter: float) -> None:
        """Seconds by which the requests' travel times differ lately (their answers' spread)."""
        self._jitter = jitter

    @property
    def reserve(self) -> float:
        """Requests kept in the bucket beyond the one a permit takes.

        One once the bucket holds three or more, against requests that overtake each other on
        the way; more while travel times differ (:meth:`follow`), since a request that travels
        faster than the ones before it arrives before the refill the estimate counted on; never
        the whole bucket, and not for a bucket of half the quota or more.
        """
        base = 1.0 if self._size >= 3 else 0.0
        if 2 * self._size > self._limit.requests:
            # A bucket of half the quota or more is a window's count: window pacing's places
            # already keep the requests within it, bunched or not.
            return base
        return min(self._size - 1.0, max(base, float(math.ceil(self._jitter * self.rate))))

    def level(self, *, now: float) -> float:
        """Requests the bucket holds at ``now`` (negative: owed)."""
        return min(self._size, self._level + self.rate * max(0.0, now - self._since))

    def ready_at(self, *, now: float) -> float:
        """When the bucket holds one request plus the reserve (``now`` or later)."""
        need = 1.0 + self.reserve - self.level(now=now)
        if need <= 0:
            return now
        return now + need / self.rate

    def take(self, *, now: float) -> tuple[float, float]:
        """A permit was granted at ``now``: it takes one.

        Returns:
            What the bucket is believed to hold after it, and the corrections made so far:
            hand both back to :meth:`report` with the answer.
        """
        self._set(self.level(now=now) - 1.0, now)
        return self._level, self._moved

    def report(
        self, *, remaining: int, predicted: float, moved: float, overtaken: int, now: float
    ) -> None:
        """An answer says the server held ``remaining`` after counting its request.

        Args:
            remaining: ``X-RateLimit-Remaining`` of the answer.
            predicted: What :meth:`take` said the bucket held after that request.
            moved: The corrections :meth:`take` reported then.
            overtaken: Requests granted before it and still unanswered. The prediction had
                them counted first; the request may have overtaken them on the way.
            now: When the answer was observed.
        """
        self._size = max(self._size, min(self._ceiling, remaining + 1.0))
        self._correct(remaining - predicted - (self._moved - moved) - overtaken, now)
        self._recover()

    def answered(self) -> None:
        """An answer without a 429 (and maybe without headers) came back."""
        self._recover()

    def refused(self, *, predicted: float, moved: float, now: float) -> None:
        """A 429: the bucket was empty, and it refills slower or holds less than believed."""
        self._factor = max(LOWEST_FACTOR, self._factor / 2)
        self._ceiling = max(1.0, math.floor(self._size / 2))
        self._size = min(self._size, self._ceiling)
        self._correct(min(0.0, -predicted - (self._moved - moved)), now)

    def _correct(self, by: float, now: float) -> None:
        current = self.level(now=now)
        level = min(self._size, current + by)
        self._moved += level - current
        self._set(level, now)

    def _recover(self) -> None:
        self._factor = min(1.0, self._factor + RECOVERY)
        self._ceiling = min(float(self._limit.requests), self._ceiling + 1.0)

    def _set(self, level: float, now: float) -> None:
        self._level = level
        self._since = now


class AdaptivePacing:
    """Pacing that follows the server's ``Remaining``, within window pacing's bound.

    See the module docstring for the model.
    """

    reads_remaining = True

    def __init__(
        self, limit: RateLimit, *, headroom: float, clock: Clock, latency: LatencySpread
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._latency = latency
        self._bucket = BucketEstimate(limit, headroom=headroom)
        self._log = window_log(limit, headroom)
        self._wakeup = Wakeup()
        # Unanswered grants: (grant time, predicted level, corrections then), and their serials
        # in order (grants come in serial order).
        self._pending: dict[int, tuple[float, float, float]] = {}
        self._serials: list[int] = []
        self._reported = 0  # serial of the newest answer read into the estimate
        self._answers = 0
        self._longest = 0.0  # latency, over the first WARM_UP answers

    @property
    def rate(self) -> float:
        """Requests per second the server's bucket is believed to refill."""
        return self._bucket.rate

    @property
    def bucket(self) -> BucketEstimate:
        """The estimate of the server's bucket (for introspection and tests)."""
        return self._bucket

    async def wait_for_slot(self, hold_until: HoldUntil) -> None:
        """Return when the bucket holds a request, a window place is free and no pause holds."""
        while True:
            now = self._clock.monotonic()
            self._bucket.follow(jitter=self._jitter())
            when = max(self._log.opens_at(now=now), hold_until(), self._bucket.ready_at(now=now))
            if when <= now:
                return
            await self._wakeup.wait_until(self._clock, when)  # an answer may tell more sooner

    def granted(self, serial: int, *, now: float) -> None:
        """The permit takes one from the bucket and a place in the window."""
        predicted, moved = self._bucket.take(now=now)
        self._log.grant(serial, now=now)
        self._pending[serial] = (now, predicted, moved)
        self._serials.append(serial)
        self._forget_lost(now)

    def answered(self, feedback: RateLimitFeedback, *, now: float) -> None:
        """Read the answer's ``Remaining`` (or its 429) into the bucket's estimate."""
        serial = feedback.permit.serial
        if self._answers < WARM_UP:
            self._answers += 1
            self._longest = max(self._longest, now - feedback.permit.granted_at)
        pending = self._pending.pop(serial, None)
        overtaken = bisect.bisect_left(self._serials, serial)
        if pending is not None:
            del self._serials[overtaken]
        freed = self._log.answered(serial, now=now)
        if pending is None:  # answered after it was given up for lost: too old to tell
            self._bucket.answered()
        elif feedback.rate_limited:
            self._bucket.refused(predicted=pending[1], moved=pending[2], now=now)
        elif feedback.remaining is not None and serial > self._reported:
            self._reported = serial
            _, predicted, moved = pending
            self._bucket.report(
                remaining=feedback.remaining,
                predicted=predicted,
                moved=moved,
                overtaken=overtaken,
                now=now,
            )
            freed = True
        else:
            self._bucket.answered()
        if freed:
            self._wakeup.wake()

    def _jitter(self) -> float:
        """How far travel times differ: the answers' spread, once there are enough of them.

        A request takes no less than nothing and no more than its answer's latency to reach
        the server, so until the spread means something the longest latency bounds it.
        """
        spread = self._latency.spread
        return spread if self._answers >= WARM_UP else max(spread, self._longest)

    def _forget_lost(self, now: float) -> None:
        """Forget grants a period old and unanswered: they reached the server, if at all."""
        pending, serials = self._pending, self._serials
        lost = 0
        while lost < len(serials) and pending[serials[lost]][0] <= now - self._limit.period:
            del pending[serials[lost]]
            lost += 1
        if lost:
            del serials[:lost]
