"""What users write today to run many generations, for the scheduler benchmark to compare with.

Each baseline is the same user code with a different poll schedule: ``asyncio.gather`` over one
coroutine per prompt, each calling ``client.generate()`` and then ``client.get_task()`` in a
loop until the task is terminal. The schedules:

- ``fixed 5 s``: sleep 5 s before every poll;
- ``api-core``: the google-api-core polling future's default (poll at once, then sleep a
  full-jitter draw from [0, cap], the cap starting at 1 s, x1.5 per poll, at most 20 s);
- ``smithy``: a Smithy waiter's retry delays with ``minDelay`` 2 s and ``maxDelay`` 120 s
  (poll at once, then a uniform draw from [2, 2 * 2^(n-1)] seconds, [2, 120] once past the
  attempt ceiling).

User code does not know about 429s beyond what the client does: the client retries a 429 three
times (honouring ``Retry-After``) and then raises ``RateLimitError``, which the user's loop
catches to try again after its next delay, so every job finishes and the 429s stay countable.

:class:`UserLimiter` is the rate limiter such code commonly puts in front of its calls:
``aiolimiter.AsyncLimiter(requests, period)``, which starts with a full bucket (a burst of a
whole period's quota) and never reads the server's rate-limit headers.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anyio
from aiolimiter import AsyncLimiter

from grok_imagine_async import AsyncGrokImagine, RateLimit, RateLimitError
from grok_imagine_async.abc import LimiterStatistics, Permit, Priority, RateLimitFeedback

Schedule = Callable[[random.Random], Iterator[float]]
"""A poll schedule: given a random source, the successive sleeps before each poll."""


def fixed_schedule(seconds: float = 5.0) -> Schedule:
    """Sleep ``seconds`` before every poll, the first included."""

    def delays(rng: random.Random) -> Iterator[float]:
        while True:
            yield seconds

    return delays


def api_core_schedule(
    initial: float = 1.0, multiplier: float = 1.5, maximum: float = 20.0
) -> Schedule:
    """google-api-core's polling: a first poll at once, then full-jitter exponential sleeps."""

    def delays(rng: random.Random) -> Iterator[float]:
        yield 0.0
        cap = min(initial, maximum)
        while True:
            yield rng.uniform(0.0, cap)
            cap = min(cap * multiplier, maximum)

    return delays


def smithy_schedule(min_delay: float = 2.0, max_delay: float = 120.0) -> Schedule:
    """A Smithy waiter: a first poll at once, then jittered doubling delays up to ``max_delay``."""
    ceiling = int(math.log2(max_delay / min_delay) + 1.0)

    def delays(rng: random.Random) -> Iterator[float]:
        yield 0.0
        attempt = 1
        while True:
            top = max_delay if attempt > ceiling else min_delay * 2 ** (attempt - 1)
            yield rng.uniform(min_delay, top)
            attempt += 1

    return delays


SCHEDULES: dict[str, Schedule] = {
    "fixed 5 s": fixed_schedule(5.0),
    "api-core (1 s, x1.5, 20 s)": api_core_schedule(),
    "smithy (2 s, x2, 120 s)": smithy_schedule(),
}
"""The baselines by the name the results table shows."""


class UserLimiter:
    """``aiolimiter.AsyncLimiter(requests, period)`` behind the client's limiter seam.

    It paces like the code users write today: a full bucket at start (one period's quota at
    once), then a steady leak, and no reaction to 429s or rate-limit headers.

    Args:
        limit: The plan's quota.
    """

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._bucket = AsyncLimiter(limit.requests, limit.period)
        self._granted = 0
        self._waiting = 0
        self._rate_limited = 0

    @property
    def limit(self) -> RateLimit:
        """The quota it was built for."""
        return self._limit

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        """Wait for the bucket (priorities are ignored, as aiolimiter has none)."""
        self._waiting += 1
        try:
            await self._bucket.acquire()
        finally:
            self._waiting -= 1
        self._granted += 1
        return Permit(granted_at=anyio.current_time(), serial=self._granted)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        """Count 429s; the headers change nothing, as in user code."""
        if feedback.rate_limited:
            self._rate_limited += 1

    def give_back(self, permit: Permit) -> None:
        """Nothing to give back: user code does not know the request never left."""

    def statistics(self) -> LimiterStatistics:
        """Counters in the shape of the library's limiters."""
        return LimiterStatistics(
            limit=self._limit,
            permits_granted=self._granted,
            waiting=self._waiting,
            total_wait_time=0.0,
            server_pauses=0,
            rate_limited_responses=self._rate_limited,
            paused_until=None,
            stalled_for=0.0,
        )


@dataclass(frozen=True, slots=True)
class Detection:
    """When the caller learned that one job finished.

    Attributes:
        task_id: The server's task id.
        at: Clock time at which the result reached the caller.
        ok: Whether the task completed with a video.
    """

    task_id: str
    at: float
    ok: bool


async def run_baseline(
    client: AsyncGrokImagine,
    prompts: list[str],
    schedule: Schedule,
    *,
    seed: int,
) -> list[Detection]:
    """Run ``prompts`` the way users do today and return when each result was known.

    Args:
        client: The client (its limiter decides whether this is the paced or the bursty variant).
        prompts: One job per prompt.
        schedule: The poll schedule of every job.
        seed: Seeds each job's jitter.
    """

    async def one(index: int, prompt: str) -> Detection:
        rng = random.Random(seed * 1_000_003 + index)
        retries = schedule(rng)
        while True:
            try:
                task_id = await client.generate(prompt)
                break
            except RateLimitError:  # no task was created: try again a little later
                await asyncio.sleep(max(1.0, next(retries)))
        delays = schedule(rng)
        while True:
            await asyncio.sleep(next(delays))
            try:
                task = await client.get_task(task_id)
            except RateLimitError:
                continue
            if task.is_terminal:
                return Detection(task_id, anyio.current_time(), task.succeeded)

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
