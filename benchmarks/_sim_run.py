"""One simulated batch: a strategy against a fresh in-process emulator, on virtual time.

A :class:`Scenario` names the plan, the number of jobs, the strategy (``"ours"``: the library's
``generate_many``; or a baseline of :mod:`benchmarks._sim_strategies`) and the limiter the
client uses. :func:`run_scenario` runs it in the current process and returns a picklable
:class:`RunResult` holding the raw timelines; :mod:`benchmarks._sim_report` turns them into
figures. :func:`run_all` runs several scenarios in worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio

from benchmarks import _sim_legacy
from benchmarks._sim_strategies import SCHEDULES, Detection, run_baseline
from grok_imagine_async import AsyncGrokImagine, RateLimit
from grok_imagine_async._limiting.plans import resolve_rate_limit
from grok_imagine_async.batch import SchedulerConfig
from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

TOKEN = "tok"
BASE_URL = "http://emulator.local"
OURS = "ours"
WAIT = "generate_and_wait"
"""The strategy of one ``client.generate_and_wait`` call per prompt, all at once."""
DURATION_MEDIAN = 30.0
DURATION_SIGMA = 0.5

LIMITERS = {
    "ours": "LocalRateLimiter as the client makes it by default (even pacing until 4e6183f, "
    "adaptive since: see each section's commit)",
    "window": f'LocalRateLimiter(pacing="window") at {_sim_legacy.COMMIT}: up to the quota in any '
    "window, bursts allowed",
    "ours, breaker=None": "the default client with `SchedulerConfig(breaker=None)`: no outage "
    "breaker (issue 24), so no warm-up of ten tasks before the batch's burst",
}
"""The limiter variants, by the name the results table shows."""


@dataclass(frozen=True)
class Scenario:
    """One run of the benchmark.

    Attributes:
        plan: ``"free"``, ``"pro"`` or ``"enterprise"``.
        jobs: How many generations.
        strategy: ``"ours"`` or a key of :data:`SCHEDULES`.
        limiter: ``"ours"``, or ``"window"`` for the legacy code (see :data:`LIMITERS`).
        seed: Seeds the emulator (durations) and every jitter.
        options: Extra ``SchedulerConfig`` fields for ``"ours"`` (experiments), as pairs.
        label: A name for the row; default: the strategy.
        median: The emulator's median generation time, seconds.
        server: How the emulator counts the quota: ``"sliding"`` or ``"fixed"`` window, or
            any other kind its ``EmulatorConfig(window=...)`` knows.
        quota: ``(requests, period)`` instead of the plan's quota (same for the client).
        code: ``"current"``, or :data:`benchmarks._sim_legacy.COMMIT` for today's behaviour.
    """

    plan: str
    jobs: int
    strategy: str = OURS
    limiter: str = "ours"
    seed: int = 1
    options: tuple[tuple[str, Any], ...] = ()
    label: str = ""
    median: float = DURATION_MEDIAN
    server: str = "sliding"
    quota: tuple[int, float] | None = None
    code: str = "current"

    @property
    def name(self) -> str:
        """The row's name in the table."""
        name = self.label or self.strategy
        return name if self.code == "current" else f"{name} @{self.code}"

    @property
    def rate_limit(self) -> RateLimit:
        """The quota of the token (and of the client)."""
        return RateLimit(*self.quota) if self.quota else resolve_rate_limit(self.plan)


@dataclass
class RunResult:
    """The raw outcome of one scenario; times are seconds since the batch started.

    Attributes:
        scenario: What ran.
        wall_seconds: Real time the run took.
        requests_per_period: The plan's quota per ``period`` seconds.
        period: The quota's window.
        makespan: From the start to the last result reaching the caller.
        completed: Jobs that ended with a video.
        failed: Jobs that did not.
        requests: ``/v1`` requests the emulator received, 429'd ones included.
        rate_limited: HTTP 429 answers the emulator sent.
        latencies: Per completed job, seconds from the server's completion to the caller's
            knowing it.
        job_durations: Per completed job, in the same order, its generation time.
        detected: Per completed job, when the caller knew it.
        durations: Per job, the server's generation time, in the order the tasks were created.
        request_times: When each request arrived at the emulator.
        refused_times: When each 429'd request arrived.
    """

    scenario: Scenario
    wall_seconds: float
    requests_per_period: int
    period: float
    makespan: float
    completed: int
    failed: int
    requests: int
    rate_limited: int
    latencies: list[float] = field(default_factory=list)
    job_durations: list[float] = field(default_factory=list)
    detected: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    refused_times: list[float] = field(default_factory=list)


def prompts(plan: str, jobs: int) -> Iterator[str]:
    """Distinct prompts, produced lazily as a large input file would be read."""
    return (f"{plan} benchmark video {i}" for i in range(jobs))


def server_available(kind: str) -> bool:
    """Whether this emulator can count a quota the way ``kind`` says."""
    try:
        EmulatorConfig(window=kind)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def make_emulator(
    plan: str | RateLimit,
    seed: int,
    *,
    median: float = DURATION_MEDIAN,
    server: str = "sliding",
) -> Emulator:
    """A fresh emulator with one token on ``plan`` and lognormal durations."""
    return Emulator(
        EmulatorConfig(
            tokens={TOKEN: plan},
            seed=seed,
            duration_median=median,
            duration_sigma=DURATION_SIGMA,
            window=server,  # type: ignore[arg-type]  # kinds beyond the two literals too
        )
    )


def make_client(
    emulator: Emulator,
    plan: str | RateLimit,
    limiter: str,
    *,
    code: str = "current",
    seed: int | None = None,
) -> Any:
    """A client of ``emulator`` on ``plan`` with the named limiter variant.

    With ``code`` set to the legacy commit, the client (and its limiter, scheduler and poll
    schedule) is that commit's. ``seed`` seeds the current client's retry and poll jitter (the
    legacy client's cannot be seeded).
    """
    package: Any = _sim_legacy.load(code) if code != "current" else None
    client_class = package.AsyncGrokImagine if package else AsyncGrokImagine
    limit = plan if isinstance(plan, RateLimit) else resolve_rate_limit(plan)
    own_limit = limit if package is None else package.RateLimit(limit.requests, limit.period)
    chosen: Any = None
    if limiter != "ours":  # "window": a pacing mode of the legacy code's LocalRateLimiter
        chosen = package.LocalRateLimiter(own_limit, pacing=limiter)
    seeded = {"rng": random.Random(seed)} if package is None and seed is not None else {}
    return client_class(
        api_key=TOKEN,
        http_client=emulator.client(token=None),
        base_url=BASE_URL,
        plan=own_limit,
        limiter=chosen,
        **seeded,
    )


async def _run(scenario: Scenario) -> RunResult:
    limit = scenario.rate_limit
    emulator = make_emulator(
        limit if scenario.quota else scenario.plan,
        scenario.seed,
        median=scenario.median,
        server=scenario.server,
    )
    client = make_client(emulator, limit, scenario.limiter, code=scenario.code, seed=scenario.seed)
    start = anyio.current_time()
    detections: list[Detection] = []
    if scenario.strategy == OURS:
        # A list, as the baselines get and most callers pass: its length is known up front.
        batch = list(prompts(scenario.plan, scenario.jobs))
        if scenario.code == "current":
            options = dict(scenario.options)
            options.setdefault("rng", random.Random(scenario.seed))
            many = client.generate_many(batch, SchedulerConfig(**options))
        else:  # the legacy code has no SchedulerConfig (and no seedable scheduler)
            many = client.generate_many(batch, **dict(scenario.options))
        async with many as out:
            async for job in out:
                detections.append(Detection(job.task_id or "", anyio.current_time(), job.ok))
    elif scenario.strategy == WAIT:
        detections = await _wait_each(client, list(prompts(scenario.plan, scenario.jobs)))
    else:
        detections = await run_baseline(
            client,
            list(prompts(scenario.plan, scenario.jobs)),
            SCHEDULES[scenario.strategy],
            seed=scenario.seed,
        )
    end = max((d.at for d in detections), default=start)
    stats = emulator.statistics()
    result = RunResult(
        scenario=scenario,
        wall_seconds=0.0,
        requests_per_period=limit.requests,
        period=limit.period,
        makespan=end - start,
        completed=sum(d.ok for d in detections),
        failed=sum(not d.ok for d in detections),
        requests=stats.requests_total,
        rate_limited=stats.rate_limited,
    )
    for detection in detections:
        times = emulator.task_times(detection.task_id)
        if times is not None and detection.ok:
            result.latencies.append(detection.at - times[1])
            result.job_durations.append(times[1] - times[0])
            result.detected.append(detection.at - start)
    # In creation order, not by creation time: a burst creates many tasks at one instant.
    for task_id in emulator.task_ids():
        created, finished = emulator.task_times(task_id) or (0.0, 0.0)
        result.durations.append(finished - created)
    everything = emulator.request_times(TOKEN)
    admitted = emulator.request_times(TOKEN, admitted_only=True)
    result.request_times = [t - start for t in everything]
    result.refused_times = _difference(everything, admitted, start)
    await client.aclose()
    return result


async def _wait_each(client: Any, batch: list[str]) -> list[Detection]:
    """One ``generate_and_wait`` per prompt, all at once, with the client's default poll."""
    detections: list[Detection] = []

    async def one(prompt: str) -> None:
        task = await client.generate_and_wait(prompt)
        detections.append(Detection(task.task_id, anyio.current_time(), task.succeeded))

    async with anyio.create_task_group() as tg:
        for prompt in batch:
            tg.start_soon(one, prompt)
    return detections


def _difference(everything: list[float], admitted: list[float], start: float) -> list[float]:
    """Times in ``everything`` but not in ``admitted`` (both sorted), shifted by ``start``."""
    refused: list[float] = []
    j = 0
    for t in everything:
        if j < len(admitted) and admitted[j] == t:
            j += 1
        else:
            refused.append(t - start)
    return refused


def run_scenario(scenario: Scenario) -> RunResult:
    """Run one scenario on a virtual-time loop in this process."""
    # The baselines' 429s make the client log a retry warning each; thousands of lines.
    logging.getLogger("grok_imagine_async").setLevel(logging.ERROR)
    started = time.perf_counter()
    # One start for every run: a fixed window's phase would follow the machine's clock.
    result = run_virtual(_run, scenario, start=10_000.0)
    result.wall_seconds = time.perf_counter() - started
    return result


def run_all(scenarios: Sequence[Scenario], *, workers: int = 2) -> list[RunResult]:
    """Run ``scenarios`` in up to ``workers`` fresh processes, in the order given."""
    if workers <= 1:
        return [run_scenario(s) for s in scenarios]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(run_scenario, scenarios))
