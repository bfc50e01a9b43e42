"""K = 4 OS processes, one token, one Redis: they must behave as one client at the plan's rate.

Each worker (``tests/_redis_worker.py``) has its own ``AsyncGrokImagine`` and
``RedisRateLimiter`` and sends through uvicorn to one emulator on 127.0.0.1 that enforces
100 requests per sliding 3 s window. The emulator's own log of arrival times is the judge.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Literal

import pytest
from _redis_worker import (
    WARM_UP_TOKEN,
    RedisServer,
    collect,
    start_workers,
    warm_up_emulator,
)

from grok_imagine_async import RateLimit

pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')
pytest.importorskip("uvicorn", reason='needs the "emulator" extra')

from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread

pytestmark = [pytest.mark.redis, pytest.mark.integration, pytest.mark.wallclock_rates]

TOKEN = "sk-test-SECRET-shared-token"
LIMIT = RateLimit(100, 3.0)
K = 4


def new_emulator(*, seed: int, reset_format: Literal["seconds", "unix"] = "seconds") -> Emulator:
    tokens = {TOKEN: LIMIT, WARM_UP_TOKEN: LIMIT}
    return Emulator(
        EmulatorConfig(tokens=tokens, window="sliding", reset_format=reset_format, seed=seed)
    )


def report(emulator: Emulator, summaries: list[dict[str, Any]]) -> str:
    """What a failed assertion should show: the emulator's verdict and each worker's counters."""
    times = emulator.request_times(TOKEN)
    gaps = sorted(round((b - a) * 1000, 1) for a, b in itertools.pairwise(times))
    return (
        f"429s={emulator.statistics().rate_limited} "
        f"max_window={emulator.max_window_count(LIMIT.period, TOKEN)} "
        f"utilization={utilization(times):.3f} shortest_gaps_ms={gaps[:12]} "
        f"longest_gaps_ms={gaps[-6:]} "
        f"workers={summaries}"
    )


def wait_for_requests(emulator: Emulator, count: int, *, timeout: float = 60.0) -> None:
    """Block until the emulator has received ``count`` requests under :data:`TOKEN`."""
    deadline = time.monotonic() + timeout
    while len(emulator.request_times(TOKEN)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the workers sent fewer than {count} requests in {timeout} s")
        time.sleep(0.01)


def utilization(times: list[float]) -> float:
    """Achieved rate between the first and the last arrival, as a fraction of the plan's rate."""
    return (len(times) - 1) / (times[-1] - times[0]) / LIMIT.per_second


@pytest.mark.parametrize(
    ("skews", "reset_format"),
    [
        pytest.param([0.0] * K, "seconds", id="same-clocks"),
        # Clocks 1 s apart; with Unix-time resets, each client also reads the headers skewed.
        pytest.param([-0.5, 0.5, -0.5, 0.5], "unix", id="skew-500ms"),
    ],
)
def test_four_processes_on_one_token_pace_as_one_client(
    redis_server: RedisServer, skews: list[float], reset_format: Literal["seconds", "unix"]
) -> None:
    emulator = new_emulator(seed=1, reset_format=reset_format)
    per_worker = 50  # 200 requests: two windows' worth, about 6 s
    with serve_in_thread(emulator) as base_url:
        warm_up_emulator(base_url)
        workers = start_workers(
            redis_url=redis_server.url,
            base_url=base_url,
            token=TOKEN,
            limit=LIMIT,
            per_worker=per_worker,
            skews=skews,
        )
        summaries = collect(workers)

    context = report(emulator, summaries)
    assert [s["errors"] for s in summaries] == [[]] * K, context
    assert sum(s["sent"] for s in summaries) == K * per_worker, context
    # One round trip per slot (per permit, plus any slot a stalled process gave up); feedback
    # costs one more only when the window looks full beyond what the last count explains.
    assert all(s["sent"] == s["permits"] for s in summaries), context
    trips = sum(s["redis_calls"] - s["late_slots"] for s in summaries)
    assert K * per_worker <= trips <= 1.02 * K * per_worker, context
    assert emulator.statistics().rate_limited == 0, context
    assert emulator.max_window_count(LIMIT.period, TOKEN) <= LIMIT.requests, context
    assert utilization(emulator.request_times(TOKEN)) >= 0.95, context


def test_redis_killed_mid_run_falls_back_and_returns_without_a_burst(
    redis_server: RedisServer,
) -> None:
    emulator = new_emulator(seed=2)
    per_worker = 75  # about 9 s at the plan's rate, Redis gone for 2 s of it
    with serve_in_thread(emulator) as base_url:
        warm_up_emulator(base_url)
        workers = start_workers(
            redis_url=redis_server.url,
            base_url=base_url,
            token=TOKEN,
            limit=LIMIT,
            per_worker=per_worker,
            skews=[0.0] * K,
            start_in=2.0,
            # Workers notice the return at different moments: the first back must not take
            # the whole rate while the others still send their fallback share.
            probe_intervals=[0.3, 1.0, 1.7, 2.4],
        )
        # Fault injection a quarter into the run, judged by what the emulator has received:
        # on a loaded machine the workers' start (imports) may take longer than ``start_in``.
        wait_for_requests(emulator, K * per_worker // 4)
        redis_server.kill()
        killed_at = time.monotonic()  # the emulator's clock: the loop time of its thread
        time.sleep(2.0)
        redis_server.start()
        restarted_at = time.monotonic()
        summaries = collect(workers)

    context = report(emulator, summaries)
    assert [s["errors"] for s in summaries] == [[]] * K, context
    assert sum(s["sent"] for s in summaries) == K * per_worker, context
    assert all(s["fallbacks"] == 1 and s["recoveries"] == 1 for s in summaries), context
    assert emulator.statistics().rate_limited == 0, context
    assert emulator.max_window_count(LIMIT.period, TOKEN) <= LIMIT.requests, context
    # Meanwhile each worker paced itself at a quarter of the plan: together, nearly all of it.
    times = emulator.request_times(TOKEN)
    outage = [t for t in times if killed_at + 0.2 <= t <= restarted_at]
    assert len(outage) / (restarted_at - killed_at - 0.2) / LIMIT.per_second >= 0.85, context
    assert utilization(times) >= 0.9, context
