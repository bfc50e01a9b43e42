"""What ``grok_imagine_lifespan(redis_url=...)`` opens: the shared limiter and job store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._limiting.plans import Plan, RateLimit, resolve_rate_limit
from .._limiting.protocol import RateLimiter
from .._settings import ENV_API_KEY, ENV_PLAN

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
    api_key: str | None,
    plan: str | Plan | RateLimit | None,
    limiter: RateLimiter | None,
    make_limiter: bool,
    namespace: str,
    max_credits: int | None,
    lease: float,
) -> AsyncIterator[Shared]:
    """Open the limiter (unless one is given, or ``make_limiter`` is false) and the store.

    Raises:
        ConfigurationError: If no API key is given or found.
        JournalError: If Redis cannot be reached (the app must not start).
    """
    try:
        from ..redis import RedisJobStore, RedisRateLimiter
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from None
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if key is None or not key.strip():
        raise ConfigurationError(
            f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
        )
    try:
        limit = resolve_rate_limit(plan or os.environ.get(ENV_PLAN) or "free")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    own_limiter = None
    if limiter is None and make_limiter:
        own_limiter = RedisRateLimiter(redis_url, limit=limit, api_key=key)
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
