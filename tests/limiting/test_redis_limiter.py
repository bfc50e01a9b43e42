"""RedisRateLimiter against a real redis-server started for these tests (127.0.0.1 only).

Windows are scaled down (tens of requests per second) so each test runs in a second or two of
real time: the pacing reads Redis's own clock, which a virtual event loop cannot move.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _redis_worker import RedisServer

from grok_imagine_async import ConfigurationError, RateLimit
from grok_imagine_async.abc import Permit, Priority, RateLimitFeedback

redis_asyncio = pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')

from grok_imagine_async.redis import (  # noqa: E402
    RedisRateLimiter,
    RedisUnavailableError,
)
from grok_imagine_async.redis._limiter import fallback_limit  # noqa: E402
from grok_imagine_async.redis._script import to_micros, token_name  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

TOKEN = "sk-test-SECRET-token-0123456789"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


class OffsetClock:
    """The loop clock shifted by ``offset`` seconds: a host whose clock disagrees with others."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return anyio.current_time() + self.offset

    def unix(self) -> float:
        return time.time() + self.offset


def max_window_count(times: list[float], period: float) -> int:
    """The most of ``times`` that fall in any half-open interval of ``period`` seconds."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + period) - i for i, t in enumerate(times)), default=0)


async def grant_times(limiters: list[RedisRateLimiter], per_limiter: int) -> list[float]:
    """Run ``per_limiter`` acquires on each limiter, three at a time, and record each grant."""
    times: list[float] = []

    async def take(limiter: RedisRateLimiter, count: int) -> None:
        for _ in range(count):
            await limiter.acquire()
            times.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        for limiter in limiters:
            for share in (per_limiter // 3, per_limiter // 3, per_limiter - 2 * (per_limiter // 3)):
                tg.start_soon(take, limiter, share)
    return times


# -- pure parts --------------------------------------------------------------------------------


def test_token_name_is_a_keyed_hash_prefix() -> None:
    name = token_name(TOKEN)
    assert len(name) == 16
    assert int(name, 16) >= 0
    assert "SECRET" not in name
    assert token_name(TOKEN) == name
    assert token_name(TOKEN + "x") != name


def test_fallback_limit_is_a_share_never_zero() -> None:
    assert fallback_limit(RateLimit(100, 60.0), 0.25) == RateLimit(25, 60.0)
    assert fallback_limit(RateLimit(100, 60.0), 1 / 3) == RateLimit(33, 60.0)
    assert fallback_limit(RateLimit(2, 60.0), 0.1) == RateLimit(1, 60.0)


def test_to_micros_rounds_up() -> None:
    assert to_micros(1.5) == 1_500_000
    assert to_micros(1e-7) == 1
    assert to_micros(-1.0) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_key": ""},
        {"on_unavailable": "ignore"},
        {"fallback_share": 0.0},
        {"fallback_share": 1.5},
        {"headroom": -0.1},
        {"fallback_probe_interval": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    settings: dict[str, object] = {"limit": "free", "api_key": TOKEN, **kwargs}
    with pytest.raises(ConfigurationError):
        RedisRateLimiter("redis://127.0.0.1:1/0", **settings)  # type: ignore[arg-type]


# -- against redis-server ------------------------------------------------------------------------


async def test_instances_share_one_sliding_window_whatever_their_clocks(
    redis_server: RedisServer,
) -> None:
    limit = RateLimit(20, 1.0)
    limiters = [
        # Clocks up to a second apart: pacing must not depend on them.
        RedisRateLimiter(
            redis_server.url, limit=limit, api_key=TOKEN, headroom=0.05, clock=OffsetClock(skew)
        )
        for skew in (-0.5, 0.0, 0.25, 0.5)
    ]
    started = time.monotonic()
    times = await grant_times(limiters, per_limiter=10)
    elapsed = time.monotonic() - started
    for limiter in limiters:
        await limiter.aclose()

    assert len(times) == 40
    assert max_window_count(times, limit.period) <= limit.requests
    # Paced as one client at the plan's rate, not four times slower: 40 permits need 39
    # intervals of 1.05 / 20 s.
    assert elapsed < 39 * 1.05 / 20 + 0.5
    # One round trip per permit, and one more per slot given up because this process woke
    # too late to use it (a loaded host): the limiter's own accounting, not a timing.
    stats = [limiter.statistics() for limiter in limiters]
    assert sum(s.redis_calls for s in stats) == 40 + sum(s.late_slots for s in stats)
    assert all(limiter.statistics().peers == 4 for limiter in limiters[-1:])


async def test_different_tokens_do_not_share(redis_server: RedisServer) -> None:
    # The control for the test above: the same measurement with separate tokens must exceed
    # one token's limit, or the window check would prove nothing.
    limit = RateLimit(20, 1.0)
    limiters = [
        RedisRateLimiter(redis_server.url, limit=limit, api_key=f"{TOKEN}-{i}") for i in range(4)
    ]
    times = await grant_times(limiters, per_limiter=10)
    for limiter in limiters:
        await limiter.aclose()
    assert max_window_count(times, limit.period) > limit.requests


async def test_token_never_appears_in_redis_or_repr(
    redis_server: RedisServer, redis_client: redis_asyncio.Redis
) -> None:
    async with RedisRateLimiter(
        redis_server.url, limit=RateLimit(50, 1.0), api_key=TOKEN, key_prefix="app"
    ) as limiter:
        permit = await limiter.acquire()
        await limiter.observe(RateLimitFeedback(permit, 429, remaining=0, retry_after=0.05))
        text = f"{limiter!r} {limiter.statistics()!r}"

    keys = [key async for key in redis_client.scan_iter(match="*")]
    assert keys, "the limiter wrote no keys"
    namespace = token_name(TOKEN).encode()
    for key in keys:
        assert key.startswith(b"app:{" + namespace + b"}:")
        assert b"SECRET" not in key
        kind = await redis_client.type(key)
        if kind == b"string":
            assert b"SECRET" not in await redis_client.get(key)
        elif kind == b"zset":
            assert not any(b"SECRET" in m for m in await redis_client.zrange(key, 0, -1))
    assert "SECRET" not in text
    assert "127.0.0.1" not in text  # nor the URL, which may carry a password


async def test_server_pause_seen_by_one_instance_holds_every_instance(
    redis_server: RedisServer,
) -> None:
    limit = RateLimit(100, 1.0)
    async with (
        RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as first,
        RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as second,
    ):
        permit = await first.acquire()
        await first.observe(RateLimitFeedback(permit, 429, retry_after=0.6))
        started = time.monotonic()
        await second.acquire()
        waited = time.monotonic() - started

        assert waited >= 0.55
        assert first.statistics().server_pauses == 1
        assert first.statistics().rate_limited_responses == 1
        assert second.statistics().server_pauses == 0  # it only obeyed the pause


async def test_remaining_our_own_slots_explain_changes_nothing(redis_server: RedisServer) -> None:
    # Slots 150 ms apart: ten take 1.35 s of the 2 s window, so a loaded machine that spreads
    # them still has them all in it.
    limit = RateLimit(20, 2.0)
    async with RedisRateLimiter(
        redis_server.url, limit=limit, api_key=TOKEN, headroom=0.5
    ) as limiter:
        for _ in range(10):
            permit = await limiter.acquire()
        calls = limiter.statistics().redis_calls
        # A full window that our slots and the tolerance (the headroom's 10, and 2) account
        # for: our pacing already keeps it within the quota, so neither a pause nor even a
        # round trip. (The last reservation counted 8 or 9 slots due: the one before it was
        # due about as it ran, on Redis's clock or a few microseconds after.)
        await limiter.observe(RateLimitFeedback(permit, 200, remaining=0, reset_after=0.4))
        stats = limiter.statistics()
        assert stats.redis_calls == calls
        assert stats.server_pauses == 0
        assert stats.paused_until is None


async def test_unexplained_remaining_zero_pauses_every_instance(redis_server: RedisServer) -> None:
    limit = RateLimit(20, 1.0)
    async with (
        RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as first,
        RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as second,
    ):
        permit = await first.acquire()
        # One slot handed out, yet the server's window is full: another client uses the token.
        await first.observe(RateLimitFeedback(permit, 200, remaining=0, reset_after=0.5))
        assert first.statistics().server_pauses == 1
        started = time.monotonic()
        await second.acquire()
        assert time.monotonic() - started >= 0.45


async def test_polls_go_before_submissions_within_a_process(redis_server: RedisServer) -> None:
    order: list[str] = []
    async with RedisRateLimiter(
        redis_server.url, limit=RateLimit(20, 1.0), api_key=TOKEN
    ) as limiter:
        await limiter.acquire()  # the next slot is 50 ms away: everyone below queues

        async def take(name: str, priority: Priority) -> None:
            await limiter.acquire(priority=priority)
            order.append(name)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(take, f"submit{i}", Priority.SUBMIT)
            with anyio.fail_after(1):
                while limiter.statistics().waiting < 3:  # the submissions are queued
                    await anyio.lowlevel.checkpoint()
            for i in range(3):
                tg.start_soon(take, f"poll{i}", Priority.POLL)
    assert order == ["poll0", "poll1", "poll2", "submit0", "submit1", "submit2"]


async def test_cancelled_waiter_leaves_its_slot_to_the_next(redis_server: RedisServer) -> None:
    limit = RateLimit(5, 1.0)  # slots 204 ms apart
    async with RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as limiter:
        await limiter.acquire()
        started = time.monotonic()
        with anyio.move_on_after(0.05):
            await limiter.acquire()  # reserves the next slot, then gives up waiting for it
        permit = await limiter.acquire()
        waited = time.monotonic() - started
        assert isinstance(permit, Permit)
        # The abandoned slot (about 0.2 s) was reused, not a fresh one 0.4 s away.
        assert waited < 0.3
        stats = limiter.statistics()
        assert stats.permits_granted == 2
        assert stats.waiting == 0
        assert stats.redis_calls == 2


async def test_raise_mode_reports_an_unreachable_redis(redis_server: RedisServer) -> None:
    async with RedisRateLimiter(
        redis_server.url, limit=RateLimit(50, 1.0), api_key=TOKEN, on_unavailable="raise"
    ) as limiter:
        permit = await limiter.acquire()
        redis_server.kill()
        with pytest.raises(RedisUnavailableError) as caught:
            await limiter.acquire()
        assert "SECRET" not in str(caught.value)
        # Feedback is never an error for the caller, even with Redis gone.
        await limiter.observe(RateLimitFeedback(permit, 429, retry_after=0.01))
        assert not limiter.statistics().fallback_active


async def test_falls_back_when_redis_dies_and_recovers_when_it_returns(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limit = RateLimit(40, 1.0)
    async with RedisRateLimiter(
        redis_server.url, limit=limit, api_key=TOKEN, fallback_probe_interval=0.2
    ) as limiter:
        await limiter.acquire()
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="grok_imagine_async.redis"):
            for _ in range(3):
                await limiter.acquire()
        stats = limiter.statistics()
        assert stats.fallback_active
        assert stats.fallbacks == 1
        assert stats.permits_granted == 4
        assert "cannot reach Redis" in caplog.text
        assert "100% of the plan" in caplog.text  # it was alone on the token

        redis_server.start()
        await anyio.sleep(0.25)  # past the probe interval
        await limiter.acquire()
        stats = limiter.statistics()
        assert not stats.fallback_active
        assert stats.recoveries == 1
        assert "reachable again" in caplog.text


async def test_fallback_share_follows_the_peers_last_seen(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limit = RateLimit(40, 1.0)
    async with contextlib.AsyncExitStack() as stack:
        limiters = [
            await stack.enter_async_context(
                RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN, headroom=0.0)
            )
            for _ in range(4)
        ]
        for limiter in [*limiters, limiters[0]]:
            await limiter.acquire()
        assert limiters[0].statistics().peers == 4
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="grok_imagine_async.redis"):
            started = time.monotonic()
            for _ in range(5):
                await limiters[0].acquire()
            elapsed = time.monotonic() - started
    assert "10 requests per 1s (25% of the plan)" in caplog.text
    # A quarter of 40/s: permits at least 0.1 s apart, the first one included (it follows a
    # shared permit just granted).
    assert elapsed >= 0.45


async def test_a_slot_woken_too_late_is_given_up_once(redis_server: RedisServer) -> None:
    async with RedisRateLimiter(
        redis_server.url, limit=RateLimit(10, 1.0), api_key=TOKEN
    ) as limiter:
        await limiter.acquire()

        async def stall(times: int) -> None:
            await anyio.sleep(0.01)  # let the acquire below reserve its slot, 0.1 s away
            for _ in range(times):
                # Hold the event loop, as an overloaded host would: past the slot, then again
                # while the acquire is reserving its replacement.
                time.sleep(0.35)  # noqa: ASYNC251
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stall, 1)
            await limiter.acquire()
        stats = limiter.statistics()
        assert (stats.late_slots, stats.permits_granted, stats.redis_calls) == (1, 2, 3)

        # Late again and again: a loop that busy still gets its permit, after one retry.
        async with anyio.create_task_group() as tg:
            tg.start_soon(stall, 2)
            await limiter.acquire()
        stats = limiter.statistics()
        assert (stats.late_slots, stats.permits_granted, stats.redis_calls) == (2, 3, 5)


async def test_idle_processes_that_beat_count_among_the_peers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue #14: a busy process that saw only itself took the whole plan while Redis was down,
    # and the idle one a share on top: 150% of the quota together.
    limit = RateLimit(40, 1.0)
    async with (
        RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as busy,
        RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as idle,
    ):
        await busy.acquire()
        assert busy.statistics().peers == 1
        assert await idle.heartbeat() == 1  # the first to beat
        assert await busy.heartbeat() == 2
        assert await idle.heartbeat() == 2
        assert busy.statistics().peers == idle.statistics().peers == 2
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="grok_imagine_async.redis"):
            await busy.acquire()
            await idle.acquire()
    assert caplog.text.count("20 requests per 1s (50% of the plan)") == 2


# -- a state that nothing here explains (issue 23, point 5) -------------------------------------


async def redis_now_micros(client: redis_asyncio.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


async def test_a_far_future_state_is_reset_and_logged(
    redis_server: RedisServer, redis_client: redis_asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # A failover to a replica whose clock is behind, or anyone writing to a shared Redis: the
    # schedule says the next slot is an hour away. No queue of ours can explain that.
    limit = RateLimit(20, 1.0)
    async with RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as limiter:
        await limiter.acquire()
        hour_ahead = await redis_now_micros(redis_client) + 3600 * 1_000_000
        await redis_client.set(limiter._tat, str(hour_ahead))
        await redis_client.set(limiter._paused, str(hour_ahead))
        with caplog.at_level(logging.WARNING, logger="grok_imagine_async.redis"):
            with anyio.fail_after(2 * limit.period):
                await limiter.acquire()
        assert "was reset to now" in caplog.text
        assert TOKEN not in caplog.text
        assert limiter.statistics().paused_until is None


async def test_deleting_the_key_wakes_the_waiting_worker(
    redis_server: RedisServer, redis_client: redis_asyncio.Redis
) -> None:
    # Two requests per 10 s: the second permit is reserved 5 s ahead. An operator deletes the
    # state meanwhile: the waiting worker notices and reserves again, at once.
    limit = RateLimit(2, 10.0)
    async with RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as limiter:
        await limiter.acquire()
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(limiter.acquire)
            await anyio.sleep(0.3)
            await redis_client.delete(limiter._tat)
        assert time.monotonic() - started < 2.5  # not the 5 s the deleted reservation said


async def test_a_remaining_the_slots_do_not_explain_slows_the_shared_pace(
    redis_server: RedisServer,
) -> None:
    # A window of 20 a second that says 12 are left after one slot: 7 beyond our slots and the
    # jitter tolerance are someone else's, so our slots spread to the rest of the rate.
    limit = RateLimit(20, 1.0)
    async with RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN) as limiter:
        permit = await limiter.acquire()
        await limiter.observe(RateLimitFeedback(permit, 200, remaining=12, reset_after=1.0))
        started = time.monotonic()
        for _ in range(10):
            await limiter.acquire()
        # At the plan's pace ten slots take 0.46 s; at what the others leave, 0.71 s.
        assert time.monotonic() - started >= 9 / (limit.per_second / 1.02 - 7)
        assert limiter.statistics().server_pauses == 0


@pytest.mark.parametrize("on_unavailable", ["raise", "fallback"])
async def test_an_unreachable_redis_is_named_by_its_url_without_the_password(
    on_unavailable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connecting is refused
    url = f"redis://:pa55word@127.0.0.1:{port}/0"
    async with RedisRateLimiter(
        url, limit=RateLimit(50, 1.0), api_key=TOKEN, on_unavailable=on_unavailable
    ) as limiter:
        with caplog.at_level(logging.WARNING, logger="grok_imagine_async.redis"):
            if on_unavailable == "raise":
                with pytest.raises(RedisUnavailableError) as caught:
                    await limiter.acquire()
                said = str(caught.value)
            else:
                await limiter.acquire()
                said = caplog.text
    assert f"Redis at redis://:***@127.0.0.1:{port}/0" in said
    assert "pa55word" not in said + caplog.text


@pytest.mark.parametrize(("processes", "theirs"), [(1, 0), (1, 40), (2, 0)])
async def test_a_burst_the_server_counts_late_is_ours_and_a_second_user_still_shows(
    redis_server: RedisServer, processes: int, theirs: int
) -> None:
    # A server that stalled while 40 of our slots went out (0.7 s; from one process, or two
    # taking turns) counts them all when it resumes, last first, and answers each then; later
    # requests it counts and answers at once. For a period after the stall, its window still
    # holds the burst, whose slots are already out of the period before each answer's: read by
    # slot time, the burst was someone else's. Every slot of every process the server may have
    # counted (within the slowest latency seen) explains it. Someone else outside Redis
    # (``theirs`` requests when the stall ends) still shows.
    limit = RateLimit(120, 2.0)
    counted: list[float] = []  # when the server counted each request (ours and theirs)

    def remaining(at: float) -> int:
        return limit.requests - sum(1 for c in counted if at - limit.period < c <= at)

    async def send(limiter: RedisRateLimiter) -> None:  # counted and answered at once
        permit = await limiter.acquire()
        now = time.monotonic()
        counted.append(now)
        await limiter.observe(RateLimitFeedback(permit, 200, remaining=remaining(now)))

    async with contextlib.AsyncExitStack() as stack:
        limiters = [
            await stack.enter_async_context(
                RedisRateLimiter(redis_server.url, limit=limit, api_key=TOKEN)
            )
            for _ in range(processes)
        ]
        for limiter in limiters:  # the first answers: the window holds the quota
            await send(limiter)
        burst = []
        for i in range(40):
            limiter = limiters[i % processes]
            burst.append((limiter, await limiter.acquire()))
        resumed = time.monotonic()
        counted.extend([resumed] * (40 + theirs))
        for limiter, permit in reversed(burst):
            await limiter.observe(RateLimitFeedback(permit, 200, remaining=remaining(resumed)))
        believed = 0.0  # the most others were ever believed to take, requests a second
        # Until the burst leaves the server's window (steady requests well within the quota).
        turn = 0
        while time.monotonic() < resumed + limit.period - 0.1:
            limiter = limiters[turn % processes]
            turn += 1
            await send(limiter)
            believed = max(believed, limiter.estimate.others)
            await anyio.sleep(0.05)
        assert sum(limiter.statistics().server_pauses for limiter in limiters) == 0
    if theirs:
        assert believed >= 0.75 * theirs / limit.period
    else:
        assert believed == 0.0


async def test_a_wrong_password_is_a_configuration_error_not_a_fallback(
    redis_server: RedisServer, redis_client: redis_asyncio.Redis
) -> None:
    # redis-py's AuthenticationError is a ConnectionError: read as an outage, every process
    # would pace alone at its fallback share, silently, until someone noticed the 429s.
    await redis_client.config_set("requirepass", "right-one")
    wrong = redis_server.url.replace("redis://", "redis://:wrong-pass-value@")
    async with RedisRateLimiter(wrong, limit=RateLimit(50, 1.0), api_key=TOKEN) as limiter:
        with pytest.raises(ConfigurationError, match="refused to run the rate limiter") as caught:
            await limiter.acquire()
        assert not limiter.statistics().fallback_active
    assert "wrong-pass-value" not in str(caught.value)
