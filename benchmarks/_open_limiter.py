"""A limiter that grants at once: what the client costs without the rate limiter's work.

Shared by the benchmarks that measure something other than the limiter (its own cost is
``bench_limiter``'s business).
"""

from __future__ import annotations

from grok_imagine_async import RateLimit
from grok_imagine_async.abc import LimiterStatistics, Permit, Priority, RateLimitFeedback


class OpenLimiter:
    """Grants every permit at once and learns nothing from the answers."""

    def __init__(self) -> None:
        self.limit = RateLimit(1_000_000, 60.0)
        self._serial = 0

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        self._serial += 1
        return Permit(granted_at=0.0, serial=self._serial)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        return None

    def give_back(self, permit: Permit) -> None:
        return None

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(self.limit, self._serial, 0, 0.0, 0, 0, None, 0.0)
