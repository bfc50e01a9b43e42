"""The poll schedule through the real scheduler and the emulator, on a virtual clock.

Both regimes: a batch that saturates the quota (few polls per job, the prior forgotten) and a
few jobs for an idle quota (each noticed within about a second).
"""

from __future__ import annotations

import random
from typing import Any, Literal

import anyio
import pytest

from grok_imagine_async import AsyncGrokImagine, JobResult, RateLimit
from grok_imagine_async.batch import BreakerPolicy, SchedulerConfig
from grok_imagine_async.testing import Emulator

TOKEN = "poll-token"
BATCH_QUOTA = RateLimit(200, 6.0)


# The plugin's emulator and client at the real service's times on the suite's virtual clock:
# the batch's quota unless a test's marker says, and the durations, seed and window it names.
pytestmark = pytest.mark.grok_emulator(
    tokens={TOKEN: BATCH_QUOTA}, duration_sigma=0.5, seed=3, time_scale=1
)


def emulating(name: str, values: list[Any]) -> pytest.MarkDecorator:
    """Parametrize ``name``, and set each value on the test's emulator as well (``median``
    is its ``duration_median``)."""
    field = "duration_median" if name == "median" else name
    marked = [pytest.param(v, marks=pytest.mark.grok_emulator(**{field: v})) for v in values]
    return pytest.mark.parametrize(name, marked)


async def run_batch(
    client: AsyncGrokImagine, jobs: int, **options: Any
) -> tuple[list[JobResult], float]:
    start = anyio.current_time()
    prompts = [f"clip {i}" for i in range(jobs)]
    async with client.generate_many(
        prompts, SchedulerConfig(rng=random.Random(1), **options)
    ) as results:
        done = [result async for result in results]
    return done, anyio.current_time() - start


def latencies(emu: Emulator, results: list[JobResult]) -> list[float]:
    found = []
    for result in results:
        assert result.task_id is not None
        times = emu.task_times(result.task_id)
        assert times is not None
        found.append(result.finished_at - times[1])
    return sorted(found)


@pytest.mark.anyio
@emulating("median", [3.0, 300.0])  # the 30 s prior ten times too long, too short
async def test_a_saturated_batch_forgets_a_wrong_prior(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, median: float
) -> None:
    # The breaker's warm-up waits for a first completion (half a generation, ~140 s here): a
    # cost of its own (tests/scheduling/test_scheduler_breaker.py), not the schedule's.
    results, makespan = await run_batch(grok_client, 400, breaker=None)
    assert all(r.ok for r in results) and len(results) == 400
    stats = grok_emulator.statistics()
    assert stats.rate_limited == 0
    assert stats.requests_total / 400 <= 2.3  # a POST and about one poll per job
    longest = max(
        finished - created
        for created, finished in map(grok_emulator.task_times, grok_emulator.task_ids())
    )
    bound = max(800 / BATCH_QUOTA.per_second, longest)
    # Today's code ended a 3 s batch at 2.4x this bound (first looks at the prior's 65 s).
    assert makespan < 1.3 * bound


def window_bound(emu: Emulator, limit: RateLimit) -> float:
    """The soonest any client that never sends more than the quota in a window can end.

    ``2N`` requests take ``floor((2N - 1) / quota)`` whole windows after the first, and the
    k-th task cannot be created before window ``floor((k - 1) / quota)``, nor seen done before
    its duration has passed since.
    """
    durations = [finished - created for created, finished in map(emu.task_times, emu.task_ids())]
    jobs, quota = len(durations), limit.requests
    requests = ((2 * jobs - 1) // quota) * limit.period
    tasks = max(((k - 1) // quota) * limit.period + d for k, d in enumerate(durations, 1))
    return max(requests, tasks)


@pytest.mark.anyio
@emulating("window", ["sliding", "fixed"])
@emulating("median", [3.0, 6.0, 120.0])
@pytest.mark.grok_emulator(seed=1)
async def test_a_quota_bound_batch_ends_near_the_window_bound(
    grok_client: AsyncGrokImagine,
    grok_emulator: Emulator,
    median: float,
    window: Literal["sliding", "fixed"],
) -> None:
    """Issue 12's bound, on a batch that leaves a little room in its last window.

    390 jobs, not 400: 800 requests at 200 a window need exactly four windows, so a single
    poll that finds its job running pushes the end into a fifth (1.33x); with 780 the last
    window has room for twenty. The code before this fix sent the first probes' polls ahead of
    the submissions still queued and ended the 400-job, 3 s batch at 1.35x.

    The bound is the poll planner's and the limiter's, so the breaker's warm-up is off here:
    the default holds a fresh batch to ``warmup`` tasks until it sees the provider work, which
    costs the first window's burst (see the next test).
    """
    results, makespan = await run_batch(grok_client, 390, breaker=BreakerPolicy(warmup=None))
    assert all(r.ok for r in results) and len(results) == 390
    stats = grok_emulator.statistics()
    assert stats.rate_limited == 0
    assert stats.requests_total / 390 <= 2.3
    assert makespan <= 1.10 * window_bound(grok_emulator, BATCH_QUOTA)


@pytest.mark.anyio
@emulating("median", [3.0, 6.0, 120.0])
@pytest.mark.grok_emulator(seed=1)
async def test_the_default_warmup_costs_a_bounded_share_of_a_quota_bound_batch(
    grok_client: AsyncGrokImagine,
    grok_emulator: Emulator,
    median: float,
) -> None:
    """The price of the breaker's default warm-up, stated: at most 1.40x the window bound.

    The warm-up holds a fresh batch to ten tasks until one of them completes (issue 24): a
    batch whose every prompt is refused then pays for ten tasks, not for a window of the quota.
    A batch that fills whole windows at once pays for it with the start of its first window:
    measured 1.28x and 1.36x on these 18 s and 24 s batches, and under 1.25x from two-minute
    jobs on (the wait is about the shortest of the first ten jobs).
    """
    results, makespan = await run_batch(grok_client, 390)
    assert all(r.ok for r in results) and len(results) == 390
    assert grok_emulator.statistics().rate_limited == 0
    assert makespan <= 1.40 * window_bound(grok_emulator, BATCH_QUOTA)


@pytest.mark.anyio
@pytest.mark.grok_emulator(duration_median=3.0, seed=1)
async def test_probes_wait_behind_queued_submissions(grok_client: AsyncGrokImagine) -> None:
    """While submissions fill the quota, no poll (probes included) goes ahead of one.

    The breaker's canary and warm-up looks do go first by design (an outage must show before
    the batch pays for more): they are off here, the planner's own probes are what is tested.
    """
    sent: list[str] = []

    async def note(request: Any) -> None:
        sent.append(request.method)

    grok_client._http.event_hooks["request"].append(note)
    results, _ = await run_batch(grok_client, 400, breaker=None)
    assert len(results) == 400
    assert sent.index("GET") > sent.index("POST") and "POST" not in sent[sent.index("GET") :]


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["generate_many", "generate_and_wait"])
@pytest.mark.grok_emulator(tokens={TOKEN: "pro"}, duration_median=6.0)
async def test_few_jobs_for_the_quota_are_noticed_within_a_second(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, how: str
) -> None:
    start = anyio.current_time()
    results: list[JobResult] = []
    if how == "generate_many":
        results, _ = await run_batch(grok_client, 8)
        found = latencies(grok_emulator, results)
    else:
        found = []

        async def one(i: int) -> None:
            task = await grok_client.generate_and_wait(f"clip {i}")
            times = grok_emulator.task_times(task.task_id)
            assert times is not None
            found.append(anyio.current_time() - times[1])

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        found.sort()
    assert len(found) == 8
    assert found[3] <= 1.0  # the median: 6 s jobs, max(1 s, 5 %)
    assert found[-1] <= 2.5  # every one
    assert grok_emulator.statistics().rate_limited == 0
    assert anyio.current_time() - start < 60


@pytest.mark.anyio
@emulating("seed", [1, 2, 3, 4, 5])
@pytest.mark.grok_emulator(tokens={TOKEN: "free"}, duration_median=30.0)
async def test_few_jobs_on_the_free_plan_use_its_spare_quota(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, seed: int
) -> None:
    """Issue 25: 8 jobs of 30 s on 100 requests a minute were noticed 23 s late at the median
    (58 s at worst) while two thirds of the quota went unused: a per-job share of the quota
    (1.33 / 8 polls a second) called the batch saturated. The quota's actual room pays for
    looks at the jobs most likely done. Durations spread (sigma 0.5, 13-70 s): with 80 looks
    a minute no client can look at all eight every 1.5 s while they may end."""
    results, _ = await run_batch(grok_client, 8)
    found = latencies(grok_emulator, results)
    assert found[3] <= 3.5  # the median
    assert found[-1] <= 9.0  # every one
    assert grok_emulator.statistics().rate_limited == 0
