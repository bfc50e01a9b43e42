"""How much work a quota carries: the scheduler's in-flight cap, the registry's Retry-After."""

from __future__ import annotations

import math

from .._limiting.plans import RateLimit

REQUESTS_PER_JOB = 2.2
"""Requests one job costs: one POST plus about 1.2 polls, what the poll schedule aims for."""

CAP_FACTOR = 8.0
"""The default in-flight cap is this many times what the quota sustains by Little's law."""


def in_flight_cap(limit: RateLimit, *, time_in_system: float) -> int:
    """The default cap on jobs in flight: eight times Little's law, so a saturated quota
    never idles for lack of started work."""
    jobs_per_second = limit.per_second / REQUESTS_PER_JOB
    return max(2, math.ceil(CAP_FACTOR * jobs_per_second * time_in_system))


def queue_wait(queued: int, *, requests_per_second: float) -> float:
    """Seconds for the quota to carry ``queued`` jobs, at :data:`REQUESTS_PER_JOB` each."""
    return queued * REQUESTS_PER_JOB / max(requests_per_second, 1e-9)
