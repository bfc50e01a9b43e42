"""The real client, its LocalRateLimiter and the emulator together, in process on virtual time.

The issue's definition of done: with ``plan="pro"``, thousands of concurrent calls and not a
single 429, whatever the server's window kind and reset format; and the feedback from headers
keeps two processes that share a token (each with its own limiter) from trading 429s.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from grok_imagine_async import (
    APIConnectionError,
    AsyncGrokImagine,
    LocalRateLimiter,
    RateLimit,
    RetryPolicy,
)
from grok_imagine_async.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio


def utilization(emulator: Emulator, limit: RateLimit) -> float:
    """Admitted requests per quota over the time they span."""
    times = emulator.request_times(admitted_only=True)
    windows = (times[-1] - times[0]) / limit.period
    return len(times) / (limit.requests * windows)


@pytest.mark.parametrize(("window", "reset_format"), [("sliding", "seconds"), ("fixed", "unix")])
async def test_pro_plan_fires_thousands_of_concurrent_calls_without_a_429(
    window: str, reset_format: str
) -> None:
    emulator = Emulator(
        EmulatorConfig(tokens={"t": "pro"}, window=window, reset_format=reset_format, seed=1)
    )
    limiter = LocalRateLimiter("pro")
    grok = AsyncGrokImagine(api_key="t", limiter=limiter, http_client=emulator.client("t"))
    async with grok:
        task_id = await grok.generate("a lighthouse")

        async def call(i: int) -> None:
            if i % 10 == 0:
                await grok.generate(f"wave {i}")
            else:
                await grok.get_task(task_id)

        async with anyio.create_task_group() as group:
            for i in range(3000):
                group.start_soon(call, i)
        limiter_stats = grok.limiter.statistics()
    stats = emulator.statistics()
    assert stats.rate_limited == 0
    assert stats.requests_total == 3001 == limiter_stats.permits_granted  # every request paced
    assert emulator.max_window_count(60.0) <= 1000
    assert utilization(emulator, RateLimit(1000, 60.0)) >= 0.98
    assert limiter_stats.server_pauses == limiter_stats.rate_limited_responses == 0


async def test_clients_sharing_one_limiter_share_one_quota() -> None:
    limit = RateLimit(100, 10.0)
    emulator = Emulator(EmulatorConfig(tokens={"t": limit}, seed=1))
    limiter = LocalRateLimiter(limit)
    first = AsyncGrokImagine(api_key="t", limiter=limiter, http_client=emulator.client("t"))
    second = AsyncGrokImagine(api_key="t", limiter=limiter, http_client=emulator.client("t"))
    async with first, second:
        task_id = await first.generate("a kite")
        async with anyio.create_task_group() as group:
            for i in range(400):
                group.start_soon((first, second)[i % 2].get_task, task_id)
    assert emulator.statistics().rate_limited == 0
    assert emulator.max_window_count(limit.period) <= limit.requests
    assert limiter.statistics().permits_granted == 401


@pytest.mark.parametrize("window", ["sliding", "fixed"])
async def test_two_processes_on_one_token_settle_on_sharing_it(window: str) -> None:
    # Two clients with their own limiters stand for two processes: each paces to the whole
    # quota, so together they ask for twice what the token allows. The headers must tell each
    # of them about the other: a Remaining its own requests do not explain is the other's
    # share, and the few 429s that two bursts at a window's start earn teach the rest (a shared
    # token wants RedisRateLimiter).
    limit = RateLimit(100, 10.0)
    emulator = Emulator(EmulatorConfig(tokens={"t": limit}, window=window, seed=1))
    clients = [
        AsyncGrokImagine(
            api_key="t",
            limiter=LocalRateLimiter(limit),
            http_client=emulator.client("t"),
            retry=RetryPolicy(attempts=20),
        )
        for _ in range(2)
    ]
    task_id = await clients[0].generate("a kite")

    async def flood(grok: AsyncGrokImagine) -> None:
        async with anyio.create_task_group() as group:
            for _ in range(600):
                group.start_soon(grok.get_task, task_id)

    async with anyio.create_task_group() as group:
        for grok in clients:
            group.start_soon(flood, grok)
    for grok in clients:
        await grok.aclose()
    stats = emulator.statistics()
    assert stats.rate_limited <= 0.02 * stats.requests_total  # deaf to headers: 1 in 2
    # The quota is used while both are backlogged: 12 windows admit 90 % of their 1,200. (The
    # few 429'd requests come back after the sender's retry delay, at the tail.)
    admitted = emulator.request_times(admitted_only=True)
    assert sum(1 for t in admitted if t < admitted[0] + 12 * limit.period) >= 0.9 * 1200
    assert all(grok.limiter.statistics().permits_granted >= 500 for grok in clients)  # fairly


async def test_against_a_leaky_bucket_the_limiter_keeps_its_rate_without_a_429() -> None:
    # Issue #12: a GCRA server of 200 per 6 s with a burst of 5 reports Remaining <= 4. Read as
    # a window's count, that looks like another process on the token and the pace crawls; read
    # as the bucket it is, the pace is the bucket's sustained rate, 33 a second.
    limit = RateLimit(200, 6.0)
    config = EmulatorConfig(tokens={"t": limit}, window="gcra", burst=5, seed=1)
    emulator = Emulator(config)
    grok = AsyncGrokImagine(
        api_key="t", limiter=LocalRateLimiter(limit), http_client=emulator.client("t")
    )
    async with grok:
        task_id = await grok.generate("a lighthouse")
        async with anyio.create_task_group() as group:
            for _ in range(1000):
                group.start_soon(grok.get_task, task_id)
    assert emulator.statistics().rate_limited == 0
    assert utilization(emulator, limit) >= 0.97


async def test_requests_that_never_connect_hold_no_quota() -> None:
    # Issue 25: a wrong --base-url. Every attempt fails to connect, so the server counted
    # nothing; had each permit been held, 30 attempts at 10 a minute would take 3 minutes.
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    limit = RateLimit(10, 60.0)
    limiter = LocalRateLimiter(limit)
    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    grok = AsyncGrokImagine(
        api_key="t", limiter=limiter, http_client=http, retry=RetryPolicy(attempts=0)
    )
    started = anyio.current_time()
    async with grok:
        for _ in range(30):
            with pytest.raises(APIConnectionError):
                await grok.get_task("task-1")
    assert anyio.current_time() - started < limit.interval
    assert limiter.statistics().permits_granted == 30
