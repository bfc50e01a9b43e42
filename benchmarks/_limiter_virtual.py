"""The limiter benchmark's virtual-time sweep: the same clients, a simulated network, no load.

Over real sockets on a shared machine the figures move with the machine's load (the emulator and
the client compete for two cores). Here the emulator runs in process on the virtual-time loop
and every request travels through :class:`Travel`, which delays it on the way to the server and
on the way back by seeded random times: requests overtake each other as over a real network,
but nothing depends on how busy the machine is, so every run gives the same figures.
"""

from __future__ import annotations

import platform
import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx

from benchmarks._git import code_state
from grok_imagine_async import APIError, AsyncGrokImagine, RateLimit, RetryPolicy
from grok_imagine_async.abc import RateLimiter

TRAVEL = (0.005, 0.030)  # one-way travel time, seconds: uniform between these
WORKERS = 300
VIRTUAL_START = 1_000_000.0
"""Where every run's virtual clock starts: fixed windows are aligned on it, so a run that
started at the real monotonic time counted the baseline's 429s differently each time."""


class Travel(httpx.AsyncBaseTransport):
    """Delays each request on its way to the server and its answer on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rng: random.Random) -> None:
        self._inner = inner
        self._rng = rng

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await anyio.sleep(self._rng.uniform(*TRAVEL))
        response = await self._inner.handle_async_request(request)
        await response.aread()
        await anyio.sleep(self._rng.uniform(*TRAVEL))
        return response


@dataclass(frozen=True)
class VirtualRun:
    limit: RateLimit
    server: str
    strategy: str
    requests: int
    rate_limited: int
    utilization: float
    max_window: int


async def flood(grok: AsyncGrokImagine, task_id: str, workers: int, seconds: float) -> int:
    """Call ``get_task`` (one call in ten a ``generate``) from ``workers`` coroutines for
    ``seconds``; return how many calls failed."""
    failures = 0

    async def worker(n: int) -> None:
        nonlocal failures
        calls = 0
        while True:
            calls += 1
            try:
                if (n + calls) % 10 == 0:
                    await grok.generate(f"worker {n}")
                else:
                    await grok.get_task(task_id)
            except APIError:
                failures += 1

    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as group:
            for n in range(workers):
                group.start_soon(worker, n)
    return failures


def run_virtual_one(
    server: str,
    burst: int,
    limit: RateLimit,
    strategy: str,
    make: Callable[[RateLimit], RateLimiter],
    windows: float,
) -> VirtualRun:
    """One client flooding one in-process emulator for ``windows`` periods of virtual time."""
    from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

    async def main() -> VirtualRun:
        config = EmulatorConfig(
            tokens={"t": limit},
            window=server,  # type: ignore[arg-type]
            burst=burst,
            reset_format="unix" if server == "fixed" else "seconds",
            seed=1,
        )
        emulator = Emulator(config)
        http = httpx.AsyncClient(
            transport=Travel(emulator.transport(), random.Random(1)),
            base_url="http://emulator.local",
        )
        grok = AsyncGrokImagine(
            api_key="t",
            base_url="http://emulator.local",
            limiter=make(limit),
            http_client=http,
            retry=RetryPolicy(attempts=0),
        )
        async with http, grok:
            task_id = await grok.generate("a benchmark")
            start = anyio.current_time()
            end = start + windows * limit.period
            await flood(grok, task_id, WORKERS, end - anyio.current_time())
        seen = [t for t in emulator.request_times("t") if start <= t <= end]
        admitted = [t for t in emulator.request_times("t", admitted_only=True) if start <= t <= end]
        return VirtualRun(
            limit=limit,
            server=server,
            strategy=strategy,
            requests=len(seen),
            rate_limited=len(seen) - len(admitted),
            utilization=len(seen) / (limit.requests * windows),
            max_window=emulator.max_window_count(limit.period, "t"),
        )

    return run_virtual(main, start=VIRTUAL_START)


def render_virtual(
    runs: list[VirtualRun], *, command: str, windows: float, names: dict[str, str], burst: int
) -> str:
    """The Markdown table of the sweep."""
    low, high = (f"{t * 1000:g}" for t in TRAVEL)
    lines = [
        "# Local rate limiter on virtual time",
        "",
        f"Command: `{command}` at {code_state()} · Python {platform.python_version()} · "
        "in-process emulator on the virtual-time loop: the same figures on any machine, "
        "whatever its load",
        "",
        f"One `AsyncGrokImagine` (`retry=RetryPolicy(attempts=0)`) driven by {WORKERS} concurrent "
        f"coroutines (`get_task`, one call in ten a `generate`) for {windows:g} windows of 6 s. "
        f"Each request travels {low}-{high} ms to the server and as long back (uniform, "
        "seeded), so requests overtake each other as on a real network. Server kinds as over "
        f"sockets: `sliding`, `fixed` and `gcra` (a bucket of {burst} refilled at the quota's "
        "rate). Utilization = requests the server received / (limit x periods).",
        "",
        "| limit | server | limiter | requests | 429s | utilization | max in any 6 s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.limit.requests}/{run.limit.period:g} s | {run.server} "
            f"| {names[run.strategy]} | {run.requests} | {run.rate_limited} "
            f"| {run.utilization:.1%} | {run.max_window} |"
        )
    return "\n".join(lines) + "\n"


# -- issue 27: round trips, plans, server kinds, with and without headers ---------------------

PLANS = {
    "free": RateLimit(100, 60.0),
    "pro": RateLimit(1000, 60.0),
    "enterprise": RateLimit(5000, 60.0),
}
ROUND_TRIPS = (0.0, 0.035, 0.1, 0.25)
KINDS = (("sliding", 1), ("fixed", 1), ("gcra", 1), ("gcra", 5), ("gcra", 20))
"""Server kinds: a window, or a leaky bucket of that burst."""
BATCH_PERIODS = 2
"""A quota-bound batch: two periods' worth of requests, all waiting from the start."""


@dataclass(frozen=True)
class TripRun:
    plan: str
    kind: str
    burst: int
    headers: bool
    round_trip: float
    others: float
    limiter: str
    rate_limited: int  # our 429s after the first period
    their_429s: int  # the second user's, while the batch ran
    ratio: float  # makespan / the paced bound (requests / the plan's rate)
    share: float  # our admitted requests per second / the plan's rate


def run_round_trip_one(
    plan: str,
    kind: str,
    burst: int,
    *,
    headers: bool,
    round_trip: float,
    limiter: str,
    others: float = 0.0,
) -> TripRun:
    """A batch of ``BATCH_PERIODS`` periods' requests through one limiter to one server model.

    Each request travels half the round trip there and half back, a 429'd one is sent again
    after its ``Retry-After`` (as the client's retries do), and ``others`` of the plan's rate
    goes to the same server from someone else on the token, evenly, from a period before the
    batch starts (so the headers show them).
    """
    from benchmarks import _sim_legacy
    from grok_imagine_async import LocalRateLimiter
    from grok_imagine_async.abc import RateLimitFeedback
    from grok_imagine_async.testing import run_virtual
    from grok_imagine_async.testing._quota import GcraCounter, WindowCounter

    limit = PLANS[plan]
    if limiter == "before":
        package = _sim_legacy.load(_sim_legacy.LIMITER_COMMIT)
        make_limiter = lambda: package.LocalRateLimiter(  # noqa: E731
            package.RateLimit(limit.requests, limit.period)
        )
        feedback = package.RateLimitFeedback
    else:
        make_limiter = lambda: LocalRateLimiter(limit)  # noqa: E731
        feedback = RateLimitFeedback
    count = BATCH_PERIODS * limit.requests

    async def main() -> TripRun:
        chosen = make_limiter()
        counter = (
            GcraCounter(limit, burst=burst) if kind == "gcra" else WindowCounter(limit, kind)  # type: ignore[arg-type]
        )
        refused = 0
        theirs = 0
        admitted: list[float] = []
        start = anyio.current_time() + (limit.period if others else 0.0)

        async def send() -> None:
            nonlocal refused
            while True:
                permit = await chosen.acquire()
                await anyio.sleep(round_trip / 2)
                now = anyio.current_time()
                decision = counter.hit(now)
                await anyio.sleep(round_trip / 2)
                told = headers or not decision.admitted
                await chosen.observe(
                    feedback(
                        permit,
                        200 if decision.admitted else 429,
                        remaining=decision.remaining if headers else None,
                        reset_after=decision.reset_after if headers else None,
                        retry_after=None if decision.admitted or not told else decision.retry_after,
                    )
                )
                if decision.admitted:
                    admitted.append(now)
                    return
                if now - start >= limit.period:
                    refused += 1
                await anyio.sleep(decision.retry_after)

        async def someone_else(done: anyio.Event) -> None:
            nonlocal theirs
            while not done.is_set():
                now = anyio.current_time()
                if not counter.hit(now).admitted and now >= start:
                    theirs += 1
                await anyio.sleep(limit.interval / others)

        done = anyio.Event()
        async with anyio.create_task_group() as outer:
            if others:
                outer.start_soon(someone_else, done)
                await anyio.sleep_until(start)
            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(send)
            done.set()
        makespan = max(admitted) - start
        return TripRun(
            plan=plan,
            kind=kind,
            burst=burst,
            headers=headers,
            round_trip=round_trip,
            others=others,
            limiter=limiter,
            rate_limited=refused,
            their_429s=theirs,
            ratio=makespan / (count / limit.per_second),
            share=count / makespan / limit.per_second,
        )

    return run_virtual(main, start=VIRTUAL_START)


def render_round_trips(runs: list[TripRun], *, command: str) -> str:
    """The Markdown report of the round-trip sweep: before and after side by side."""
    by_key: dict[tuple[object, ...], dict[str, TripRun]] = {}
    for run in runs:
        key = (run.plan, run.kind, run.burst, run.headers, run.round_trip, run.others)
        by_key.setdefault(key, {})[run.limiter] = run

    def server(run: TripRun) -> str:
        return f"gcra, burst {run.burst}" if run.kind == "gcra" else run.kind

    lines = [
        "# Local rate limiter at a real round trip (issue 27)",
        "",
        f"Command: `{command}` at {code_state()} · Python {platform.python_version()} · "
        "on virtual time (the same figures on any machine)",
        "",
        f"A quota-bound batch: {BATCH_PERIODS} periods' worth of requests (200 on free, 2,000 "
        "on pro, 10,000 on enterprise), all waiting from the start, through one limiter to one "
        "server model (`grok_imagine_async.testing`: a sliding or fixed window, or a leaky "
        "bucket (GCRA) of the burst shown). Each request takes half the round trip to the "
        "server and half back; a 429'd one is sent again after its `Retry-After`. "
        "*Before*: `LocalRateLimiter` at 8b0e17b (adaptive pacing); *after*: this commit. "
        "429s: ours after the first period (steady state). Makespan: until the last request "
        "was admitted, over the paced bound (the requests at the plan's rate): at most 1.05 "
        "means at least 95 % of the quota; below 1, a window's quota went at once.",
        "",
        "| plan | server | headers | round trip | 429s before | 429s after "
        "| makespan / paced bound before | after |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (_, _, _, _, _, others), pair in by_key.items():
        if others:
            continue
        after, before = pair.get("after"), pair.get("before")
        run = after or before
        assert run is not None
        cells = [
            run.plan,
            server(run),
            "yes" if run.headers else "no",
            f"{run.round_trip * 1000:g} ms",
            *(str(r.rate_limited) if r else "-" for r in (before, after)),
            *(f"{r.ratio:.3f}" if r else "-" for r in (before, after)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    shared = [pair for key, pair in by_key.items() if key[-1]]
    if shared:
        lines += [
            "",
            "## A second user of the token",
            "",
            "Someone else sends a quarter of the plan's rate to the same server, evenly, from a "
            "period before the batch starts; the headers show the quota shrinking. Our share: "
            "requests admitted per second over the plan's rate (75 % is left); their 429s: the "
            "other user's requests refused while the batch ran (ours: after its first period).",
            "",
            "| plan | server | round trip | our 429s before | after | their 429s before "
            "| after | our share before | after |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for pair in shared:
            after, before = pair.get("after"), pair.get("before")
            run = after or before
            assert run is not None
            lines.append(
                f"| {run.plan} | {server(run)} | {run.round_trip * 1000:g} ms "
                f"| {before.rate_limited if before else '-'} "
                f"| {after.rate_limited if after else '-'} "
                f"| {before.their_429s if before else '-'} "
                f"| {after.their_429s if after else '-'} "
                f"| {f'{before.share:.1%}' if before else '-'} "
                f"| {f'{after.share:.1%}' if after else '-'} |"
            )
    return "\n".join(lines) + "\n"
