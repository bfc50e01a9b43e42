"""Reading the server's rate-limit headers. Pure functions, no I/O (API.md rule 4).

``X-RateLimit-Reset`` is either seconds from now or a Unix time; a value above 10**9 is taken
as a Unix time. ``Retry-After`` is either seconds or an HTTP date.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

UNIX_TIME_THRESHOLD = 1e9


def _parse_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number != number or number in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return number


def parse_remaining(value: str | None) -> int | None:
    """``X-RateLimit-Remaining`` as a non-negative int, or None if absent or unreadable."""
    number = _parse_number(value)
    if number is None:
        return None
    return max(0, int(number))


def parse_reset(value: str | None, *, now_unix: float) -> float | None:
    """``X-RateLimit-Reset`` as seconds from now (never negative), or None if unreadable.

    Args:
        value: The header value: seconds until the reset, or the reset's Unix time.
        now_unix: The current Unix time, used when the value is an epoch.
    """
    number = _parse_number(value)
    if number is None:
        return None
    if number > UNIX_TIME_THRESHOLD:
        number -= now_unix
    return max(0.0, number)


def parse_retry_after(value: str | None, *, now_unix: float) -> float | None:
    """``Retry-After`` as seconds from now (never negative), or None if unreadable.

    Accepts delta-seconds (``"5"``, also fractional) and HTTP dates
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
    """
    if value is None:
        return None
    number = _parse_number(value)
    if number is not None:
        if number > UNIX_TIME_THRESHOLD:  # lenient: some servers send an epoch here too
            number -= now_unix
        return max(0.0, number)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_unix)


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What one answer's headers said about the quota, normalised to seconds from now."""

    remaining: int | None
    reset_after: float | None
    retry_after: float | None

    @property
    def wait_hint(self) -> float | None:
        """How long the server asked us to hold off: Retry-After, else the window reset."""
        return self.retry_after if self.retry_after is not None else self.reset_after


def read_rate_limit_headers(headers: Mapping[str, str], *, now_unix: float) -> RateLimitHeaders:
    """Extract and normalise ``X-RateLimit-Remaining``, ``X-RateLimit-Reset``, ``Retry-After``.

    ``headers`` should be case-insensitive (``httpx.Headers`` is); unreadable values become None.
    """
    return RateLimitHeaders(
        remaining=parse_remaining(headers.get("x-ratelimit-remaining")),
        reset_after=parse_reset(headers.get("x-ratelimit-reset"), now_unix=now_unix),
        retry_after=parse_retry_after(headers.get("retry-after"), now_unix=now_unix),
    )
