"""Plan tiers and the rate limits they grant."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A quota of ``requests`` per ``period`` seconds, counting every request.

    Args:
        requests: How many requests the server admits per period. Must be positive.
        period: The window length in seconds (60 on the real service; tests scale it down).

    Raises:
        ValueError: If either value is not positive.

    Example:
        >>> RateLimit(100, 3.0).interval
        0.03
    """

    requests: int
    period: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise TypeError(f"RateLimit.requests must be an int, got {self.requests!r}")
        if self.requests <= 0:
            raise ValueError(f"RateLimit.requests must be positive, got {self.requests}")
        if not self.period > 0:
            raise ValueError(f"RateLimit.period must be positive seconds, got {self.period!r}")

    @property
    def per_second(self) -> float:
        """The sustained rate in requests per second."""
        return self.requests / self.period

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate."""
        return self.period / self.requests


class Plan(enum.Enum):
    """The provider's plan tiers, by requests per minute per token."""

    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"

    @property
    def requests_per_minute(self) -> int:
        """Requests per minute this plan admits (status polls included)."""
        return _PLAN_RPM[self]

    @property
    def rate_limit(self) -> RateLimit:
        """The plan's quota as a :class:`RateLimit` over 60 seconds."""
        return RateLimit(self.requests_per_minute, 60.0)

    @classmethod
    def parse(cls, value: str | Plan) -> Plan:
        """Read a plan from its name (case-insensitive) or return it unchanged.

        Raises:
            ValueError: If the name is not one of ``free``, ``pro``, ``enterprise``.
        """
        if isinstance(value, Plan):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(repr(p.value) for p in cls)
            raise ValueError(f"unknown plan {value!r}: expected one of {names}") from None


_PLAN_RPM = {Plan.FREE: 100, Plan.PRO: 1000, Plan.ENTERPRISE: 5000}


def resolve_rate_limit(plan: str | Plan | RateLimit) -> RateLimit:
    """Turn a plan name, a :class:`Plan` or a :class:`RateLimit` into a :class:`RateLimit`."""
    if isinstance(plan, RateLimit):
        return plan
    return Plan.parse(plan).rate_limit
