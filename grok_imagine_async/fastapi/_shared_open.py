"""What ``grok_imagine_lifespan(redis_url=...)`` opens: the shared limiter and job store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._limiting.protocol import RateLimiter
from .._settings import Settings

if TYPE_CHECKING:
    from ..redis import RedisJobStore


@dataclass(frozen=True, slots=True)
class Shared:
    """The Redis side of an app with several workers.

    Attributes:
        limiter: The rate limiter every worker paces through (None: the client's own).
        store: The job store every worker journals to and reads jobs from.
    """

    limiter: RateLimiter | None
    store: RedisJobStore


@asynccontextmanager
async def open_shared(
    redis_url: str,
    *,
    settings: Settings,
    limiter: RateLimiter | None,
    make_limiter: bool,
    namespace: str,
    max_credits: int | None,
    lease: float,
) -> AsyncIterator[Shared]:
    """Open the limiter (unless one is given, or ``make_limiter`` is false) and the store.

    Raises:
        ConfigurationError: If the redis extra is missing.
        JournalError: If Redis cannot be reached (the app must not start).
    """
    try:
        from ..redis import RedisJobStore, RedisRateLimiter
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from None
    key = settings.api_key
    own_limiter = None
    if limiter is None and make_limiter:
        own_limiter = RedisRateLimiter(redis_url, limit=settings.rate_limit, api_key=key)
    try:
        beat = own_limiter or (limiter if isinstance(limiter, RedisRateLimiter) else None)
        store = RedisJobStore(
            redis_url,
            api_key=key,
            namespace=namespace,
            max_credits=max_credits,
            lease=lease,
            limiter=beat,
        )
        async with store:
            yield Shared(own_limiter or limiter, store)
    finally:
        if own_limiter is not None:
            await own_limiter.aclose()
