"""RedisRateLimiter's hand-overs (Redis stops, Redis comes back empty) on virtual time.

A real Redis reads its own clock, which a virtual event loop cannot move, so these tests give
the limiter :class:`FakeRedis`: the limiter's scripts written again in Python, on the loop's
clock, that a test can stop and restart empty. Every grant is judged at once by a sliding
window of the plan's period: there is no network, so no jitter to blame.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from grok_imagine_async import RateLimit

pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')

from redis.exceptions import ConnectionError as RedisConnectionError

from grok_imagine_async.redis import RedisRateLimiter
from grok_imagine_async.redis._script import (
    ACQUIRE_SCRIPT,
    COUNT_SCRIPT,
    LIMITER_HEARTBEAT_SCRIPT,
    OBSERVE_SCRIPT,
)
from grok_imagine_async.testing._quota import max_in_window

pytestmark = pytest.mark.anyio

TOKEN = "sk-test-SECRET-transitions"


def _micros() -> int:
    return round(anyio.current_time() * 1_000_000)


class FakeRedis:
    """The limiter's four scripts and ``EXISTS`` on the loop's clock; ``up`` False refuses
    every call, as a stopped server does, and :meth:`restart` comes back empty."""

    def __init__(self) -> None:
        self.up = True
        # Seconds each call takes to reach Redis (its process starved between call and write).
        self.lag: Callable[[], float] = lambda: 0.0
        self.values: dict[str, tuple[int, float]] = {}  # key -> (value, expiry in us)
        self.sets: dict[str, dict[str, int]] = {}  # sorted sets: key -> member -> score

    def restart(self) -> None:
        self.up = True
        self.values.clear()
        self.sets.clear()

    def register_script(self, source: str) -> Callable[..., Awaitable[Any]]:
        run = {
            ACQUIRE_SCRIPT: self._acquire,
            OBSERVE_SCRIPT: self._observe,
            COUNT_SCRIPT: self._count,
            LIMITER_HEARTBEAT_SCRIPT: self._beat,
        }[source]

        async def call(*, keys: list[str], args: list[Any]) -> Any:
            await anyio.sleep(self.lag())
            if not self.up:
                raise RedisConnectionError("Connection refused")
            return run(_micros(), keys, [str(arg) for arg in args])

        return call

    async def exists(self, key: str) -> int:
        if not self.up:
            raise RedisConnectionError("Connection refused")
        return int(self._get(key, _micros()) is not None)

    async def aclose(self) -> None:
        pass

    def _get(self, key: str, now: int) -> int | None:
        value, expiry = self.values.get(key, (0, -math.inf))
        return value if expiry > now else None

    def _zset(self, key: str, now: int, keep_since: int) -> dict[str, int]:
        members = self.sets.setdefault(key, {})
        for member, score in list(members.items()):
            if score < keep_since:
                del members[member]
        return members

    def _acquire(self, now: int, keys: list[str], args: list[str]) -> list[int]:
        tat_key, paused_key, peers_key, slots_key = keys
        interval, period, member, rejoin = int(args[0]), int(args[1]), args[2], int(args[3])
        peers = self._zset(peers_key, now, now - period)
        bound = now + period + (len(peers) + 1) * interval
        reset = 0
        slot = max(now, self._get(tat_key, now) or 0)
        if slot > bound:
            slot, reset = now, 1
        paused = self._get(paused_key, now) or 0
        if paused > now + period:
            self.values.pop(paused_key, None)
            paused, reset = 0, 1
        pause_left = 0
        if paused > now:
            pause_left = paused - now
            slot = max(slot, paused)
        tat = slot + interval
        self.values[tat_key] = (tat, tat + period)
        peers[member] = now
        slots = self._zset(slots_key, now, now - 2 * period)
        slots[str(slot)] = slot
        sent = sum(1 for score in slots.values() if now - period < score <= now)
        rejoined = sum(1 for score in peers.values() if score >= now - rejoin) if rejoin else 0
        return [slot - now, pause_left, len(peers), sent, rejoined, reset]

    def _observe(self, now: int, keys: list[str], args: list[str]) -> list[int]:
        paused = self._get(keys[0], now) or 0
        until = now + int(args[0])
        if until > paused:
            self.values[keys[0]] = (until, until + 1000)
            paused = until
        return [max(0, paused - now), 1]

    def _count(self, now: int, keys: list[str], args: list[str]) -> int:
        slots = self.sets.get(keys[0], {})
        return sum(1 for score in slots.values() if now - int(args[0]) < score <= now)

    def _beat(self, now: int, keys: list[str], args: list[str]) -> int:
        beats = self._zset(keys[0], now, now - int(args[0]))
        beats[args[1]] = now
        return len(beats)


async def test_a_process_falling_back_waits_for_the_slots_its_peers_reserved() -> None:
    """Redis stops while a busy peer holds the next shared slot and the window is full: the
    process whose own last slot is long past must not slip its first local one in between."""
    redis = FakeRedis()
    limit = RateLimit(40, 2.0)
    busy, idle = (
        RedisRateLimiter(redis, limit=limit, api_key=TOKEN)  # type: ignore[arg-type]
        for _ in range(2)
    )
    grants = []
    await idle.acquire()
    for _ in range(45):  # a full window and more, every slot the busy one's
        await busy.acquire()
        grants.append(anyio.current_time())
    assert [await limiter.heartbeat() for limiter in (busy, idle, busy)] == [1, 2, 2]

    async def take(limiter: RedisRateLimiter) -> None:
        await limiter.acquire()
        grants.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, busy)
        await anyio.sleep(0.001)  # its slot is reserved, one interval after its last
        redis.up = False
        tg.start_soon(take, idle)
    assert idle.statistics().fallback_active
    assert max_in_window(sorted(grants), limit.period) <= limit.requests


async def test_a_slot_reserved_late_is_never_taken_early() -> None:
    """A call that reaches Redis late reserves a slot counted from Redis's time: taken as
    counted from when the call left, it went that much early, one more than the quota in a
    full window."""
    redis = FakeRedis()
    lags = itertools.cycle([0.0] * 6 + [0.045])  # under 0.051 s, the least a slot is late by
    redis.lag = lambda: next(lags)
    limit = RateLimit(40, 2.0)
    grants = []

    async def send(limiter: RedisRateLimiter) -> None:
        for _ in range(30):
            await limiter.acquire()
            grants.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(send, RedisRateLimiter(redis, limit=limit, api_key=TOKEN))  # type: ignore[arg-type]
    assert max_in_window(sorted(grants), limit.period) <= limit.requests


async def play(
    seed: int, *, limit: RateLimit, stop_at: float, back_at: float, end: float
) -> list[float]:
    """Two to four processes on one token, each with one to four callers that think a random
    while between permits and a heartbeat a second (as a ``RedisJobStore`` gives), while Redis
    stops at ``stop_at`` and comes back empty at ``back_at`` (seconds from the start). Returns
    every grant time, sorted."""
    rng = random.Random(seed)
    redis = FakeRedis()
    start = anyio.current_time()
    grants: list[float] = []

    async def send(limiter: RedisRateLimiter, think: float) -> None:
        while anyio.current_time() < start + end:
            await limiter.acquire()
            grants.append(anyio.current_time())
            await anyio.sleep(rng.uniform(0, think))

    async def beat(limiter: RedisRateLimiter) -> None:
        while anyio.current_time() < start + end:
            with contextlib.suppress(RedisConnectionError):
                await limiter.heartbeat()
            await anyio.sleep(1.0)

    async with anyio.create_task_group() as tg:
        for _ in range(rng.randint(2, 4)):
            limiter = RedisRateLimiter(
                redis,  # type: ignore[arg-type]
                limit=limit,
                api_key=TOKEN,
                fallback_probe_interval=rng.choice([0.3, 1.0, 2.0]),
            )
            tg.start_soon(beat, limiter)
            for _ in range(rng.randint(1, 4)):
                tg.start_soon(send, limiter, rng.choice([0.0, 0.1, 0.5]))
        await anyio.sleep(stop_at)
        redis.up = False
        await anyio.sleep(back_at - stop_at)
        redis.restart()
    return sorted(grants)


# Each put 41 permits in a window before the fallback waited for the slots peers had reserved
# (8 seeds of the first 100 did; none of the first 300 do now).
@pytest.mark.parametrize("seed", [27, 37, 42, 48, 70, 93])
async def test_no_window_holds_more_than_the_plan_across_an_outage(seed: int) -> None:
    rng = random.Random(-seed)
    limit = RateLimit(40, 2.0)
    stop_at = rng.uniform(0.5, 4.0)
    back_at = stop_at + rng.uniform(0.2, 4.0)
    grants = await play(seed, limit=limit, stop_at=stop_at, back_at=back_at, end=12.0)
    assert max_in_window(grants, limit.period) <= limit.requests, (stop_at, back_at)
