"""Adaptive pacing: the bucket estimate called directly, and the strategy inside the limiter."""

from __future__ import annotations

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
    predicted, moved = bucket.take(now=at)
    bucket.report(remaining=size - 1, predicted=predicted, moved=moved, overtaken=0, now=at)
    return bucket


# -- the estimate -------------------------------------------------------------------------------


def test_before_any_answer_it_is_a_bucket_of_one_that_refills_at_the_quotas_rate() -> None:
    bucket = BucketEstimate(LIMIT, headroom=0.01)
    assert (bucket.size, bucket.level(now=0.0), bucket.reserve) == (1.0, 1.0, 0.0)
    assert bucket.ready_at(now=0.0) == 0.0
    bucket.take(now=0.0)
    # The next one a full interval later (less the headroom): even pacing.
    assert bucket.ready_at(now=0.0) == pytest.approx(1 / 0.99)


def test_the_largest_remaining_sets_the_size_within_the_quota() -> None:
    bucket = bucket_of(5)
    assert bucket.size == 5.0
    assert bucket.level(now=0.0) == pytest.approx(4.0)
    assert bucket.reserve == 1.0  # one kept back once it holds three or more
    predicted, moved = bucket.take(now=0.0)
    bucket.report(remaining=99, predicted=predicted, moved=moved, overtaken=0, now=0.0)
    assert bucket.size == LIMIT.requests  # never more than the quota


def test_an_answer_moves_the_level_by_what_the_server_says_differently() -> None:
    bucket = bucket_of(5)  # holds 4
    first = bucket.take(now=0.0)  # 3 left, as we believe
    second = bucket.take(now=0.0)  # 2
    # Someone else took two: after our first the server held 1, not 3.
    bucket.report(remaining=1, predicted=first[0], moved=first[1], overtaken=0, now=0.0)
    assert bucket.level(now=0.0) == pytest.approx(0.0)
    # The second's answer shows the same shortfall: it is not counted twice.
    bucket.report(remaining=0, predicted=second[0], moved=second[1], overtaken=0, now=0.0)
    assert bucket.level(now=0.0) == pytest.approx(0.0)
    assert bucket.level(now=2.0) == pytest.approx(2.0)  # and it refills one a second


def test_requests_still_in_flight_before_the_answered_one_count_as_spent() -> None:
    bucket = bucket_of(5)  # holds 4
    bucket.take(now=0.0)  # the first, still on its way
    second = bucket.take(now=0.0)
    # The second overtook the first: the server held 3 after it, the first not counted yet.
    bucket.report(remaining=3, predicted=second[0], moved=second[1], overtaken=1, now=0.0)
    assert bucket.level(now=0.0) == pytest.approx(2.0)


def test_the_refill_while_a_request_travelled_is_credited_once() -> None:
    bucket = bucket_of(5, at=0.0)
    for _ in range(4):
        bucket.take(now=0.0)  # empty, as far as we know
    late = bucket.take(now=1.0)  # one second later: 1 had come back, 0 left
    # It reached the server half a second later: 0.5 more had come back by then.
    bucket.report(remaining=0, predicted=late[0], moved=late[1], overtaken=0, now=1.6)
    assert bucket.level(now=1.6) == pytest.approx(0.6)  # 0 then, plus 0.6 s of refill
    again = bucket.take(now=2.0)
    bucket.report(remaining=0, predicted=again[0], moved=again[1], overtaken=0, now=2.6)
    assert bucket.level(now=2.6) == pytest.approx(0.6)  # the same travel, the same credit


def test_a_429_halves_the_rate_and_the_size_then_answers_restore_them() -> None:
    bucket = bucket_of(8)
    predicted, moved = bucket.take(now=0.0)
    bucket.refused(predicted=predicted, moved=moved, now=0.0)
    assert bucket.rate == pytest.approx(0.5)
    assert bucket.size == 4.0
    assert bucket.level(now=0.0) <= 0.0
    for _ in range(16):
        bucket.answered()
    assert bucket.rate == pytest.approx(1.0)
    for _ in range(10):
        predicted, moved = bucket.take(now=100.0)
        bucket.report(remaining=7, predicted=predicted, moved=moved, overtaken=0, now=100.0)
    assert bucket.size == 8.0
    for _ in range(20):
        bucket.refused(predicted=0.0, moved=0.0, now=200.0)
    assert bucket.rate == pytest.approx(LOWEST_FACTOR)  # never stops altogether
    assert bucket.size == 1.0


def test_latency_spread_keeps_more_in_reserve_and_slows_a_small_bucket() -> None:
    bucket = bucket_of(5)
    bucket.follow(jitter=2.0)  # answers 2 s apart: 2 requests' room of bunching
    assert (bucket.reserve, bucket.rate) == (2.0, pytest.approx(1.0))
    bucket.follow(jitter=8.0)  # more than the bucket absorbs at full rate
    assert bucket.rate == pytest.approx(0.5)  # 4 requests' room per 8 s
    assert bucket.reserve == 4.0  # never the whole bucket
    small_jitter = bucket_of(5)
    small_jitter.follow(jitter=0.5)  # half a request's room
    assert (small_jitter.reserve, small_jitter.rate) == (1.0, pytest.approx(1.0))
    window = bucket_of(10)  # the whole quota at once: a window, bounded by its places
    window.follow(jitter=5.0)
    assert (window.reserve, window.rate) == (1.0, pytest.approx(1.0))


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
