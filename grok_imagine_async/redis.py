"""One API token's quota shared by every process that uses it, through Redis.

The quota belongs to the token, not to a process: four ``uvicorn`` workers or a batch split over
several machines, each pacing itself alone, would send four times the plan's rate. A
:class:`RedisRateLimiter` in each of them paces all of them as one client.

Needs the ``redis`` extra: ``pip install "grok-imagine-async[redis]"``.

Example:
    >>> from grok_imagine_async import AsyncGrokImagine
    >>> from grok_imagine_async.redis import RedisRateLimiter
    >>> limiter = RedisRateLimiter("redis://localhost:6379/0", limit="pro", api_key=token)
    >>> async with AsyncGrokImagine(api_key=token, limiter=limiter) as client:  # doctest: +SKIP
    ...     task = await client.generate("a lighthouse at dawn")
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'grok_imagine_async.redis needs redis-py: pip install "grok-imagine-async[redis]"'
    ) from exc

from ._clock import DEFAULT_CLOCK, Clock
from ._errors import ConfigurationError, GrokImagineError
from ._limiter import LimiterStatistics, Permit, Priority, RateLimiter, RateLimitFeedback
from ._plans import Plan, RateLimit, resolve_rate_limit
from ._redis_queue import SlotLine
from ._redis_script import (
    ACQUIRE_SCRIPT,
    OBSERVE_SCRIPT,
    RedisKeys,
    Reservation,
    emission_interval,
    tat_floor,
    to_micros,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RedisLimiterStatistics", "RedisRateLimiter", "RedisUnavailableError"]

logger = logging.getLogger("grok_imagine_async.redis")

DEFAULT_KEY_PREFIX = "grok-imagine:ratelimit"
UNKNOWN_PEERS_SHARE = 0.25
"""Fallback share of the plan when Redis was never reached, so the number of peers is unknown."""

# Errors that mean "Redis cannot answer right now", as opposed to a bug or foreign data in our keys.
_UNAVAILABLE = (
    redis_errors.ConnectionError,  # includes BusyLoadingError (a restarting server)
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica after a failover
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    OSError,
)


class RedisUnavailableError(GrokImagineError):
    """Raised when Redis cannot be reached and the limiter was told not to fall back.

    Only with ``on_unavailable="raise"``; the Redis client's error is the ``__cause__``.
    """


@dataclass(frozen=True, slots=True)
class RedisLimiterStatistics(LimiterStatistics):
    """:class:`~grok_imagine_async.LimiterStatistics` plus the Redis side of things.

    Attributes:
        redis_calls: Script calls sent to Redis (one per permit while Redis is up).
        fallback_active: True while permits come from the local fallback limiter.
        fallbacks: Times Redis became unreachable and the fallback took over.
        recoveries: Times Redis came back and took over again.
        peers: Limiter instances seen using this token within the last period (self included).
    """

    redis_calls: int
    fallback_active: bool
    fallbacks: int
    recoveries: int
    peers: int


class RedisRateLimiter:
    """Paces every process that uses one API token to that token's quota, through Redis.

    Each permit costs one Lua script call: it reserves the next free slot on a schedule kept in
    Redis (GCRA, slots one ``period / requests * (1 + headroom)`` apart, no burst) using the
    Redis server's clock, and answers how long to wait for it. Any sliding window of the period
    therefore holds at most ``limit.requests`` requests from all processes together, whatever
    their local clocks say. A 429 or ``X-RateLimit-Remaining: 0`` seen by one process pauses all
    of them; a low ``Remaining`` before a known reset pushes the shared schedule back.

    Within one process, waiting callers are served by priority (polls before submissions).

    If Redis is unreachable, by default the limiter logs a warning and falls back to a
    :class:`~grok_imagine_async.LocalRateLimiter` at ``fallback_share`` of the plan, probes Redis
    every ``fallback_probe_interval`` seconds and takes over again when it answers.

    Args:
        redis: A ``redis://`` URL (the limiter then owns the connection; close it with
            :meth:`aclose` or ``async with``) or a ``redis.asyncio.Redis`` client you own.
        limit: The token's quota: a :class:`~grok_imagine_async.RateLimit`, a
            :class:`~grok_imagine_async.Plan` or a plan name.
        api_key: The token whose quota is shared. Only a SHA-256 prefix of it is kept, to name
            the Redis keys; it is never stored, logged or shown.
        on_unavailable: ``"fallback"`` (default) or ``"raise"``
            :class:`RedisUnavailableError` from :meth:`acquire`.
        fallback_share: Fraction of the plan each process may use on its own while Redis is
            down. Default: one over the number of processes seen on this token in the last
            period (a quarter if Redis was never reached).
        fallback_probe_interval: Seconds between attempts to reach Redis while falling back.
        headroom: Extra spacing between slots, as a fraction of the plan's interval; absorbs the
            network jitter between a slot and the server seeing the request.
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
        headroom: float = 0.02,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        if not api_key:
            raise ConfigurationError("RedisRateLimiter needs the api_key whose quota it shares")
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
        self._owns_client = isinstance(redis, str)
        if isinstance(redis, str):
            # One quick retry survives a pooled connection that a Redis restart left stale;
            # more would only delay the fallback while Redis is really gone.
            self._redis: aioredis.Redis = aioredis.Redis.from_url(
                redis,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 1),
            )
        else:
            self._redis = redis
        self._keys = RedisKeys.for_token(api_key, prefix=key_prefix)
        self._member = uuid.uuid4().hex[:16]  # names this instance among the token's peers
        self._on_unavailable = on_unavailable
        self._fallback_share = fallback_share
        self._probe_interval = fallback_probe_interval
        self._headroom = headroom
        self._interval = emission_interval(self._limit, headroom)
        self._clock = clock
        self._acquire_script = self._redis.register_script(ACQUIRE_SCRIPT)
        self._observe_script = self._redis.register_script(OBSERVE_SCRIPT)

        self._line = SlotLine()
        self._pending_slot: float | None = None  # loop time of a reserved slot nobody took yet
        self._fallback: RateLimiter | None = None
        self._next_probe = 0.0
        self._peers: int | None = None
        self._paused_until: float | None = None

        self._serial = 0
        self._total_wait = 0.0
        self._server_pauses = 0
        self._rate_limited = 0
        self._redis_calls = 0
        self._fallbacks = 0
        self._recoveries = 0

    # -- the RateLimiter protocol -------------------------------------------------------------

    @property
    def limit(self) -> RateLimit:
        """The quota shared by every process using this token."""
        return self._limit

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait for this process's turn on the shared schedule.

        Cancelling a waiting call consumes no permit: a slot already reserved for it goes to the
        next waiter of this process.

        Raises:
            RedisUnavailableError: With ``on_unavailable="raise"``, if Redis cannot be reached.
        """
        started = self._clock.monotonic()
        await self._line.wait_turn(int(priority), self._wait_for_slot)
        now = self._clock.monotonic()
        self._serial += 1
        self._total_wait += max(0.0, now - started)
        return Permit(granted_at=now, serial=self._serial)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Share what the server said about the quota with every process using the token.

        A 429 or ``Remaining: 0`` pauses all of them until the server's reset (``Retry-After``
        first); a ``Remaining`` lower than our pacing would use up before a known reset pushes the
        shared schedule back. Never raises for an unreachable Redis.
        """
        if feedback.rate_limited:
            self._rate_limited += 1
        # Every wait is clamped to one period: no window stays closed longer than itself, so a
        # longer hint can only come from a skewed clock reading a Unix-time reset.
        period = self._limit.period
        pause: float | None = None
        if feedback.rate_limited:
            hint = feedback.retry_after
            if hint is None:
                hint = feedback.reset_after
            if hint is None:
                hint = self._default_pause()
            # At least one interval, so a zero hint cannot become one 429 per interval.
            pause = max(min(hint, period), self._interval)
        elif feedback.remaining == 0 and feedback.reset_after:
            pause = min(feedback.reset_after, period)
        if pause is not None:
            self._server_pauses += 1
        floor: float | None = None
        if feedback.remaining and feedback.reset_after is not None:
            floor = tat_floor(
                remaining=feedback.remaining,
                reset_after=min(feedback.reset_after, period),
                interval=self._interval,
            )
        if pause is None and floor is None:
            return
        if self._fallback is None:
            try:
                self._redis_calls += 1
                raw = await self._observe_script(
                    keys=self._keys.observe_keys(),
                    args=[
                        -1 if pause is None else to_micros(pause),
                        -1 if floor is None else to_micros(floor),
                        to_micros(self._limit.period),
                    ],
                )
            except _UNAVAILABLE as exc:
                if self._on_unavailable == "raise":
                    logger.warning("Redis unreachable, server feedback not shared: %r", exc)
                    return
                self._engage_fallback(exc)
            else:
                self._note_pause(int(raw) / 1_000_000)
                return
        if pause is not None:
            self._note_pause(pause)
        assert self._fallback is not None
        await self._fallback.observe(feedback)

    def statistics(self) -> RedisLimiterStatistics:
        """A frozen snapshot of this process's counters."""
        paused_until = self._paused_until
        if paused_until is not None and paused_until <= self._clock.monotonic():
            paused_until = None
        return RedisLimiterStatistics(
            limit=self._limit,
            permits_granted=self._serial,
            waiting=len(self._line),
            total_wait_time=self._total_wait,
            server_pauses=self._server_pauses,
            rate_limited_responses=self._rate_limited,
            paused_until=paused_until,
            redis_calls=self._redis_calls,
            fallback_active=self._fallback is not None,
            fallbacks=self._fallbacks,
            recoveries=self._recoveries,
            peers=self._peers or 1,
        )

    # -- lifetime -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the Redis connection if this limiter opened it from a URL."""
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        # Neither the token nor the URL (it may hold a password) appears here.
        mode = "fallback" if self._fallback is not None else "redis"
        return f"RedisRateLimiter(limit={self._limit!r}, key={self._keys.tat!r}, mode={mode!r})"

    # -- internals ----------------------------------------------------------------------------

    async def _wait_for_slot(self, priority: int) -> None:
        """Return when the next slot this process holds is due (from Redis or the fallback)."""
        pending, self._pending_slot = self._pending_slot, None
        if pending is not None and pending >= anyio.current_time():
            await self._sleep_until(pending)
            return
        if self._fallback is not None and anyio.current_time() < self._next_probe:
            await self._fallback.acquire(priority=Priority(priority))
            return
        try:
            self._redis_calls += 1
            raw = await self._acquire_script(
                keys=self._keys.acquire_keys(),
                args=[
                    to_micros(self._interval),
                    to_micros(self._limit.period),
                    self._member,
                    to_micros(self._limit.period),
                ],
            )
        except _UNAVAILABLE as exc:
            if self._on_unavailable == "raise":
                raise RedisUnavailableError(
                    f"Redis is unreachable ({type(exc).__name__}) and on_unavailable='raise'"
                ) from exc
            self._engage_fallback(exc)
            assert self._fallback is not None
            await self._fallback.acquire(priority=Priority(priority))
            return
        reservation = Reservation.parse(raw)
        if self._fallback is not None:
            self._recover()
        self._peers = reservation.peers
        self._note_pause(reservation.pause_left)
        await self._sleep_until(anyio.current_time() + reservation.delay)

    async def _sleep_until(self, deadline: float) -> None:
        # If cancelled while asleep, the slot stays reserved for the next waiter to lead.
        self._pending_slot = deadline
        await anyio.sleep(max(0.0, deadline - anyio.current_time()))
        self._pending_slot = None

    def _engage_fallback(self, exc: BaseException) -> None:
        from ._local_limiter import LocalRateLimiter

        self._next_probe = anyio.current_time() + self._probe_interval
        if self._fallback is not None:
            return
        share = self._fallback_share
        if share is None:
            share = UNKNOWN_PEERS_SHARE if self._peers is None else 1.0 / self._peers
        local = RateLimit(
            max(1, math.floor(self._limit.requests * share)),
            self._limit.period * (1.0 + self._headroom),
        )
        self._fallback = LocalRateLimiter(local, clock=self._clock)
        self._fallbacks += 1
        logger.warning(
            "Redis unreachable (%s); pacing this process alone at %d requests per %gs "
            "(%.0f%% of the plan) until it answers again",
            type(exc).__name__,
            local.requests,
            local.period,
            share * 100,
        )

    def _recover(self) -> None:
        self._fallback = None
        self._recoveries += 1
        logger.warning("Redis reachable again; the shared limit is back in force")

    def _note_pause(self, seconds: float) -> None:
        if seconds > 0:
            until = self._clock.monotonic() + seconds
            if self._paused_until is None or until > self._paused_until:
                self._paused_until = until

    def _default_pause(self) -> float:
        # A 429 without Retry-After or Reset: the window is full and we do not know for how long;
        # hold off long enough for a tenth of the window to drain.
        return self._limit.period / 10
