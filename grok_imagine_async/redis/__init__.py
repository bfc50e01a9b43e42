"""Every process that uses one API token acting as one client, through Redis.

The quota belongs to the token, not to a process: a :class:`RedisRateLimiter` in each process
paces all of them as one client, and a :class:`RedisJobStore` is the journal they share (each
job owned by one process at a time, adopted by another when it stops, one credit budget).

Needs the ``redis`` extra: ``pip install "grok-imagine-async[redis]"``.

Example::

    from grok_imagine_async import AsyncGrokImagine
    from grok_imagine_async.redis import RedisRateLimiter

    async with (
        RedisRateLimiter("redis://localhost:6379/0", limit="pro", api_key=token) as limiter,
        AsyncGrokImagine(api_key=token, limiter=limiter) as client,
    ):
        task_id = await client.generate("a lighthouse at dawn")
"""

from .._public import require_extra as _require_extra
from .._public import set_module as _set_module

_require_extra(__name__, "redis", "redis-py", "redis")

from ._limiter import RedisLimiterStatistics, RedisRateLimiter, RedisUnavailableError
from ._store import RedisJobStore, RedisStoreStatistics

__all__ = [
    "RedisJobStore",
    "RedisLimiterStatistics",
    "RedisRateLimiter",
    "RedisStoreStatistics",
    "RedisUnavailableError",
]

_set_module(globals(), __all__)
