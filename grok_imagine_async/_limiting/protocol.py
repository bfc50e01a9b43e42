"""The rate-limiter seam: what the client asks of any limiter, local or shared.

The client takes a :class:`Permit` before every request it sends (submissions, polls,
retries alike) and reports each answer's rate-limit headers back with :meth:`RateLimiter.observe`.
Implementations: :class:`~grok_imagine_async.LocalRateLimiter` (one process, aiolimiter) and
``grok_imagine_async.redis.RedisRateLimiter`` (many processes sharing one token).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .plans import RateLimit


class Priority(enum.IntEnum):
    """Who goes first when several requests wait for a permit (lower value first).

    Standalone calls use ``POLL`` for status reads and ``SUBMIT`` for submissions, so an app
    that both waits on jobs and starts new ones learns of finished work first. The scheduler
    chooses for itself (``HIGH``/``LOW``): while a batch fills up, starting work early is what
    shortens it, so its submissions go first.
    """

    URGENT = -1
    """Served before all others: a look whose answer decides whether a batch goes on paying
    for new tasks (the scheduler's canaries and outage probes), whatever waits for the quota."""
    HIGH = 0
    """Served first among the rest."""
    LOW = 1
    """Served when no ``HIGH`` request waits."""
    POLL = 0
    """A status poll made outside a scheduler (same as ``HIGH``)."""
    SUBMIT = 1
    """A submission made outside a scheduler (same as ``LOW``)."""


@dataclass(frozen=True, slots=True)
class Permit:
    """The right to send one request, as granted by a limiter.

    Attributes:
        granted_at: When it was granted, on the limiter's clock.
        serial: Increasing number of the grant within this limiter (ties feedback to order).
    """

    granted_at: float
    serial: int


@dataclass(frozen=True, slots=True)
class RateLimitFeedback:
    """What one answer told us about the quota; handed to :meth:`RateLimiter.observe`.

    Attributes:
        permit: The permit under which the request was sent.
        status_code: The HTTP status (429 means the server refused for rate).
        remaining: ``X-RateLimit-Remaining`` if readable.
        reset_after: Seconds from the answer until the window resets (either header format).
        retry_after: ``Retry-After`` in seconds, if given.
    """

    permit: Permit
    status_code: int
    remaining: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None

    @property
    def rate_limited(self) -> bool:
        """True when the server refused this request for rate (HTTP 429)."""
        return self.status_code == 429


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a limiter's counters.

    Attributes:
        limit: The quota this limiter enforces.
        permits_granted: Permits handed out since creation.
        waiting: Acquirers waiting right now.
        total_wait_time: Seconds spent waiting, summed over all acquirers.
        server_pauses: Times a server answer (429 or ``Remaining: 0``) paused every sender.
        rate_limited_responses: HTTP 429 answers reported through ``observe``.
        paused_until: Clock time until which all senders are paused, or None.
        stalled_for: Seconds the acquirers waiting now have gone without any permit granted
            (since the later of the last grant and the oldest waiter's arrival); 0.0 when none
            waits. Far beyond a period of the quota, the limiter is stuck (a pause or a shared
            schedule far ahead): what a health check reports.
    """

    limit: RateLimit
    permits_granted: int
    waiting: int
    total_wait_time: float
    server_pauses: int
    rate_limited_responses: int
    paused_until: float | None
    stalled_for: float


@runtime_checkable
class RateLimiter(Protocol):
    """Paces requests against one API token's quota.

    Safe to share between coroutines and between clients that use the same token.
    """

    @property
    def limit(self) -> RateLimit:
        """The quota being enforced."""

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait until one more request may be sent without exceeding the quota.

        Cancelling a waiting call consumes no permit.
        """

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Take the server's word on the quota into account (it overrides local estimates)."""

    def give_back(self, permit: Permit) -> None:
        """The request sent under ``permit`` never reached the server: give its quota back.

        Called when it failed to connect (connection refused, DNS or TLS failure): no byte was
        sent, so the server counted nothing.
        """

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters."""
