"""The rate-limiter seam: a :class:`Permit` before every request, each answer's headers back
through :meth:`RateLimiter.observe`; local (one process) or through Redis (many)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .plans import RateLimit


class Priority(enum.IntEnum):
    """Who goes first when several requests wait for a permit (lower value first).

    Standalone calls use ``POLL`` for status reads and ``SUBMIT`` for submissions, so finished
    work is learnt of first; the scheduler chooses ``HIGH``/``LOW`` for itself.
    """

    URGENT = -1
    """Before all others: a look that decides whether a batch goes on paying (a canary)."""
    HIGH = 0
    """Served first among the rest."""
    LOW = 1
    """Served when no ``HIGH`` request waits."""
    POLL = 0
    """A status poll made outside a scheduler (same as ``HIGH``)."""
    SUBMIT = 1
    """A submission made outside a scheduler (same as ``LOW``)."""


@dataclass(slots=True)
class Permit:
    """The right to send one request, as granted by a limiter (a plain record: one is built
    per request, and a frozen one costs three times as much).

    Attributes:
        granted_at: When it was granted, on the limiter's clock.
        serial: Increasing number of the grant within this limiter (ties feedback to order).
    """

    granted_at: float
    serial: int


@dataclass(slots=True)
class RateLimitFeedback:
    """What one answer told us about the quota; handed to :meth:`RateLimiter.observe` (a plain
    record, like :class:`Permit`).

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
        total_wait_time: Seconds spent waiting, summed over all acquirers (cancelled included).
        server_pauses: Times a server answer (429 or ``Remaining: 0``) paused every sender.
        rate_limited_responses: HTTP 429 answers reported through ``observe``.
        paused_until: Clock time until which all senders are paused, or None.
        stalled_for: Seconds the acquirers waiting now have gone without a permit (0.0 when
            none waits); far beyond a period, the limiter is stuck: what a health check reports.
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
        """Wait until one more request may be sent without exceeding the quota.

        Cancelling a waiting call consumes no permit.
        """

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Take the server's word on the quota into account (it overrides local estimates)."""

    def give_back(self, permit: Permit) -> None:
        """The request sent under ``permit`` never reached the server (it failed to connect, so
        nothing was counted): give its quota back."""

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters."""
