"""Adaptive pacing: as much at once as the server's own ``X-RateLimit-Remaining`` says it holds.

Servers count a quota in different ways. A fixed or sliding window admits the whole quota at
once and says so (``Remaining`` starts near the quota); a leaky bucket (GCRA, nginx
``limit_req`` with a small ``burst``) admits only what its bucket holds and refills it at the
quota's rate (``Remaining`` never above the burst). :class:`AdaptivePacing` sends as if the
server were a bucket, of the size and level its answers show:

- **Size**: one more than the largest ``Remaining`` seen (1 until one is seen, so the first
  permits go out evenly), never more than the quota.
- **Level**: what the server's bucket holds, as the newest answer's ``Remaining`` says (the
  server's word overrides our estimate), refilled since at the quota's rate less the headroom
  (a bucket's sustained rate), up to the size. A full window (``Remaining: 0`` from a bucket
  of half the quota or more) refills at its ``X-RateLimit-Reset``, not before.
- **In flight**: requests granted and not yet answered count as already taken from it, so a
  permit is granted when the level less those holds one more. The first request waits for
  its answer alone; if answers carry no ``Remaining``, permits go out evenly at that rate, as
  from a bucket of one.
- **Overtaking**: a request still in flight when a newer one's answer was read may reach the
  server after it, so when its own answer comes it is taken from the level then. And since
  requests reach the server in any order, an answer can raise the level only if no other
  answer was read while its request was on its way; otherwise it can only lower it. One more
  request is kept in reserve once the bucket holds three or more.

  However the requests in flight bunch on the way, the server's bucket holds room for all of
  them and the new one: it holds at least what the newest answer said, plus its refill since,
  less what arrives. No answer's latency needs to be known.
- **Never more than the quota in any window**, whatever the headers say: the same places as
  window pacing (:class:`~grok_imagine_async._limiting.pacing.WindowLog`) bound it. On a window
  server the refill assumed between answers does not happen, and this bound is what keeps the
  requests within the window.
- **A 429 means the estimate was wrong** (the headers lie, or someone else drains the bucket):
  the level drops to empty, and both the refill rate and the largest size believed are halved,
  growing back by a step for every answer that follows without a 429.
"""

from __future__ import annotations

import math

from .._clock import Clock
from .plans import RateLimit
from .protocol import RateLimitFeedback
from .strategies import HoldUntil, Wakeup, window_log

LOWEST_FACTOR = 1 / 16
"""The refill rate never drops below this share of the quota's rate after 429s."""
RECOVERY = 1 / 32
"""Share of the quota's rate the refill regains with each answer that is not a 429."""


class BucketEstimate:
    """What the server's bucket holds, as its answers tell. Pure.

    Example:
        >>> bucket = BucketEstimate(RateLimit(10, 10.0), headroom=0.0)
        >>> bucket.level(now=0.0)  # nothing seen yet: a bucket of one, full
        1.0
        >>> bucket.take(now=0.0)
        >>> bucket.report(remaining=4, now=0.5)  # it held 4 more after our request
        >>> bucket.size, bucket.level(now=0.5), bucket.level(now=1.0)
        (5.0, 4.0, 4.5)
        >>> bucket.ready_at(now=1.0, in_flight=3)  # 3 on the way, 1 in reserve: 0.5 short
        1.5
    """

    __slots__ = (
        "_ceiling",
        "_empty_until",
        "_factor",
        "_headerless",
        "_level",
        "_limit",
        "_rate",
        "_reported",
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
        self._empty_until = -math.inf  # a window said it is full: no refill before this
        self._reported = False  # whether any answer said what the bucket holds
        self._headerless = False  # whether an answer came back saying nothing of it first

    @property
    def size(self) -> float:
        """Requests the bucket is believed to hold when full."""
        return self._size

    @property
    def rate(self) -> float:
        """Requests per second the bucket is believed to refill."""
        return self._factor * self._rate

    @property
    def is_window(self) -> bool:
        """Whether the bucket holds half the quota or more: a window's count, not a burst."""
        return 2 * self._size > self._limit.requests

    @property
    def reserve(self) -> float:
        """Requests kept in the bucket beyond the one a permit takes (overtaking, rounding)."""
        return 1.0 if self._size >= 3 else 0.0

    def level(self, *, now: float) -> float:
        """Requests the server's bucket holds at ``now`` (requests in flight not taken)."""
        start = max(self._since, self._empty_until)
        return min(self._size, self._level + self.rate * max(0.0, now - start))

    def ready_at(self, *, now: float, in_flight: int) -> float:
        """When one more request may go, ``in_flight`` being on their way (``now`` or later).

        Until the first answer, the first request waits for it alone. If answers come back
        without saying what the bucket holds, requests in flight are not counted: the bucket
        of one then paces evenly at :attr:`rate`, as even pacing does.
        """
        taken = 0 if self._headerless and not self._reported else in_flight
        wanted = 1.0 + self.reserve + taken
        need = wanted - self.level(now=now)
        if need <= 0:
            return now
        if wanted > self._size:  # even a full bucket has no room: only answers can make it
            return math.inf
        return now + need / self.rate

    def take(self, *, now: float) -> None:
        """A permit was granted at ``now``.

        Until an answer said what the bucket holds, it also comes out of the bucket of one.
        """
        if not self._reported:
            self._set(self.level(now=now) - 1.0, now)

    def report(self, *, remaining: int, now: float, reset_after: float | None = None) -> None:
        """The newest answer says the server held ``remaining`` after counting its request.

        Args:
            remaining: ``X-RateLimit-Remaining`` of the answer.
            now: When the answer was observed (the refill since the server answered is not
                counted on).
            reset_after: ``X-RateLimit-Reset`` in seconds from now, if given.
        """
        self._reported = True
        self._size = max(self._size, min(self._ceiling, remaining + 1.0))
        self._set(min(self._size, float(remaining)), now)
        if remaining == 0 and reset_after is not None and self.is_window:
            # A full window refills at its reset, not as a bucket does: assuming otherwise would
            # send into it what another process on the token left no room for.
            until = now + min(max(0.0, reset_after), self._limit.period)
            self._empty_until = max(self._empty_until, until)
        self._recover()

    def answered(self, *, overtaken: bool = False, now: float = 0.0) -> None:
        """An answer without a 429 (and maybe without headers) came back.

        Args:
            overtaken: The request was still in flight when a newer one's answer said what
                the bucket held: the server may have counted it after that, so it is taken
                from the bucket now (it no longer counts as in flight).
            now: When the answer was observed.
        """
        if overtaken:
            self._set(self.level(now=now) - 1.0, now)
        if not self._reported:
            self._headerless = True
        self._recover()

    def lower(self, *, remaining: int, now: float, overtaken: bool = False) -> None:
        """An answer says the server held ``remaining``, but it may be older than the newest.

        Other answers were read while its request was on its way, and the server may have
        counted it on either side of theirs: it can lower the level, never raise it.
        """
        if overtaken:
            self._set(self.level(now=now) - 1.0, now)
        self._set(min(self.level(now=now), float(remaining)), now)
        self._recover()

    def lost(self, *, now: float) -> None:
        """A request was never answered: take it from the bucket now.

        The server counted it by now, maybe after the newest answer read, and it no longer
        counts as in flight.
        """
        self._set(self.level(now=now) - 1.0, now)

    def refused(self, *, now: float) -> None:
        """A 429: the bucket was empty, and it refills slower or holds less than believed."""
        self._factor = max(LOWEST_FACTOR, self._factor / 2)
        self._ceiling = max(1.0, math.floor(self._size / 2))
        self._size = min(self._size, self._ceiling)
        self._set(min(0.0, self.level(now=now)), now)

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

    def __init__(self, limit: RateLimit, *, headroom: float, clock: Clock) -> None:
        self._limit = limit
        self._clock = clock
        self._bucket = BucketEstimate(limit, headroom=headroom)
        self._log = window_log(limit, headroom)
        self._wakeup = Wakeup()
        self._pending: dict[int, float] = {}  # unanswered grants, in serial order: grant time
        self._reported = 0  # serial of the newest answer read into the estimate
        self._answers = 0  # answers read so far
        self._answers_at_grant: dict[int, int] = {}  # per unanswered grant: _answers then
        self._overtaken: set[int] = set()  # in flight and older than it when it was read

    @property
    def rate(self) -> float:
        """Requests per second the server's bucket is believed to refill."""
        return self._bucket.rate

    @property
    def bucket(self) -> BucketEstimate:
        """The estimate of the server's bucket (for introspection and tests)."""
        return self._bucket

    async def wait_for_slot(self, hold_until: HoldUntil) -> None:
        """Return when the bucket has room, a window place is free and no pause holds."""
        while True:
            now = self._clock.monotonic()
            self._forget_lost(now)
            ready = self._bucket.ready_at(now=now, in_flight=len(self._pending))
            when = max(self._log.opens_at(now=now), hold_until(), ready)
            if when <= now:
                return
            # An answer may tell more sooner; without one, a lost request frees its room after
            # a period.
            await self._wakeup.wait_until(self._clock, min(when, now + self._limit.period))

    def granted(self, serial: int, *, now: float) -> None:
        """The permit takes a place in the window and is in flight until its answer."""
        self._bucket.take(now=now)
        self._log.grant(serial, now=now)
        self._pending[serial] = now
        self._answers_at_grant[serial] = self._answers

    def answered(self, feedback: RateLimitFeedback, *, now: float) -> None:
        """Read the answer's ``Remaining`` (or its 429) into the bucket's estimate."""
        serial = feedback.permit.serial
        self._pending.pop(serial, None)
        # Another answer read while this request was on its way may come from a request the
        # server counted after this one (requests reach it in any order): then this answer is
        # not the newest word, whatever its serial.
        overlapped = self._answers_at_grant.pop(serial, self._answers) != self._answers
        self._answers += 1
        self._log.answered(serial, now=now)
        overtaken = serial in self._overtaken
        self._overtaken.discard(serial)
        if feedback.rate_limited:
            self._bucket.refused(now=now)
        elif feedback.remaining is not None and serial > self._reported:
            if overlapped:
                self._bucket.lower(remaining=feedback.remaining, now=now, overtaken=overtaken)
            else:
                self._reported = serial
                self._overtaken = {s for s in self._pending if s < serial}
                self._bucket.report(
                    remaining=feedback.remaining, now=now, reset_after=feedback.reset_after
                )
        else:
            self._bucket.answered(overtaken=overtaken, now=now)
        self._wakeup.wake()  # one fewer in flight, at least

    def _forget_lost(self, now: float) -> None:
        """Forget grants a period old and unanswered: they reached the server, if at all.

        The client's timeouts see to that (the same assumption as window pacing's places).
        """
        pending = self._pending
        while pending:
            serial = next(iter(pending))  # the oldest grant
            if pending[serial] > now - self._limit.period:
                return
            del pending[serial]
            self._answers_at_grant.pop(serial, None)
            self._overtaken.discard(serial)
            self._bucket.lost(now=now)
