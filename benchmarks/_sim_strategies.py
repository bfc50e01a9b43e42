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
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anyio

from grok_imagine_async import AsyncGrokImagine, RateLimitError

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
