"""Pacing one process alone while Redis is unreachable, and handing back without a burst.

The risk is in the two hand-overs. Into the fallback, a process's first local permit waits one
local interval after its last shared one, so the window that still holds the shared traffic
gets no extra request per process. Back to Redis, a process keeps its local pace as well as the
shared schedule until as many peers have acquired through Redis since its recovery as were
active before the outage, or a period has passed, so the first one back does not take the
whole rate while the others still send their share. The local pace is a leaky bucket of one
request (:class:`aiolimiter.AsyncLimiter`): evenly spaced, no burst.
"""

from __future__ import annotations

import logging
import math

import anyio
from aiolimiter import AsyncLimiter

from .._limiting.plans import RateLimit

logger = logging.getLogger("grok_imagine_async.redis")

UNKNOWN_PEERS_SHARE = 0.25
"""Fallback share of the plan when Redis was never reached, so the number of peers is unknown."""


def fallback_limit(limit: RateLimit, share: float) -> RateLimit:
    """``share`` of ``limit``, rounded down, and never below one request per period.

    Example:
        >>> fallback_limit(RateLimit(100, 60.0), 0.25)
        RateLimit(requests=25, period=60.0)
    """
    return RateLimit(max(1, math.floor(limit.requests * share + 1e-9)), limit.period)


class Fallback:
    """The local pace standing in for Redis, with the hand-over rules of the module docstring.

    Args:
        limit: This process's share of the quota (see :func:`fallback_limit`).
        headroom: Fraction of the interval added between permits.
        probe_interval: Seconds between attempts to reach Redis.
        last_grant: Loop time of this process's last permit from Redis (None: none yet).
        peers_before: Limiter instances active on the token when Redis was last reached.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        headroom: float,
        probe_interval: float,
        last_grant: float | None,
        peers_before: int,
    ) -> None:
        interval = limit.period * (1.0 + headroom) / limit.requests
        self._bucket = AsyncLimiter(1, interval)
        self._probe_interval = probe_interval
        self._hold_until = -math.inf if last_grant is None else last_grant + interval
        self._next_probe = anyio.current_time() + probe_interval
        self.degraded = True
        """True while Redis is believed unreachable; False during the hand-back."""
        self._peers_before = peers_before
        self._hand_back_cap = max(limit.period, probe_interval + 2 * interval)
        self._recovered_at = math.inf

    @classmethod
    def engage(
        cls,
        plan: RateLimit,
        *,
        share: float | None,
        peers: int | None,
        headroom: float,
        probe_interval: float,
        last_grant: float | None,
        reason: str,
    ) -> Fallback:
        """Start pacing alone at ``share`` of ``plan`` (None: one over the ``peers`` last seen,
        None if Redis never answered), and log why (``reason``)."""
        if share is None:
            share = UNKNOWN_PEERS_SHARE if peers is None else 1.0 / peers
        limit = fallback_limit(plan, share)
        logger.warning(
            "Redis unreachable (%s); pacing this process alone at %d requests per %gs "
            "(%.0f%% of the plan) until it answers again",
            reason,
            limit.requests,
            limit.period,
            share * 100,
        )
        return cls(
            limit,
            headroom=headroom,
            probe_interval=probe_interval,
            last_grant=last_grant,
            peers_before=peers or 1,
        )

    def should_probe(self) -> bool:
        """Whether it is time to try Redis again (always true during the hand-back)."""
        return not self.degraded or anyio.current_time() >= self._next_probe

    def failed_again(self) -> None:
        """Redis could not be reached (again): stay local until the next probe."""
        self.degraded = True
        self._recovered_at = math.inf
        self._next_probe = anyio.current_time() + self._probe_interval

    def recovered(self) -> None:
        """Redis answered: keep the local pace too until every busy peer has rejoined."""
        if self.degraded:
            self.degraded = False
            self._recovered_at = anyio.current_time()

    def rejoin_window(self) -> float:
        """Seconds since recovery, over which Redis should count the peers back (0: none)."""
        if self.degraded:
            return 0.0
        return max(anyio.current_time() - self._recovered_at, 1e-6)

    def finished(self, rejoined: int) -> bool:
        """Whether the hand-back is over, ``rejoined`` peers having acquired since recovery."""
        if self.degraded:
            return False
        waited = anyio.current_time() - self._recovered_at
        return rejoined >= self._peers_before or waited >= self._hand_back_cap

    async def slot(self, *, paused_until: float) -> None:
        """Wait for the next local slot, not before ``paused_until`` (loop time)."""
        await anyio.sleep(max(0.0, max(self._hold_until, paused_until) - anyio.current_time()))
        await self._bucket.acquire()
