"""The Redis rate limiter: one token's quota shared by every process (the Redis guide tells how),
and the local pace standing in for it while Redis is unreachable."""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Literal

import anyio
import redis.asyncio as aioredis
from aiolimiter import AsyncLimiter

from .._clock import DEFAULT_CLOCK, Clock
from .._errors import ConfigurationError, RedisUnavailableError
from .._limiting.feedback import DEFAULT_HEADROOM, Estimate, read_answer, window_tolerance
from .._limiting.line import SlotLine
from .._limiting.plans import Plan, RateLimit, resolve_rate_limit
from .._limiting.protocol import LimiterStatistics, Permit, Priority, RateLimitFeedback
from ._script import (
    ACQUIRE_SCRIPT,
    COUNT_SCRIPT,
    LIMITER_HEARTBEAT_SCRIPT,
    MICROS,
    OBSERVE_SCRIPT,
    REDIS_ERRORS,
    Connected,
    outage_like,
    to_micros,
)

__all__ = ["RedisLimiterStatistics", "RedisRateLimiter", "RedisUnavailableError"]

logger = logging.getLogger("grok_imagine_async.redis")

RECHECK = 1.0  # seconds between looks at Redis while waiting for a far slot (a deleted key wakes)


@dataclass(frozen=True, slots=True)
class RedisLimiterStatistics(LimiterStatistics):
    """:class:`~grok_imagine_async.abc.LimiterStatistics` plus the Redis side of things.

    Attributes:
        redis_calls: Script calls sent to Redis: one per permit while Redis is up, and one per
            answer whose ``Remaining`` the last count of slots does not explain.
        fallback_active: True while permits come from the local fallback limiter.
        fallbacks: Times Redis became unreachable and the fallback took over.
        recoveries: Times Redis came back and took over again.
        late_slots: Reserved slots given up because this process woke too late to use them.
        peers: Limiter instances seen using this token within the last period (self included).
    """

    redis_calls: int
    fallback_active: bool
    fallbacks: int
    recoveries: int
    late_slots: int
    peers: int


class RedisRateLimiter(Connected):
    """Paces every process that uses one API token to that token's quota, through Redis.

    Each permit reserves the next slot of a schedule kept in Redis (GCRA, no burst, on the Redis
    server's clock), ``period / requests * (1 + headroom)`` apart. Answers are read as by
    :class:`~grok_imagine_async.LocalRateLimiter`: a 429 (or a full window) pauses every
    process. Within one process, waiters are served by priority. While Redis is unreachable,
    each process paces itself alone (see ``on_unavailable``).

    Args:
        redis: A ``redis://`` URL (the limiter then owns the connection; close it with
            :meth:`aclose` or ``async with``) or a ``redis.asyncio.Redis`` client you own.
        limit: The token's quota: a :class:`~grok_imagine_async.RateLimit`, a
            :class:`~grok_imagine_async.Plan` or a plan name.
        api_key: The token whose quota is shared (only a keyed hash of it names the keys).
        on_unavailable: ``"fallback"`` (default) or ``"raise"``
            :class:`RedisUnavailableError` from :meth:`acquire`.
        fallback_share: Fraction of the plan each process may use alone while Redis is down.
            Default: one over the processes seen on the token in the last period (a quarter if
            Redis was never reached).
        fallback_probe_interval: Seconds between attempts to reach Redis while falling back.
        headroom: Extra spacing between slots, as a fraction of the plan's interval.
        key_prefix: Prefix of the Redis keys (the token hash follows it).
        clock: Time source for permits and statistics (the pacing itself uses Redis's clock).

    Raises:
        ConfigurationError: If an argument is out of range.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        limit: RateLimit | Plan | str,
        api_key: str,
        on_unavailable: Literal["fallback", "raise"] = "fallback",
        fallback_share: float | None = None,
        fallback_probe_interval: float = 2.0,
        headroom: float = DEFAULT_HEADROOM,
        key_prefix: str = "grok-imagine:ratelimit",
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        if on_unavailable not in ("fallback", "raise"):
            raise ConfigurationError(
                f"on_unavailable must be 'fallback' or 'raise', got {on_unavailable!r}"
            )
        if fallback_share is not None and not 0 < fallback_share <= 1:
            raise ConfigurationError(f"fallback_share must be in (0, 1], got {fallback_share!r}")
        if not 0 <= headroom < 1:
            raise ConfigurationError(f"headroom must be in [0, 1), got {headroom!r}")
        if not fallback_probe_interval > 0:
            raise ConfigurationError("fallback_probe_interval must be positive seconds")
        self._limit = resolve_rate_limit(limit)
        base = self._connect(redis, api_key, key_prefix)
        self._keys = [f"{base}:{name}" for name in ("tat", "paused", "peers", "slots")]
        self._tat, self._paused, _, self._slots = self._keys  # what ACQUIRE_SCRIPT takes
        self._beats = f"{base}:beats"
        self._member = uuid.uuid4().hex[:16]  # names this instance among the token's peers
        self._on_unavailable, self._fallback_share = on_unavailable, fallback_share
        self._probe_interval, self._headroom = fallback_probe_interval, headroom
        self._estimate = Estimate(self._limit, headroom)
        # Beyond the least tolerance (no jitter), an answer may read as someone else's.
        self._least_tolerance = window_tolerance(self._estimate)
        self._clock = clock
        # (answer time, latency) over two periods, latencies decreasing: a sliding max in O(1).
        self._latencies: deque[tuple[float, float]] = deque()
        self._line: SlotLine[None] = SlotLine(self._clock.monotonic)
        self._pending_slot: float | None = None  # loop time of a reserved slot nobody took yet
        self._fallback: _Fallback | None = None
        self._peers: int | None = None  # as last counted by Redis
        self._beating = 0  # processes whose heartbeat Redis saw in the last period
        self._sent_in_window = 0  # every process's slots in the last period, as last counted
        self._unshared_until = -math.inf  # until then, locally paced requests may still count
        # How late a slot may still be used: half the jitter the headroom absorbs.
        self._late_limit = max(headroom * self._limit.period / 2, self._interval)
        self._pause_end = -math.inf  # loop time until which a server-ordered pause holds
        self._paused_until = -math.inf  # the same on self._clock, for statistics
        self._serial = self._server_pauses = self._rate_limited = 0
        self._fallbacks = self._recoveries = self._late_slots = 0

    @property
    def limit(self) -> RateLimit:
        """The quota shared by every process using this token."""
        return self._limit

    @property
    def estimate(self) -> Estimate:
        """What the answers this process read say of the server's quota (a snapshot)."""
        return self._estimate.copy()

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait for this process's turn on the shared schedule (cancelled, it takes no slot).

        Args:
            priority: Among this process's waiters, :attr:`Priority.POLL` goes first.

        Raises:
            RedisUnavailableError: With ``on_unavailable="raise"``, if Redis cannot be reached.
        """
        await self._line.wait_turn(int(priority), self._next_slot)
        self._serial += 1
        return Permit(granted_at=self._clock.monotonic(), serial=self._serial)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Share what the server said about the quota with every process using the token: a
        429 (or a full window) pauses them all, a ``Remaining`` lower than every process's slots
        explain slows the shared pace. Never raises for an unreachable Redis."""
        now, permit, period = self._clock.monotonic(), feedback.permit, self._limit.period
        latencies = self._latencies
        while latencies and latencies[-1][1] <= now - permit.granted_at:
            latencies.pop()
        latencies.append((now, now - permit.granted_at))
        while latencies[0][0] < now - 2 * period:
            latencies.popleft()
        estimate = self._estimate
        hold_before = estimate.hold_until
        # Every process's slots, unless requests paced outside Redis may still count.
        unshared = self._fallback is not None or anyio.current_time() < self._unshared_until
        own = None if unshared else self._sent_in_window
        at_most, remaining = None, feedback.remaining
        gone = None if own is None or remaining is None else self._limit.requests - own - remaining
        if gone is not None and gone > self._least_tolerance:
            # More gone than the last period's slots explain: count the slots the server may
            # have counted with it (due since a period and the longest latency before it).
            since = permit.granted_at - period
            slowest = next((lat for when, lat in latencies if when > since), 0.0)
            lookback = min(2 * period, now - since + slowest)
            try:
                at_most = int(await self._run(COUNT_SCRIPT, [self._slots], [to_micros(lookback)]))
            except REDIS_ERRORS as exc:
                logger.log(_level(exc), "the slots the server counted are unknown: %r", exc)
        read_answer(
            estimate,
            serial=permit.serial,
            granted_at=permit.granted_at,
            now=now,
            status_code=feedback.status_code,
            remaining=remaining,
            reset_after=feedback.reset_after,
            retry_after=feedback.retry_after,
            own_in_window=own,
            own_at_most=at_most,
        )
        if feedback.rate_limited:
            self._rate_limited += 1
        if estimate.hold_until <= max(hold_before, now):
            return
        pause = estimate.hold_until - now
        self._server_pauses += 1
        self._note_pause(pause)
        if self._fallback is not None and self._fallback.degraded:
            return
        try:
            raw = await self._run(OBSERVE_SCRIPT, [self._paused], [to_micros(pause)])
        except REDIS_ERRORS as exc:  # the pause holds here; the next acquire deals with Redis
            logger.log(_level(exc), "server feedback not shared through Redis: %r", exc)
            return
        self._note_pause(int(raw[0]) / MICROS)

    def give_back(self, permit: Permit) -> None:
        """Nothing is given back: the shared schedule has moved on, and the cost is one slot."""

    async def heartbeat(self) -> int:
        """Tell the token's other processes that this one is alive, busy or idle (so that
        while Redis is down the busy ones do not each take too large a share); the processes
        seen within the last period, this one included. Call it more often than once a period
        (a :class:`RedisJobStore` given this limiter does); Redis errors are the caller's."""
        period = to_micros(self._limit.period)
        peers = await self._run(LIMITER_HEARTBEAT_SCRIPT, [self._beats], [period, self._member])
        self._beating = max(1, int(peers))
        return self._beating

    def statistics(self) -> RedisLimiterStatistics:
        """A frozen snapshot of this process's counters."""
        now = self._clock.monotonic()
        return RedisLimiterStatistics(
            limit=self._limit,
            permits_granted=self._serial,
            waiting=len(self._line),
            total_wait_time=self._line.total_wait,
            server_pauses=self._server_pauses,
            rate_limited_responses=self._rate_limited,
            paused_until=self._paused_until if self._paused_until > now else None,
            stalled_for=self._line.stalled_for(now),
            redis_calls=self._calls,
            fallback_active=self._fallback is not None and self._fallback.degraded,
            fallbacks=self._fallbacks,
            recoveries=self._recoveries,
            late_slots=self._late_slots,
            peers=self._known_peers() or 1,
        )

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    def __repr__(self) -> str:  # neither the token nor the URL (it may hold a password)
        mode = "fallback" if self.statistics().fallback_active else "redis"
        return f"RedisRateLimiter(limit={self._limit!r}, key={self._tat!r}, mode={mode!r})"

    @property
    def _interval(self) -> float:
        """Seconds between two shared slots: one over the interpreter's pace."""
        return 1.0 / self._estimate.shared_pace

    async def _next_slot(self, priority: int) -> None:
        """Return when this process's next slot is due."""
        pending, self._pending_slot = self._pending_slot, None
        gave_up = False
        if pending is not None and pending >= anyio.current_time():
            if await self._sleep_until(pending) == "on time":
                return
            self._late_slots += 1
            gave_up = True
        fallback = self._fallback
        if fallback is not None and not await fallback.slot(paused_until=self._pause_end):
            return
        while True:
            sent_at = anyio.current_time()
            try:
                rejoin = 0  # since recovery, Redis counts the peers back over the time since
                if fallback is not None and not fallback.degraded:
                    rejoin = to_micros(max(sent_at - fallback.recovered_at, 1e-6))
                times = [to_micros(self._interval), to_micros(self._limit.period)]
                raw = await self._run(ACQUIRE_SCRIPT, self._keys, [*times, self._member, rejoin])
            except REDIS_ERRORS as exc:
                said = self._failure("run the rate limiter", exc)
                if not outage_like(exc):  # a password or ACL to fix, not an outage to ride out
                    raise ConfigurationError(said) from exc
                if self._on_unavailable == "raise":
                    raise RedisUnavailableError(f"{said}; on_unavailable='raise'") from exc
                if fallback is not None:
                    fallback.recovered_at = math.inf
                    fallback.next_probe = anyio.current_time() + self._probe_interval
                    return
                await self._engage_fallback(said).slot(paused_until=self._pause_end)
                return
            delay, pause_left, peers, sent, rejoined, reset = (int(value) for value in raw)
            if reset:
                logger.warning(
                    "the shared rate-limit state in Redis (%s) was further ahead than %d "
                    "peers can explain (a failover to a replica whose clock is behind, or "
                    "another writer); it was reset to now",
                    self._tat,
                    max(1, peers),
                )
            self._peers, self._sent_in_window = max(1, peers), sent
            self._note_pause(pause_left / MICROS)
            if fallback is not None:
                if fallback.degraded:
                    fallback.recovered_at = anyio.current_time()
                    self._recoveries += 1
                    logger.warning("Redis reachable again; the shared limit is back in force")
                elif (
                    rejoined >= fallback.peers
                    or anyio.current_time() - fallback.recovered_at >= fallback.hand_back_cap
                ):
                    self._fallback = fallback = None
                    self._unshared_until = anyio.current_time() + self._limit.period
            # The slot counts from halfway through the call, give or take half its time. A
            # second late slot is used anyway: a loop always that busy still gets permits.
            half = (anyio.current_time() - sent_at) / 2
            outcome = await self._sleep_until(sent_at + half + delay / MICROS, late_by=half)
            if outcome == "erased":
                continue  # the state was deleted while we waited: reserve again
            if outcome == "on time" or gave_up:
                return
            self._late_slots += 1
            gave_up = True

    async def _sleep_until(self, deadline: float, *, late_by: float = 0.0) -> str:
        """Sleep until a reserved slot (``late_by`` more, it may be): ``"on time"``, ``"late"``
        (among the next processes' slots) or ``"erased"`` (an operator deleted the state)."""
        self._pending_slot = deadline  # cancelled, the slot stays for the next leader
        while (left := deadline - anyio.current_time()) > RECHECK:
            await anyio.sleep(RECHECK)
            try:
                exists = await self._redis.exists(self._tat)
            except REDIS_ERRORS:
                continue  # the next reservation deals with Redis
            if not exists:
                self._pending_slot = None
                return "erased"
        await anyio.sleep(max(0.0, left))
        self._pending_slot = None
        late = anyio.current_time() - deadline + late_by
        return "on time" if late <= self._late_limit else "late"

    def _engage_fallback(self, said: str) -> _Fallback:
        peers = self._known_peers()
        share = self._fallback_share or (0.25 if peers is None else 1.0 / peers)
        limit = fallback_limit(self._limit, share)
        logger.warning(
            "%s; pacing this process alone at %d requests per %gs (%.0f%% of the plan) until "
            "it answers again",
            said,
            limit.requests,
            limit.period,
            share * 100,
        )
        self._fallbacks += 1
        # Up to one slot per peer may still be reserved ahead in the shared schedule.
        ahead = ((peers or math.ceil(1 / share)) - 1) * self._interval
        interval = limit.period * (1.0 + self._headroom) / limit.requests
        now, probe = anyio.current_time(), self._probe_interval
        self._fallback = _Fallback(
            AsyncLimiter(1, interval),
            now + ahead + interval,
            now + probe,
            peers or 1,
            max(limit.period, probe + 2 * interval),
        )
        return self._fallback

    def _known_peers(self) -> int | None:
        # Busy peers show in the permits, idle ones only in the heartbeats: count both.
        known = self._peers is not None or self._beating
        return max(self._peers or 1, self._beating) if known else None

    def _note_pause(self, seconds: float) -> None:
        if seconds > 0:
            self._pause_end = max(self._pause_end, anyio.current_time() + seconds)
            self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)


def _level(exc: BaseException) -> int:
    """Log an outage quietly (the next acquire reports it) and a refusal loudly."""
    return logging.DEBUG if outage_like(exc) else logging.WARNING


def fallback_limit(limit: RateLimit, share: float) -> RateLimit:
    """``share`` of ``limit``, rounded down, and never below one request per period."""
    return RateLimit(max(1, math.floor(limit.requests * share + 1e-9)), limit.period)


@dataclass
class _Fallback:
    """The local pace while Redis is away: a leaky bucket of one request, evenly spaced, whose
    first slot (``hold_until``) waits for those the peers may still hold in the shared schedule
    (the window still counts them). Back to Redis, it holds too until as many peers have
    acquired through Redis as were active before (``peers``), or ``hand_back_cap`` passed."""

    bucket: AsyncLimiter
    hold_until: float
    next_probe: float
    peers: int
    hand_back_cap: float
    recovered_at: float = math.inf  # loop time Redis answered again (inf: it does not)

    @property
    def degraded(self) -> bool:
        """Whether Redis is believed unreachable (else the hand-back is under way)."""
        return self.recovered_at == math.inf

    async def slot(self, *, paused_until: float) -> bool:
        """Wait for the next local slot, not before ``paused_until`` (loop time); whether to
        try Redis too (it is back, or a probe is due)."""
        await anyio.sleep(max(0.0, max(self.hold_until, paused_until) - anyio.current_time()))
        await self.bucket.acquire()
        return not self.degraded or anyio.current_time() >= self.next_probe
