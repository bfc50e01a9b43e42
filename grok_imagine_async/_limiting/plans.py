"""Plan tiers, the rate limits they grant, and custom quotas written as text."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field

from .._errors import ConfigurationError

# "100/6s", "2000/min", "100 / 1.5 min", "5000/h", "100/60" (bare seconds).
_QUOTA = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)?\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    **dict.fromkeys(("", "s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hour", "hours"), 3600.0),
}
QUOTA_SYNTAX = "REQUESTS/PERIOD, e.g. 100/6s, 2000/min, 5000/1h"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A quota of ``requests`` per ``period`` seconds, counting every request.

    Raises:
        ConfigurationError: If either value is not positive.
        TypeError: If ``requests`` is not an int.
    """

    requests: int
    period: float = 60.0
    per_second: float = field(init=False, repr=False, compare=False)
    """The sustained rate in requests per second."""
    interval: float = field(init=False, repr=False, compare=False)
    """Seconds between two requests at the sustained rate."""

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise TypeError(f"RateLimit.requests must be an int, got {self.requests!r}")
        if self.requests <= 0:
            raise ConfigurationError(f"RateLimit.requests must be positive, got {self.requests}")
        if not self.period > 0:
            raise ConfigurationError(
                f"RateLimit.period must be positive seconds, got {self.period!r}"
            )
        # Stored, not computed per read: the limiters read them on every request.
        object.__setattr__(self, "per_second", self.requests / self.period)
        object.__setattr__(self, "interval", self.period / self.requests)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read a quota written as ``REQUESTS/PERIOD`` (``100/6s``, ``2000/min``, ``5000/h``).

        Raises:
            ConfigurationError: If the text is not a quota, or either part is not positive.
        """
        match = _QUOTA.match(text)
        if match is not None and match.group(3).lower() in _UNITS:
            count, number, unit = match.groups()
            if number is None and not unit:
                raise ConfigurationError(
                    f"not a quota: {text!r} (the period is missing; {QUOTA_SYNTAX})"
                )
            period = (float(number) if number is not None else 1.0) * _UNITS[unit.lower()]
            if math.isfinite(period):
                return cls(int(count), period)
        raise ConfigurationError(f"not a quota: {text!r} (expected {QUOTA_SYNTAX})")

    @property
    def text(self) -> str:
        """The quota as :meth:`parse` reads it, in seconds: ``"100/6s"``."""
        return f"{self.requests}/{self.period:g}s"


_REQUESTS_PER_MINUTE = {"free": 100, "pro": 1000, "enterprise": 5000}  # by plan name


class Plan(enum.Enum):
    """The provider's plan tiers."""

    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"

    @property
    def requests_per_minute(self) -> int:
        """Requests per minute this plan admits (status polls included)."""
        return _REQUESTS_PER_MINUTE[self.value]

    @property
    def rate_limit(self) -> RateLimit:
        """The plan's quota over 60 seconds."""
        return resolve_rate_limit(self)

    @classmethod
    def parse(cls, value: str | Plan) -> Plan:
        """A plan from its name (case-insensitive), or ``value`` if a plan already.

        Raises:
            ConfigurationError: If the name is not one of ``free``, ``pro``, ``enterprise``.
        """
        if isinstance(value, Plan):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(repr(p.value) for p in cls)
            raise ConfigurationError(f"unknown plan {value!r}: expected one of {names}") from None


def resolve_rate_limit(plan: str | Plan | RateLimit, *, period: float = 60.0) -> RateLimit:
    """The :class:`RateLimit` of a plan or plan name over ``period`` seconds, or of a quota
    text (``"100/6s"``) or a :class:`RateLimit` as they are."""
    if isinstance(plan, RateLimit):
        return plan
    if isinstance(plan, str) and "/" in plan:
        return RateLimit.parse(plan)
    try:
        return RateLimit(Plan.parse(plan).requests_per_minute, period)
    except ValueError:
        raise ConfigurationError(
            f"unknown plan {plan!r}: expected free, pro, enterprise or a quota ({QUOTA_SYNTAX})"
        ) from None
