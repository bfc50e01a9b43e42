"""Counting one token's requests as a leaky bucket (GCRA), as nginx ``limit_req`` does. Pure.

The quota's sustained rate is ``requests / period``: the bucket gains one request's room every
``interval = period / requests`` seconds and holds at most ``burst`` of them. A request is
admitted when the bucket holds at least one, which takes it. ``burst=1`` admits nothing closer
than one interval to the previous request (nginx ``limit_req`` with no ``burst``); nginx's
``burst=b nodelay`` behaves as ``burst=b + 1`` here.

Implemented as the generic cell rate algorithm: one number, the *theoretical arrival time*
(TAT) at which the bucket would be full again. Headers, chosen to say what the bucket does:

- ``remaining``: what the bucket holds after this request, rounded down (at most ``burst - 1``);
- ``reset_after``: seconds until the bucket is full again (the TAT), so at most
  ``burst * interval`` (the choice of redis-cell and of the IETF RateLimit draft's "quota
  resets": the time until the whole allowance is back, not until the next request is);
- ``retry_after`` on a refusal: seconds until one request's room is back.
"""

from __future__ import annotations

import math

from .._limiting.plans import RateLimit
from ._window import EPSILON, WindowDecision


class GcraCounter:
    """Admits requests at ``limit.requests / limit.period`` a second with bursts up to ``burst``.

    Args:
        limit: The quota; its rate is the bucket's sustained rate.
        burst: Requests the bucket holds when full (at least 1).
        count_refused: Whether refused requests also take room (a hammering client then stays
            locked out until it pauses).

    Example:
        >>> counter = GcraCounter(RateLimit(10, 10.0), burst=2)
        >>> [counter.hit(t).admitted for t in (0.0, 0.0, 0.0, 1.0, 1.5, 5.0, 5.0, 5.0)]
        [True, True, False, True, False, True, True, False]
    """

    __slots__ = ("_burst", "_count_refused", "_interval", "_limit", "_tat")

    def __init__(self, limit: RateLimit, *, burst: int, count_refused: bool = False) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {burst!r}")
        self._limit = limit
        self._burst = burst
        self._count_refused = count_refused
        self._interval = limit.period / limit.requests
        self._tat = -math.inf  # when the bucket is full again

    @property
    def limit(self) -> RateLimit:
        """The quota enforced."""
        return self._limit

    @property
    def mode(self) -> str:
        """``"gcra"``."""
        return "gcra"

    @property
    def burst(self) -> int:
        """Requests the full bucket holds."""
        return self._burst

    def hit(self, now: float) -> WindowDecision:
        """Count one request received at clock time ``now`` and decide on it.

        ``now`` must not decrease between calls.
        """
        interval, capacity = self._interval, self._burst * self._interval
        tat = max(self._tat, now)
        after = tat + interval  # the TAT if this request is admitted
        admitted = after - now <= capacity + EPSILON
        if admitted or self._count_refused:
            self._tat = after
        held = (capacity - (max(self._tat, now) - now)) / interval
        remaining = max(0, min(self._burst, math.floor(held + 1e-9)))
        reset_after = max(0.0, self._tat - now)
        retry_after = 0.0 if admitted else max(0.0, after - capacity - now)
        return WindowDecision(admitted, remaining, reset_after, retry_after)
