"""Pacing one process alone while Redis is unreachable, and handing back without a burst.

The risky moments are the two hand-overs, not the outage itself:

- **Into the fallback.** Each process was getting roughly its share of the shared schedule. If
  every one of them granted a permit the instant Redis failed, the window that still holds the
  last period of shared traffic would get one extra request per process. So a process's first
  local permit waits one local interval after its last shared one, and any server-ordered pause
  already known still holds.
- **Back to Redis.** Processes notice that Redis is back at different moments (each probes on
  its own schedule). The first one back would get the whole shared rate while the others still
  send their local share. So after recovery a process keeps its local pace *as well as* the
  shared schedule until as many peers have acquired through Redis since its recovery as were
  active before the outage, or one period has passed (a peer still missing by then was idle or
  gone); only then does the shared schedule alone decide.

The fallback's pace is a plain leaky bucket of one request (:class:`aiolimiter.AsyncLimiter`):
evenly spaced, no burst into a window that the other processes keep using. The server's
answers still go through the shared limiter's feedback interpreter, whose pauses hold here too.
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
    """The quota one process keeps for itself while Redis is down: ``share`` of ``limit``.

    Rounded down, and never below one request per period (a process must still make progress).

    Example:
        >>> fallback_limit(RateLimit(100, 60.0), 0.25)
        RateLimit(requests=25, period=60.0)
    """
    return RateLimit(max(1, math.floor(limit.requests * share + 1e-9)), limit.period)


class Fallback:
    """The local limiter standing in for Redis, with the hand-over rules of the module docstring.

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
        self._limit = limit
        self._interval = limit.period * (1.0 + headroom) / limit.requests
        self._bucket = AsyncLimiter(1, self._interval)
        self._probe_interval = probe_interval
        now = anyio.current_time()
        self._hold_until = -math.inf if last_grant is None else last_grant + self._interval
        self._next_probe = now + probe_interval
        self.degraded = True
        """True while Redis is believed unreachable; False during the hand-back."""
        self._peers_before = peers_before
        self._hand_back_cap = max(limit.period, probe_interval + 2 * self._interval)
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
        """Start pacing alone at ``share`` of ``plan`` (None: one over ``peers``), and say so.

        Args:
            plan: The token's whole quota.
            share: The fraction configured, or None for one over the peers last seen.
            peers: Limiter instances last seen on the token (None: Redis never answered).
            headroom: As for :class:`Fallback`.
            probe_interval: As for :class:`Fallback`.
            last_grant: As for :class:`Fallback`.
            reason: Why Redis is considered unreachable (an exception's name), for the log.
        """
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

    @property
    def limit(self) -> RateLimit:
        """The local quota in force."""
        return self._limit

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
