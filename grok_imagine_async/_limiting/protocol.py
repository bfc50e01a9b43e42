"""The rate-limiter seam: a :class:`Permit` before every request, each answer's headers back
through :meth:`RateLimiter.observe`; local (one process) or through Redis (many)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .plans import RateLimit


class Priority(enum.IntEnum):
    """Who goes first when several requests wait for a permit (lower value first): ``URGENT``
    (a canary deciding whether a batch goes on paying), then ``HIGH``, then ``LOW``. Calls made
    outside a scheduler poll at ``POLL`` (``HIGH``) and submit at ``SUBMIT`` (``LOW``)."""

    URGENT = -1
    HIGH = 0
    LOW = 1
    POLL = 0
    SUBMIT = 1


@dataclass(slots=True)
class Permit:
    """The right to send one request: when it was granted (on the limiter's clock) and its
    increasing number within the limiter."""

    granted_at: float
    serial: int


@dataclass(slots=True)
class RateLimitFeedback:
    """What one answer under ``permit`` told of the quota, for :meth:`RateLimiter.observe`:
    ``X-RateLimit-Remaining``, and ``X-RateLimit-Reset`` and ``Retry-After`` in seconds from the
    answer (None when absent or unreadable)."""

    permit: Permit
    status_code: int
    remaining: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None

    @property
    def rate_limited(self) -> bool:
        """HTTP 429."""
        return self.status_code == 429


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a limiter's counters.

    Attributes:
        total_wait_time: Seconds waited, summed over all acquirers (cancelled included).
        server_pauses: Times a server answer (429 or ``Remaining: 0``) paused every sender.
        paused_until: Clock time until which all senders are paused, or None.
        stalled_for: Seconds the acquirers waiting now have gone without a permit; far beyond
            a period, the limiter is stuck (what a health check reports).
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
    """Paces requests against one API token's quota; shared by every client of the token."""

    @property
    def limit(self) -> RateLimit:
        """The quota being enforced."""

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait until one more request may be sent within the quota (cancelled: no permit)."""

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Take the server's word on the quota (it overrides local estimates)."""

    def give_back(self, permit: Permit) -> None:
        """The request sent under ``permit`` never reached the server: give its quota back."""

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters."""
