"""LocalRateLimiter on virtual time: pace, priorities, server feedback, cancellation, statistics.

Every test runs on :class:`VirtualTimeEventLoop`, so minutes of pacing take milliseconds and the
grant times are exact.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from grok_imagine_async import ConfigurationError, LocalRateLimiter, Plan, RateLimit
from grok_imagine_async._clock import DEFAULT_CLOCK
from grok_imagine_async._protocol import read_rate_limit_headers
from grok_imagine_async.abc import Permit, Priority, RateLimiter, RateLimitFeedback

pytestmark = pytest.mark.anyio

LIMIT = RateLimit(10, 10.0)  # one request a second, a slow pace that is easy to read


def max_in_window(times: list[float], period: float) -> int:
    """Most grants in any closed interval of ``period`` seconds."""
    times = sorted(times)
    return max((bisect.bisect_right(times, t + period) - i for i, t in enumerate(times)), default=0)


async def grant_all(
    limiter: LocalRateLimiter, count: int, priority: Priority = Priority.SUBMIT
) -> list[Permit]:
    """Start ``count`` acquires at once; their permits in grant order."""
    permits: list[Permit] = []

    async def one() -> None:
        permits.append(await limiter.acquire(priority=priority))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return sorted(permits, key=lambda p: p.serial)


def answer(
    permit: Permit, status: int = 200, headers: dict[str, str] | None = None
) -> RateLimitFeedback:
    """The feedback the client builds from an answer's headers."""
    return read_rate_limit_headers(
        httpx.Headers(headers), permit=permit, status_code=status, now_unix=DEFAULT_CLOCK.unix()
    )


# -- construction -------------------------------------------------------------------------------


def test_takes_a_plan_name_a_plan_or_a_rate_limit() -> None:
    assert LocalRateLimiter().limit == RateLimit(100, 60.0)
    assert LocalRateLimiter("pro").limit == RateLimit(1000, 60.0)
    assert LocalRateLimiter(Plan.ENTERPRISE).limit == RateLimit(5000, 60.0)
    assert LocalRateLimiter(RateLimit(7, 3.0)).limit == RateLimit(7, 3.0)
    assert isinstance(LocalRateLimiter(), RateLimiter)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headroom": 0.0},
        {"headroom": 0.6},
        {"default_pause": -1.0},
        {"limit": "gold"},
    ],
)
def test_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LocalRateLimiter(**kwargs)


def test_repr_shows_the_quota() -> None:
    assert repr(LocalRateLimiter(RateLimit(7, 3.0))).startswith("LocalRateLimiter(7/3s, ")


# -- pace ---------------------------------------------------------------------------------------


async def test_no_start_burst_and_never_more_than_the_quota_in_a_window() -> None:
    limiter = LocalRateLimiter(LIMIT)
    start = anyio.current_time()
    permits = await grant_all(limiter, 35)
    times = [p.granted_at for p in permits]
    assert times[0] == start  # the first request does not wait
    assert times[1] - times[0] == pytest.approx(1 / limiter.rate)  # then no burst
    assert max_in_window(times, LIMIT.period) == LIMIT.requests
    assert sum(t <= start + LIMIT.period for t in times) <= LIMIT.requests


async def answered_at_once(limiter: LocalRateLimiter, count: int) -> list[Permit]:
    """Start ``count`` calls at once, each answered (observed) the moment it is granted."""
    permits: list[Permit] = []

    async def one() -> None:
        permit = await limiter.acquire()
        permits.append(permit)
        await limiter.observe(RateLimitFeedback(permit, 200))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return sorted(permits, key=lambda p: p.serial)


async def test_a_long_run_uses_at_least_97_percent_of_the_quota() -> None:
    limit = RateLimit(100, 6.0)
    limiter = LocalRateLimiter(limit)
    permits = await answered_at_once(limiter, 1500)
    times = [p.granted_at for p in permits]
    elapsed_windows = (times[-1] - times[0]) / limit.period
    assert len(times) / (limit.requests * elapsed_windows) >= 0.97
    assert max_in_window(times, limit.period) <= limit.requests
    assert [p.serial for p in permits] == list(range(1, 1501))


async def test_permits_are_shared_by_every_caller() -> None:
    limiter = LocalRateLimiter(LIMIT)
    first: list[float] = []
    second: list[float] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _collect(limiter, 15, first))
        group.start_soon(lambda: _collect(limiter, 15, second))
    assert max_in_window(first + second, LIMIT.period) <= LIMIT.requests


async def _collect(limiter: LocalRateLimiter, count: int, into: list[float]) -> None:
    for _ in range(count):
        into.append((await limiter.acquire()).granted_at)


# -- priorities ---------------------------------------------------------------------------------


async def test_polls_go_before_submissions_that_waited_longer_and_fifo_within_each() -> None:
    limiter = LocalRateLimiter(LIMIT)
    served: list[str] = []

    async def one(name: str, priority: Priority) -> None:
        await limiter.acquire(priority=priority)
        served.append(name)

    async with anyio.create_task_group() as group:
        for name in ("s1", "s2", "s3", "s4"):
            group.start_soon(one, name, Priority.SUBMIT)
        await anyio.sleep(0.1)  # s1 went at once; s2 to s4 wait for the next slots
        for name in ("p1", "p2"):
            group.start_soon(one, name, Priority.POLL)
    assert served == ["s1", "p1", "p2", "s2", "s3", "s4"]


async def test_callers_back_in_line_within_a_burst_keep_their_priority() -> None:
    """When a window reopens, its places go to the best priority also among callers that come
    back for another permit right after theirs (a scheduler's submitters, between polls).

    The one-waiter-line core handed out every slot due at once without letting the callers it
    served run: a submitter back with its next job found the low-priority polls served first,
    and a quota-bound batch lost its submissions' places to them (issue 12, 1.14x the bound).
    """
    limiter = LocalRateLimiter(RateLimit(10, 10.0))
    first = await limiter.acquire()
    await limiter.observe(answer(first, headers={"X-RateLimit-Remaining": "9"}))
    rest = [await limiter.acquire() for _ in range(9)]  # a window server: all at once
    for left, permit in enumerate(reversed(rest)):
        await limiter.observe(answer(permit, headers={"X-RateLimit-Remaining": str(left)}))
    start = anyio.current_time()  # the window's places all free at once, a window from now
    served: list[str] = []

    async def submitter(name: str) -> None:
        for round_ in range(2):
            await limiter.acquire(priority=Priority.HIGH)
            served.append(f"{name}{round_}")
            await anyio.lowlevel.checkpoint()  # the request goes out; then the next job

    async def poll() -> None:
        await limiter.acquire(priority=Priority.LOW)
        served.append("poll")

    async with anyio.create_task_group() as group:
        group.start_soon(poll)  # first in: it waits for the window on everyone's behalf
        await anyio.sleep(1.0)
        for name in "abc":
            group.start_soon(submitter, name)
    assert anyio.current_time() - start >= 10.0 and len(served) == 7
    assert served[-1] == "poll"


# -- server feedback: pauses --------------------------------------------------------------------


async def paced_after(
    limiter: LocalRateLimiter, feedback: RateLimitFeedback, count: int, *, delay: float = 0.0
) -> tuple[float, list[float]]:
    """Start ``count`` waiters, report ``feedback`` after ``delay``; (report time, grant times)."""
    times: list[float] = []
    reported = 0.0

    async def one(priority: Priority) -> None:
        times.append((await limiter.acquire(priority=priority)).granted_at)

    async with anyio.create_task_group() as group:
        for i in range(count):
            group.start_soon(one, Priority.POLL if i % 3 == 0 else Priority.SUBMIT)
        await anyio.sleep(delay)
        reported = anyio.current_time()
        await limiter.observe(feedback)
    return reported, sorted(times)


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"Retry-After": "4"}, 4.0),
        ({"Retry-After": "4", "X-RateLimit-Reset": "7", "X-RateLimit-Remaining": "0"}, 4.0),
        ({"X-RateLimit-Reset": "7"}, 7.0),
        ({"X-RateLimit-Reset": "unix+7"}, 7.0),
        ({}, 10.0),  # nothing: one period, the only wait that clears any window
    ],
    ids=["retry-after", "retry-after-wins", "reset-seconds", "reset-unix", "no-headers"],
)
async def test_429_pauses_every_waiter_then_resumes_at_full_pace(
    headers: dict[str, str], pause: float
) -> None:
    limiter = LocalRateLimiter(LIMIT)
    first = await limiter.acquire()
    if headers.get("X-RateLimit-Reset") == "unix+7":
        headers = {"X-RateLimit-Reset": f"{DEFAULT_CLOCK.unix() + 7:.3f}"}
    # Reported while the pump already waits for its next slot: that slot must not be used.
    reported, times = await paced_after(limiter, answer(first, 429, headers), 12, delay=0.3)
    assert times[0] == pytest.approx(reported + pause, abs=2e-3)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) == pytest.approx(1 / limiter.rate)  # back at full pace, no burst either
    assert max_in_window([first.granted_at, *times], LIMIT.period) <= LIMIT.requests
    stats = limiter.statistics()
    assert (stats.server_pauses, stats.rate_limited_responses) == (1, 1)


async def test_a_custom_default_pause_applies_when_a_429_says_nothing() -> None:
    limiter = LocalRateLimiter(LIMIT, default_pause=2.0)
    first = await limiter.acquire()
    reported, times = await paced_after(limiter, answer(first, 429), 3)
    # Plus a sliver: the slot the pump had already taken when the 429 came is thrown away.
    assert reported + 2.0 <= times[0] <= reported + 2.05


async def test_a_pause_is_visible_in_statistics_while_it_lasts() -> None:
    limiter = LocalRateLimiter(LIMIT)
    permit = await limiter.acquire()
    now = anyio.current_time()
    await limiter.observe(answer(permit, 429, {"Retry-After": "3"}))
    assert limiter.statistics().paused_until == pytest.approx(now + 3)
    await limiter.observe(answer(permit, 429, {"Retry-After": "5"}))  # extends, same pause
    assert limiter.statistics().paused_until == pytest.approx(now + 5)
    await anyio.sleep(5)
    stats = limiter.statistics()
    assert (stats.paused_until, stats.server_pauses, stats.rate_limited_responses) == (None, 1, 2)


async def test_a_reset_far_away_because_of_a_clock_jump_pauses_one_period_at_most() -> None:
    limiter = LocalRateLimiter(LIMIT)
    first = await limiter.acquire()
    # Our wall clock jumped an hour back: the server's Unix reset now looks an hour away.
    jumped = read_rate_limit_headers(
        httpx.Headers({"X-RateLimit-Reset": f"{DEFAULT_CLOCK.unix() + 3:.0f}"}),
        permit=first,
        status_code=429,
        now_unix=DEFAULT_CLOCK.unix() - 3600,
    )
    assert jumped.reset_after is not None and jumped.reset_after > 3600
    feedback = RateLimitFeedback(first, 429, remaining=0, reset_after=jumped.reset_after)
    reported, times = await paced_after(limiter, feedback, 2)
    assert times[0] == pytest.approx(reported + LIMIT.period)


async def test_a_reset_in_the_past_after_a_clock_jump_still_waits_one_interval() -> None:
    limiter = LocalRateLimiter(LIMIT)
    first = await limiter.acquire()
    headers = {"X-RateLimit-Reset": f"{DEFAULT_CLOCK.unix() - 50:.0f}"}  # wall clock jumped ahead
    reported, times = await paced_after(limiter, answer(first, 429, headers), 2)
    # Not at once: one interval of the pace the 429 interrupted.
    interval = 1 / limiter.estimate.plan_pace
    assert reported + interval <= times[0] <= reported + 1.5 * interval + 1e-6


# -- server feedback: fewer remaining than we think ---------------------------------------------


# -- cancellation -------------------------------------------------------------------------------


async def test_cancelled_waiters_take_no_permit_and_hold_up_nobody() -> None:
    limiter = LocalRateLimiter(LIMIT)
    reference = [p.granted_at for p in await grant_all(LocalRateLimiter(LIMIT), 6)]
    start = anyio.current_time()
    kept: list[float] = []

    async def keep() -> None:
        kept.append((await limiter.acquire()).granted_at - start)

    async def give_up(after: float) -> None:
        with anyio.move_on_after(after):
            await limiter.acquire()
            pytest.fail("should have been cancelled first")

    async with anyio.create_task_group() as group:
        group.start_soon(keep)  # the first: granted at once
        group.start_soon(give_up, 0.2)  # the pump when cancelled
        group.start_soon(give_up, 0.3)
        for _ in range(3):
            group.start_soon(keep)
        group.start_soon(give_up, 1.0)
        group.start_soon(keep)
        group.start_soon(give_up, 3.0)
    offsets = [t - reference[0] for t in reference[:5]]
    assert kept == pytest.approx(offsets)  # as if the cancelled ones never came
    stats = limiter.statistics()
    assert (stats.permits_granted, stats.waiting) == (5, 0)


async def test_a_waiter_cancelled_right_as_it_is_promoted_passes_the_turn_on() -> None:
    limiter = LocalRateLimiter(LIMIT)
    await limiter.acquire()
    times: list[float] = []
    promoted: asyncio.Task[Permit] | None = None

    async def pump() -> None:
        times.append((await limiter.acquire()).granted_at)
        # acquire() just promoted the next waiter to pump; cancel it before it runs (a bare
        # task.cancel() lands even though its wake-up is already scheduled).
        assert promoted is not None
        promoted.cancel()

    async def last() -> None:
        times.append((await limiter.acquire()).granted_at)

    async with anyio.create_task_group() as group:
        group.start_soon(pump)
        await anyio.lowlevel.checkpoint()
        promoted = asyncio.get_running_loop().create_task(limiter.acquire())
        await anyio.lowlevel.checkpoint()
        group.start_soon(last)
    with pytest.raises(asyncio.CancelledError):
        await promoted
    assert times[1] - times[0] == pytest.approx(1 / limiter.rate)
    assert limiter.statistics().permits_granted == 3


async def test_a_waiter_cancelled_just_after_its_permit_came_hands_it_to_the_next() -> None:
    # Two identical limiters arm identical timers, so the second one's caller runs in the
    # instant between the first one handing a slot to a waiter and that waiter resuming.
    mine, other = LocalRateLimiter(LIMIT), LocalRateLimiter(LIMIT)
    await mine.acquire()
    await other.acquire()
    loop = asyncio.get_running_loop()
    permits: dict[str, Permit] = {}
    unlucky: asyncio.Task[Permit] | None = None

    async def take(limiter: LocalRateLimiter, name: str, priority: Priority) -> None:
        permits[name] = await limiter.acquire(priority=priority)
        if name == "other":
            assert unlucky is not None
            unlucky.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(take, mine, "pump", Priority.SUBMIT)
        group.start_soon(take, other, "other", Priority.SUBMIT)
        await anyio.lowlevel.checkpoint()
        unlucky = loop.create_task(mine.acquire(priority=Priority.POLL))  # head of the queue
        await anyio.lowlevel.checkpoint()
        group.start_soon(take, mine, "next", Priority.POLL)
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert permits["next"].granted_at == permits["other"].granted_at  # the same slot, on time
    assert permits["next"].serial == 2
    assert permits["pump"].granted_at - permits["next"].granted_at == pytest.approx(1 / mine.rate)
    assert mine.statistics().permits_granted == 3


# -- statistics ---------------------------------------------------------------------------------


async def test_statistics_count_permits_and_waiting_time() -> None:
    limiter = LocalRateLimiter(LIMIT)
    interval = 1 / limiter.rate
    seen_waiting: list[int] = []

    async def watch() -> None:
        await anyio.sleep(0.1)
        seen_waiting.append(limiter.statistics().waiting)

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        group.start_soon(grant_all, limiter, 3)
    stats = limiter.statistics()
    assert seen_waiting == [2]
    assert stats.permits_granted == 3
    assert stats.waiting == 0
    # Granted at 0, 1 and 2 intervals.
    assert stats.total_wait_time == pytest.approx(3.0 * interval)
    assert (stats.server_pauses, stats.rate_limited_responses, stats.paused_until) == (0, 0, None)
    assert stats.limit == LIMIT


async def test_stalled_for_counts_only_time_with_no_permit_granted() -> None:
    limiter = LocalRateLimiter(LIMIT)
    permit = await limiter.acquire()
    assert limiter.statistics().stalled_for == 0.0  # nobody waits
    await limiter.observe(answer(permit, 429, {"Retry-After": "8"}))
    seen: list[float] = []

    async def watch() -> None:
        for _ in range(20):
            await anyio.sleep(1.0)
            seen.append(limiter.statistics().stalled_for)

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        group.start_soon(grant_all, limiter, 10)
    # Waiting through the pause with nothing granted, then served once a second: a queue that
    # moves never looks stalled, however long its callers wait in all.
    assert seen[:7] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert max(seen[8:]) <= 1.0 / limiter.rate
    assert limiter.statistics().stalled_for == 0.0


def test_runs_on_trio_too() -> None:
    # One core on anyio: nothing in the local limiter is asyncio's. Real time, three permits
    # a tenth of a second apart; only their order is checked.
    pytest.importorskip("trio")

    async def main() -> list[int]:
        limiter = LocalRateLimiter(RateLimit(10, 1.0))
        permits = [await limiter.acquire() for _ in range(3)]
        await limiter.observe(RateLimitFeedback(permits[-1], 200, remaining=7))
        return [permit.serial for permit in permits]

    assert anyio.run(main, backend="trio") == [1, 2, 3]


async def test_requests_that_never_answer_hold_up_a_bucket_for_a_second_at_most() -> None:
    # A bucket of 5 at 10 a second. While no answer comes, no more than it holds are on their
    # way (a stalled server would count them at once); but requests that are lost or whose
    # callers were cancelled never answer, and must not stop the limiter until they are
    # forgotten a period later.
    limit = RateLimit(100, 10.0)
    limiter = LocalRateLimiter(limit)
    first = await limiter.acquire()
    await anyio.sleep(0.01)
    await limiter.observe(RateLimitFeedback(first, 200, remaining=4))
    lost = [await limiter.acquire() for _ in range(5)]  # never answered
    started = anyio.current_time()
    await limiter.acquire()
    waited = anyio.current_time() - started
    assert lost[-1].granted_at - lost[0].granted_at < 1.0  # the bucket's burst, then its pace
    assert 0.5 < waited < 2.0  # held while silent, then let go (STALL_WAIT), not for 10 s
