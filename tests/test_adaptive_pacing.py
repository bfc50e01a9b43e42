"""Adaptive pacing: the bucket estimate called directly, and the strategy inside the limiter."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from grok_imagine_async import LocalRateLimiter, Permit, RateLimit, RateLimitFeedback
from grok_imagine_async._clock import DEFAULT_CLOCK
from grok_imagine_async._limiting.adaptive import LOWEST_FACTOR, BucketEstimate
from grok_imagine_async._limiting.pacing import LatencySpread
from grok_imagine_async._limiting.strategies import EvenPacing, WindowPacing
from grok_imagine_async.testing import VirtualTimeEventLoop

LIMIT = RateLimit(10, 10.0)  # one request's room a second


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"loop_factory": VirtualTimeEventLoop})


def bucket_of(size: int, *, at: float = 0.0) -> BucketEstimate:
    """An estimate that has seen one answer saying the server held ``size - 1`` after it."""
    bucket = BucketEstimate(LIMIT, headroom=0.0)
    bucket.take(now=at)
    bucket.report(remaining=size - 1, now=at)
    return bucket


# -- the estimate -------------------------------------------------------------------------------


def test_before_any_answer_it_is_a_bucket_of_one_that_refills_at_the_quotas_rate() -> None:
    bucket = BucketEstimate(LIMIT, headroom=0.01)
    assert (bucket.size, bucket.level(now=0.0), bucket.reserve) == (1.0, 1.0, 0.0)
    assert bucket.ready_at(now=0.0, in_flight=0) == 0.0
    bucket.take(now=0.0)
    assert bucket.ready_at(now=0.0, in_flight=1) == math.inf  # the first waits for its answer
    bucket.answered(now=0.1)  # which says nothing of the bucket: even pacing from then on
    assert bucket.ready_at(now=0.1, in_flight=0) == pytest.approx(1 / 0.99)
    bucket.take(now=1 / 0.99)
    assert bucket.ready_at(now=1.1, in_flight=1) == pytest.approx(2 / 0.99)


def test_the_largest_remaining_sets_the_size_within_the_quota() -> None:
    bucket = bucket_of(5)
    assert bucket.size == 5.0
    assert bucket.level(now=0.0) == 4.0
    assert bucket.reserve == 1.0  # one kept back once it holds three or more
    bucket.report(remaining=99, now=0.0)
    assert bucket.size == LIMIT.requests  # never more than the quota


def test_requests_in_flight_count_as_taken() -> None:
    bucket = bucket_of(5)  # holds 4
    assert bucket.ready_at(now=0.0, in_flight=2) == 0.0  # 4 - 2 leaves one and the reserve
    assert bucket.ready_at(now=0.0, in_flight=3) == pytest.approx(1.0)  # a second's refill
    assert bucket.ready_at(now=0.0, in_flight=5) == math.inf  # only answers make room


def test_the_newest_answer_overrides_the_estimate_and_it_refills_up_to_the_size() -> None:
    bucket = bucket_of(5)
    bucket.report(remaining=1, now=1.0)  # someone else took some: the server's word
    assert bucket.level(now=1.0) == 1.0
    assert bucket.level(now=3.0) == pytest.approx(3.0)
    assert bucket.level(now=60.0) == 5.0


def test_a_full_window_refills_at_its_reset_not_before() -> None:
    window = bucket_of(10)  # the whole quota at once: a window's count
    assert window.is_window
    window.report(remaining=0, now=1.0, reset_after=4.0)
    assert window.level(now=4.9) == 0.0
    assert window.level(now=6.0) == pytest.approx(1.0)
    bucket = bucket_of(4)  # a bucket of 4 of a quota of 10: refills as it goes
    bucket.report(remaining=0, now=1.0, reset_after=4.0)
    assert bucket.level(now=2.0) == pytest.approx(1.0)


def test_a_429_halves_the_rate_and_the_size_then_answers_restore_them() -> None:
    bucket = bucket_of(8)
    bucket.refused(now=0.0)
    assert bucket.rate == pytest.approx(0.5)
    assert bucket.size == 4.0
    assert bucket.level(now=0.0) == 0.0
    for _ in range(16):
        bucket.answered()
    assert bucket.rate == pytest.approx(1.0)
    for _ in range(10):
        bucket.report(remaining=7, now=100.0)
    assert bucket.size == 8.0
    for _ in range(20):
        bucket.refused(now=200.0)
    assert bucket.rate == pytest.approx(LOWEST_FACTOR)  # never stops altogether
    assert bucket.size == 1.0


def test_a_request_overtaken_on_the_way_is_taken_when_its_answer_comes() -> None:
    bucket = bucket_of(5)
    bucket.report(remaining=3, now=0.0)  # a newer request's answer; an older one in flight
    bucket.answered(overtaken=True, now=0.0)  # the older one's: maybe counted after it
    assert bucket.level(now=0.0) == 2.0
    bucket.answered(now=0.0)  # an answer that was not overtaken changes nothing
    assert bucket.level(now=0.0) == 2.0


# -- in the limiter ---------------------------------------------------------------------------


def answer(permit: Permit, remaining: int | None, status: int = 200) -> RateLimitFeedback:
    return RateLimitFeedback(permit, status, remaining=remaining, reset_after=1.0)


@pytest.mark.anyio
async def test_a_small_remaining_is_a_small_bucket_not_someone_else() -> None:
    # A leaky bucket of 5 that refills one a second, as a GCRA server reports it. Even pacing
    # would read Remaining 4 out of 10 as another process's traffic and slow down.
    limiter = LocalRateLimiter(LIMIT, pacing="adaptive", headroom=0.01)
    start = anyio.current_time()
    first = await limiter.acquire()
    await limiter.observe(answer(first, 4))
    burst = [await limiter.acquire() for _ in range(3)]  # one kept in reserve
    assert [p.granted_at - start for p in burst] == [0.0, 0.0, 0.0]
    nxt = await limiter.acquire()
    assert nxt.granted_at - start == pytest.approx(1 / 0.99)  # then at the bucket's rate
    assert limiter.statistics().server_pauses == 0


@pytest.mark.anyio
async def test_an_answer_that_shows_room_wakes_the_waiting_pump() -> None:
    limiter = LocalRateLimiter(RateLimit(100, 60.0), pacing="adaptive")
    start = anyio.current_time()
    first = await limiter.acquire()
    granted: list[float] = []

    async def take(count: int) -> None:
        for _ in range(count):
            granted.append((await limiter.acquire()).granted_at - start)

    async with anyio.create_task_group() as group:
        group.start_soon(take, 50)
        await anyio.sleep(0.1)  # the pump waits for the bucket of one to refill (0.6 s)
        await limiter.observe(answer(first, 99))  # a window: 99 more now
    assert granted[:48] == pytest.approx([0.1] * 48)  # at once, two kept back in reserve...
    assert all(t < 1.0 for t in granted)  # ...and the rest as the assumed refill allows


@pytest.mark.anyio
async def test_a_429_pauses_adaptive_pacing_for_retry_after() -> None:
    limiter = LocalRateLimiter(LIMIT, pacing="adaptive")
    first = await limiter.acquire()
    await limiter.observe(RateLimitFeedback(first, 429, remaining=0, retry_after=4.0))
    after = await limiter.acquire()
    assert after.granted_at - first.granted_at == pytest.approx(4.0, abs=1e-6)
    stats = limiter.statistics()
    assert (stats.server_pauses, stats.rate_limited_responses) == (1, 1)


# -- the other strategies, alone ----------------------------------------------------------------


@pytest.mark.anyio
async def test_even_pacing_waits_out_the_hold_then_takes_slots_one_interval_apart() -> None:
    strategy = EvenPacing(LIMIT, headroom=0.01, clock=DEFAULT_CLOCK, latency=LatencySpread())
    assert not strategy.reads_remaining
    start = anyio.current_time()
    slots = []
    for _ in range(3):
        await strategy.wait_for_slot(lambda: start + 5.0)  # a pause until 5 s
        slots.append(anyio.current_time() - start)
    interval = 1 / strategy.rate
    assert slots == pytest.approx([5.0, 5.0 + interval, 5.0 + 2 * interval])


@pytest.mark.anyio
async def test_window_pacing_strategy_wakes_when_an_answer_frees_a_place() -> None:
    strategy = WindowPacing(RateLimit(1, 10.0), headroom=0.01, clock=DEFAULT_CLOCK)
    start = anyio.current_time()
    await strategy.wait_for_slot(lambda: -1.0)
    strategy.granted(1, now=start)

    async def answer_soon() -> None:
        await anyio.sleep(2.0)
        strategy.answered(RateLimitFeedback(Permit(start, 1), 200), now=anyio.current_time())

    async with anyio.create_task_group() as group:
        group.start_soon(answer_soon)
        await strategy.wait_for_slot(lambda: -1.0)
    # Unanswered, the place was held 10 + 10.1 s; answered at 2 s, until 2 + 10.1 s.
    assert anyio.current_time() - start == pytest.approx(12.1)
