"""The in-process rate limiter: aiolimiter pacing, priorities, and the server's word on top.

How a permit is granted. Waiters queue by (:class:`Priority`, arrival). One of them, the *pump*,
waits for the next pacing slot on behalf of everyone and hands each slot to whoever is at the
head of the queue when it comes, so a poll that arrives late still goes before older
submissions. When the pump itself reaches the head it keeps the slot and the next waiter takes
over pumping. No background task exists: the waiters do the work, so nothing outlives them.

When the next slot comes is the pacing strategy's business (one class per ``pacing=`` mode, in
:mod:`.strategies`): the pump asks it to wait for a slot, and tells it of every grant and every
answer. The server's pauses and slowdowns are kept here and handed to the strategy as the
earliest time it may grant.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Literal, cast

from .._clock import DEFAULT_CLOCK, Clock
from .adaptive import AdaptivePacing
from .pacing import GrantHistory, LatencySpread, hold_until, jitter_tolerance, react
from .plans import Plan, RateLimit, resolve_rate_limit
from .protocol import LimiterStatistics, Permit, Priority, RateLimitFeedback
from .strategies import EvenPacing, PacingStrategy, WindowPacing

DEFAULT_HEADROOM = 0.01
"""Fraction of the period kept as a margin for latency jitter (see :class:`LocalRateLimiter`)."""

Pacing = Literal["even", "window", "adaptive"]
"""How permits are spread: evenly, up to the quota at once within a window, or as the server's
``X-RateLimit-Remaining`` says."""


class _Waiter:
    """One pending ``acquire`` call, ordered by (priority, arrival)."""

    __slots__ = ("future", "gone", "order", "priority")

    def __init__(self, priority: int, order: int) -> None:
        self.priority = priority
        self.order = order
        # Set while the waiter sleeps as a follower: resolves to its Permit, or to None when it
        # is promoted to pump.
        self.future: asyncio.Future[Permit | None] | None = None
        self.gone = False  # returned or cancelled: skip it in the queue

    def __lt__(self, other: _Waiter) -> bool:
        return (self.priority, self.order) < (other.priority, other.order)


class LocalRateLimiter:
    """Paces one process's requests to one token's quota, and obeys the server's headers.

    Guarantees, with only this process using the token: in any interval shorter than
    ``period * (1 + headroom)`` seconds at most ``requests`` permits are granted, whatever the
    arrival pattern of callers, the pacing, or the server's headers. Even pacing adds: no
    burst ever (the second permit comes one interval after the first).

    Why ``headroom=0.01`` (for even pacing; the others stretch the window by it): a request
    reaches the server some time after its permit, and that latency varies. The margin lets two
    requests' latencies differ by up to 1 % of the period (0.6 s on the real 60 s window, 60 ms
    on a 6 s test window) and the server still never sees more than ``requests`` in any of its
    windows, sliding or fixed. The same 1 % of the quota lets the pace make up for up to that
    much time lost when the event loop wakes late (a busy loop, a descheduled process), instead
    of losing it for good. Together they cost 2 %: the steady pace is ``(1 - headroom) / (1 +
    headroom)`` = 98 % of the quota. A larger headroom tolerates more jitter and uses less of
    the quota.

    How the quota is spread is the ``pacing`` strategy's choice:

    - ``"adaptive"`` (default) follows how the server counts, as its ``X-RateLimit-Remaining``
      shows: the whole quota at once from a window that says it holds it, a bucket's sustained
      rate from a leaky bucket (GCRA, nginx ``limit_req`` with a small ``burst``) whose
      ``Remaining`` is its few requests of burst. Until the first answer it paces evenly.
      Whatever the headers say, it keeps window pacing's bound (below): never more than
      ``requests`` in any window of the server. See
      :mod:`grok_imagine_async._limiting.adaptive`.
    - ``"window"`` lets permits through as fast as callers ask while fewer than ``requests`` of
      them may still count in the server's window. A request reaches the server after its
      permit and before its answer, so a permit holds its place until ``period * (1 +
      headroom)`` after its answer is observed (a period longer if no answer comes): a full
      window's quota at once, then each place again as the answers that hold them age out.
      However long the requests queue on the way, the server never sees more than
      ``requests`` in any sliding window. A leaky bucket would refuse the bursts.
    - ``"even"``: one permit every ``1 / rate`` seconds (the guarantees above), no burst ever,
      and ``Remaining`` read as a window's count. A leaky bucket's small ``Remaining`` then
      looks like another process on the token, and it slows to a crawl.

    Server feedback (:meth:`observe`) comes on top (with adaptive pacing, the 429s; it reads
    ``Remaining`` itself):

    - a 429, or a ``Remaining: 0`` that our own traffic does not explain, pauses every sender
      until the server's ``Retry-After`` / ``X-RateLimit-Reset`` (``default_pause`` when it gives
      neither), after which pacing resumes at full speed (without a burst);
    - a ``Remaining`` lower than our own traffic explains (someone else uses the token) spreads
      the permits that are left evenly until the reset, and keeps us to the share the others
      leave of a window for one period;
    - answers whose latencies vary by more than the headroom's margin (an overloaded server
      that queues requests, then sees them bunched) stretch the pacing window by that spread
      until they even out again.

    Polls (:attr:`Priority.POLL`) are served before submissions that have waited longer; within a
    priority the order is first come, first served. A cancelled ``acquire`` takes no permit and
    does not hold up the others.

    One limiter may be shared by any number of coroutines and clients of the same token, within
    one asyncio event loop (aiolimiter is asyncio-only). For several processes, use a shared
    backend implementing :class:`~grok_imagine_async.RateLimiter` instead.

    Args:
        limit: ``"free"``, ``"pro"``, ``"enterprise"``, a :class:`Plan` or a :class:`RateLimit`
            (whose ``period`` tests may scale down).
        headroom: Fraction of the period kept as jitter margin, ``0 < headroom <= 0.5``.
        default_pause: Seconds to pause after a 429 that says neither ``Retry-After`` nor
            ``X-RateLimit-Reset``; default one period, the only wait that clears any window.
        clock: Source of timestamps for permits and pauses. It must move with the event loop's
            clock (the default reads it), because waits are computed on it and slept on the loop.
        pacing: ``"adaptive"`` (default): as the server's ``Remaining`` says, within the
            quota in any window. ``"window"``: up to the quota at once within any window.
            ``"even"``: one permit every ``1 / rate`` seconds, no burst ever (see above).

    Raises:
        ValueError: On an unknown plan name or a headroom out of range.

    Example:
        >>> limiter = LocalRateLimiter("pro")
        >>> async def send() -> None:
        ...     permit = await limiter.acquire()
        ...     ...  # send the request, then report the answer's headers:
        ...     await limiter.observe(RateLimitFeedback(permit, 200, remaining=998))
    """

    def __init__(
        self,
        limit: str | Plan | RateLimit = "free",
        *,
        headroom: float = DEFAULT_HEADROOM,
        default_pause: float | None = None,
        clock: Clock | None = None,
        pacing: Pacing = "adaptive",
    ) -> None:
        self._limit = resolve_rate_limit(limit)
        if pacing not in ("even", "window", "adaptive"):
            raise ValueError(f"pacing must be 'even', 'window' or 'adaptive', got {pacing!r}")
        self._pacing = pacing
        if not 0.0 < headroom <= 0.5:
            raise ValueError(f"headroom must be in (0, 0.5], got {headroom!r}")
        if default_pause is not None and not default_pause >= 0:
            raise ValueError(f"default_pause must be >= 0 seconds, got {default_pause!r}")
        self._headroom = headroom
        self._default_pause = self._limit.period if default_pause is None else default_pause
        self._clock = clock or DEFAULT_CLOCK
        self._latency = LatencySpread()  # of permit-to-answer times
        self._margin = jitter_tolerance(self._limit, headroom)
        self._strategy = self._new_strategy()
        self._queue: list[_Waiter] = []
        self._order = itertools.count()
        self._pump: _Waiter | None = None
        self._history = GrantHistory(keep=3 * self._limit.period)
        self._last_grant = -math.inf
        self._paused_until = -math.inf
        self._slowdowns: tuple[tuple[float, float], ...] = ()  # (spacing, until) pairs
        self._slowdowns_serial = 0  # serial of the answer that set them
        self._granted = 0
        self._waiting = 0
        self._total_wait = 0.0
        self._server_pauses = 0
        self._rate_limited = 0

    @property
    def limit(self) -> RateLimit:
        """The quota being enforced."""
        return self._limit

    @property
    def headroom(self) -> float:
        """The fraction of the period kept as jitter margin."""
        return self._headroom

    @property
    def pacing(self) -> Pacing:
        """``"adaptive"``, ``"window"`` or ``"even"`` (see the class docstring)."""
        return self._pacing

    @property
    def rate(self) -> float:
        """The steady pace in permits per second when the server asks for nothing slower.

        Lower than usual while recent answers took unevenly long (see :meth:`observe`).
        """
        return self._strategy.rate

    def __repr__(self) -> str:
        limit = self._limit
        return (
            f"LocalRateLimiter({limit.requests}/{limit.period:g}s, headroom={self._headroom:g}, "
            f"granted={self._granted}, waiting={self._waiting})"
        )

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait until one more request may be sent without exceeding the quota.

        Cancelling a waiting call consumes no permit.

        Args:
            priority: :attr:`Priority.POLL` waiters go before :attr:`Priority.SUBMIT` ones.

        Returns:
            The permit; report the answer to it with :meth:`observe`.
        """
        waiter = _Waiter(int(priority), next(self._order))
        heapq.heappush(self._queue, waiter)
        self._waiting += 1
        started = self._clock.monotonic()
        try:
            permit = await self._take_turn(waiter)
        finally:
            waiter.gone = True
            self._waiting -= 1
            self._total_wait += max(0.0, self._clock.monotonic() - started)
        self._granted += 1
        return permit

    async def _take_turn(self, waiter: _Waiter) -> Permit:
        loop = asyncio.get_running_loop()
        while True:
            if self._pump is None:
                self._pump = waiter
            if self._pump is waiter:
                try:
                    return await self._run_pump(waiter)
                finally:
                    waiter.gone = True  # before promoting, so it cannot promote itself
                    self._pump = None
                    self._promote()
            future: asyncio.Future[Permit | None] = loop.create_future()
            waiter.future = future
            try:
                outcome = await future
            except asyncio.CancelledError:
                waiter.gone = True
                if future.done() and not future.cancelled():
                    # Served or promoted in the instant before the cancellation landed: pass
                    # the slot or the pump role on, so nobody waits for a dead task.
                    self._pass_on(future.result(), waiter)
                raise
            finally:
                waiter.future = None
            if outcome is not None:
                return outcome
            # Promoted: self._pump is now this waiter; loop round to pump.

    async def _run_pump(self, me: _Waiter) -> Permit:
        """Take pacing slots and hand each to the head of the queue until ``me`` gets one."""
        while True:
            await self._wait_for_slot()
            permit = self._issue()
            head = self._live_head()
            if head is None or head is me:
                if head is me:
                    heapq.heappop(self._queue)
                return permit
            heapq.heappop(self._queue)
            cast("asyncio.Future[Permit | None]", head.future).set_result(permit)
            head.future = None

    async def _wait_for_slot(self) -> None:
        await self._strategy.wait_for_slot(self._hold_until)

    def _new_strategy(self) -> PacingStrategy:
        if self._pacing == "window":
            return WindowPacing(self._limit, headroom=self._headroom, clock=self._clock)
        if self._pacing == "adaptive":
            return AdaptivePacing(self._limit, headroom=self._headroom, clock=self._clock)
        return EvenPacing(
            self._limit, headroom=self._headroom, clock=self._clock, latency=self._latency
        )

    def _hold_until(self) -> float:
        return hold_until(
            paused_until=self._paused_until,
            last_grant=self._last_grant,
            slowdowns=self._slowdowns,
        )

    def _issue(self) -> Permit:
        now = self._clock.monotonic()
        self._last_grant = now
        serial = self._history.add(now)
        self._strategy.granted(serial, now=now)
        return Permit(granted_at=now, serial=serial)

    def _live_head(self) -> _Waiter | None:
        """The first waiter still interested in a permit; drops the cancelled ones on the way."""
        queue = self._queue
        while queue:
            head = queue[0]
            if head.gone or (head.future is not None and head.future.done()):
                heapq.heappop(queue)
                continue
            return head
        return None

    def _promote(self) -> None:
        """Make the first live follower the pump (there is none right now)."""
        head = self._live_head()
        if head is None:
            return
        self._pump = head
        future = cast("asyncio.Future[Permit | None]", head.future)
        head.future = None  # the waiter keeps its own reference; the queue sees a pump
        future.set_result(None)

    def _pass_on(self, outcome: Permit | None, leaving: _Waiter) -> None:
        if outcome is None:  # we were promoted: someone else must pump
            if self._pump is leaving:
                self._pump = None
                self._promote()
            return
        head = self._live_head()
        if head is not None and head is not self._pump and head.future is not None:
            heapq.heappop(self._queue)
            head.future.set_result(outcome)
            head.future = None
        # Otherwise only the pump is left, and it is already working on the next slot: this
        # slot goes unused, which can only make the pacing safer.

    # -- server feedback -------------------------------------------------------------------

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Take the server's word on the quota into account (it overrides local estimates).

        A 429, or a ``Remaining`` lower than our own traffic explains, pauses or slows every
        sender (see the class docstring). Requests granted after ``feedback.permit`` are
        counted as already spent from the server's ``Remaining``. The time from the permit to
        now is taken as the request's latency: call this as soon as the answer is read.

        Args:
            feedback: The answer's status and rate-limit headers, with the permit it was sent
                under.
        """
        now = self._clock.monotonic()
        serial = feedback.permit.serial
        self._strategy.answered(feedback, now=now)
        if feedback.rate_limited:
            self._rate_limited += 1
        self._latency.add(max(0.0, now - feedback.permit.granted_at))
        # A strategy that reads Remaining itself (adaptive pacing) knows a small Remaining for
        # a small bucket; read as a window's count, it would look like someone else's traffic.
        remaining = None if self._strategy.reads_remaining else feedback.remaining
        tolerance = jitter_tolerance(self._limit, self._headroom, spread=self._latency.spread)
        reaction = react(
            limit=self._limit,
            rate=self._strategy.rate,
            rate_limited=feedback.rate_limited,
            remaining=remaining,
            reset_after=feedback.reset_after,
            retry_after=feedback.retry_after,
            own_in_window=self._history.count_in_window(serial, period=self._limit.period),
            sent_since=max(0, self._history.last_serial - serial),
            tolerance=tolerance,
            margin=self._margin,
            default_pause=self._default_pause,
        )
        if reaction.pause is not None:
            until = now + reaction.pause
            if until > self._paused_until:
                if self._paused_until <= now:
                    self._server_pauses += 1
                self._paused_until = until
        if reaction.slowdowns:
            self._slowdowns = tuple((s.spacing, now + s.lasting) for s in reaction.slowdowns)
            self._slowdowns_serial = serial
        elif (
            remaining is not None and not feedback.rate_limited and serial > self._slowdowns_serial
        ):
            # A newer answer no longer shows anyone else on the token: back to full pace.
            self._slowdowns = ()

    # -- introspection ---------------------------------------------------------------------

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters.

        ``server_pauses`` counts pauses that began (a 429 arriving during a pause extends it
        without counting again); ``total_wait_time`` includes cancelled waits. Callable outside
        the event loop too (after ``anyio.run`` returned), where no pause is current.
        """
        try:
            now = self._clock.monotonic()
        except RuntimeError:  # no running event loop: whatever pause there was is over
            now = math.inf
        return LimiterStatistics(
            limit=self._limit,
            permits_granted=self._granted,
            waiting=self._waiting,
            total_wait_time=self._total_wait,
            server_pauses=self._server_pauses,
            rate_limited_responses=self._rate_limited,
            paused_until=self._paused_until if self._paused_until > now else None,
        )
