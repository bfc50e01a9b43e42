"""Benchmark of LocalRateLimiter against ``AsyncLimiter(limit, period)`` and against no limiter.

Run from the repository root::

    python -m benchmarks.bench_limiter

Needs the ``emulator`` extra. Writes ``benchmarks/results/limiter.md`` and prints it.

1. **Against the emulator over real sockets.** The emulator runs under uvicorn on 127.0.0.1 in
   its own process (so its CPU time does not count as ours). For each quota (200 and 1000
   requests per 6 s), each way the server counts (a sliding window with ``X-RateLimit-Reset`` in
   seconds, a fixed window with it as a Unix time, a GCRA leaky bucket with a burst of 5 that
   refills at the quota's rate) and each limiter (ours, ours before the one limiter core, ours
   at ``--baseline REV`` if given, and ``AsyncLimiter(limit, period)``), one real
   ``AsyncGrokImagine`` with ``retry=RetryPolicy(attempts=0)`` is driven by 300 concurrent
   coroutines calling ``get_task`` (one call in ten is a ``generate``) for four windows. The
   emulator's arrival log is the judge: requests, 429s, utilization (requests received /
   (limit x elapsed periods)) and the most requests it saw in any sliding window of the
   period. The client's CPU time is divided by its requests.
2. **On virtual time** (``--part virtual``, ``results/limiter-virtual.md``): the same sweep with
   the emulator in process on the virtual-time loop and a simulated network between it and the
   client (see ``benchmarks/_limiter_virtual.py``), figures that the machine's load cannot move.
3. **Limiter CPU per permit.** The limiters alone, on the virtual-time loop (no sleeping, no
   HTTP): 1000 concurrent waiters take 10 000 permits at 1000 per 6 s.
4. **At a real round trip** (``--part round-trips``, ``results/limiter-round-trips.md``, issue
   27): a quota-bound batch on every plan through ours before and after, to windows and
   leaky buckets of 1-20, with and without headers, at 0-250 ms, on virtual time; and a second
   user of the token taking a quarter of it.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import anyio
import httpx
from aiolimiter import AsyncLimiter

from benchmarks._git import code_state
from benchmarks._limiter_virtual import (
    KINDS,
    PLANS,
    ROUND_TRIPS,
    TripRun,
    flood,
    render_round_trips,
    render_virtual,
    run_round_trip_one,
    run_virtual_one,
)
from benchmarks._sim_legacy import LIMITER_COMMIT
from grok_imagine_async import AsyncGrokImagine, LocalRateLimiter, RateLimit, RetryPolicy
from grok_imagine_async.abc import (
    LimiterStatistics,
    Permit,
    Priority,
    RateLimiter,
    RateLimitFeedback,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "limiter.md"
VIRTUAL = ROOT / "benchmarks" / "results" / "limiter-virtual.md"
ROUND_TRIP_RESULTS = ROOT / "benchmarks" / "results" / "limiter-round-trips.md"
LIMITS = (RateLimit(200, 6.0), RateLimit(1000, 6.0))
BURST = 5  # of the GCRA server's bucket
# How the server counts -> its X-RateLimit-Reset format.
SERVERS = {"sliding": "seconds", "fixed": "unix", "gcra": "seconds"}
WARM_UP_TOKEN = "warm-up"
# Concurrent callers per run. Enough for any of the limiters to use a 1000/6 s quota; far more
# only queues them in httpx's connection pool, which slows the baselines down instead of
# showing what they send (tests/test_local_limiter_emulator.py fires 3000 at once, in process).
WORKERS = 300


# -- the baselines, behind the client's limiter seam -----------------------------------------


class _Counting:
    """Permit bookkeeping shared by the baselines (they ignore the server's headers)."""

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._granted = 0

    @property
    def limit(self) -> RateLimit:
        return self._limit

    def _permit(self) -> Permit:
        self._granted += 1
        return Permit(granted_at=anyio.current_time(), serial=self._granted)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        return None

    def give_back(self, permit: Permit) -> None:
        return None

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(self._limit, self._granted, 0, 0.0, 0, 0, None, 0.0)


class AiolimiterAsUsual(_Counting):
    """``AsyncLimiter(requests, period)``, the way it is usually set up for an API quota."""

    def __init__(self, limit: RateLimit) -> None:
        super().__init__(limit)
        self._bucket = AsyncLimiter(limit.requests, limit.period)

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        await self._bucket.acquire()
        return self._permit()


class NoLimiter(_Counting):
    """Sends at once."""

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        return self._permit()


def before(limit: RateLimit, commit: str = LIMITER_COMMIT) -> RateLimiter:
    """``LocalRateLimiter`` as it was at ``commit`` (default: before the one limiter core)."""
    from benchmarks import _sim_legacy

    package = _sim_legacy.load(commit)
    limiter: RateLimiter = package.LocalRateLimiter(package.RateLimit(limit.requests, limit.period))
    return limiter


STRATEGIES: dict[str, Callable[[RateLimit], RateLimiter]] = {
    "before": before,
    "local": LocalRateLimiter,
    "aiolimiter": AiolimiterAsUsual,
    "none": NoLimiter,
}
NAMES = {
    "before": f"LocalRateLimiter at {LIMITER_COMMIT} (adaptive pacing)",
    "local": "LocalRateLimiter",
    "aiolimiter": "AsyncLimiter(limit, period)",
    "none": "no limiter",
}
DEFAULT_STRATEGIES = ("before", "local", "aiolimiter")


# -- the emulator, in its own process -----------------------------------------------------------


def _serve(window: str, tokens: dict[str, RateLimit], conn: Connection) -> None:
    """Child process: serve an emulator, answer arrival-log queries until told to stop."""
    from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread

    config = EmulatorConfig(
        tokens={**tokens, WARM_UP_TOKEN: RateLimit(10**6, 1.0)},
        window=window,  # type: ignore[arg-type]
        burst=BURST,
        reset_format=SERVERS[window],  # type: ignore[arg-type]
        seed=1,
    )
    emulator = Emulator(config)
    # The benchmark cancels its callers mid-request; uvicorn would log each one it drops.
    with serve_in_thread(emulator, log_level="critical") as url:
        conn.send(url)
        while (message := conn.recv()) != "stop":
            token, admitted_only = message
            conn.send(emulator.request_times(token, admitted_only=admitted_only))


class EmulatorProcess:
    """An emulator served by uvicorn in a child process; its arrival log on request."""

    def __init__(self, window: str, tokens: dict[str, RateLimit]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(window, tokens, child), daemon=True)

    def __enter__(self) -> EmulatorProcess:
        self._process.start()
        self.url: str = self._conn.recv()
        headers = {"Authorization": f"Bearer {WARM_UP_TOKEN}"}
        # The first generate does one-time work that would show up as a bunch of arrivals.
        with httpx.Client(base_url=self.url, headers=headers, timeout=30.0) as http:
            task_id = http.post("/v1/generate", json={"prompt": "warm-up"}).json()["data"]
            http.get("/v1/status", params={"task_id": task_id["task_id"]})
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._process.join(10)

    def request_times(self, token: str, *, admitted_only: bool = False) -> list[float]:
        self._conn.send((token, admitted_only))
        times: list[float] = self._conn.recv()
        return times


# -- one run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    limit: RateLimit
    window: str
    strategy: str
    requests: int
    rate_limited: int
    utilization: float
    max_window: int
    cpu_per_request: float
    errors: int


async def _drive(
    url: str, token: str, limiter: RateLimiter, workers: int, duration: float
) -> tuple[float, float, float, int]:
    """Flood the emulator for ``duration`` s; (start, end, client CPU s, failed calls).

    Requests the server receives after ``end`` (in flight when the workers were cancelled) are
    left out of the figures, so the elapsed time is exactly ``duration``.
    """
    http = httpx.AsyncClient(
        timeout=30.0, limits=httpx.Limits(max_connections=200, max_keepalive_connections=200)
    )
    async with (
        http,
        AsyncGrokImagine(
            api_key=token,
            base_url=url,
            limiter=limiter,
            http_client=http,
            retry=RetryPolicy(attempts=0),
        ) as grok,
    ):
        cpu_start, start = time.process_time(), time.monotonic()
        task_id = await grok.generate("a benchmark")
        end = start + duration
        failures = await flood(grok, task_id, workers, end - time.monotonic())
        cpu = time.process_time() - cpu_start  # cancelling the workers included
    return start, end, cpu, failures


def run_one(
    emulator: EmulatorProcess, window: str, limit: RateLimit, strategy: str, windows: float
) -> Run:
    token = token_for(strategy, limit)
    limiter = STRATEGIES[strategy](limit)
    start, end, cpu, failures = anyio.run(
        _drive, emulator.url, token, limiter, WORKERS, windows * limit.period
    )
    seen = [t for t in emulator.request_times(token) if start <= t <= end]
    admitted = [t for t in emulator.request_times(token, admitted_only=True) if start <= t <= end]
    periods = (end - start) / limit.period
    return Run(
        limit=limit,
        window=window,
        strategy=strategy,
        requests=len(seen),
        rate_limited=len(seen) - len(admitted),
        utilization=len(seen) / (limit.requests * periods),
        max_window=max_in_window(seen, limit.period),
        cpu_per_request=cpu / max(1, len(seen)),
        errors=failures,
    )


def max_in_window(times: list[float], period: float) -> int:
    """Most arrivals in any interval of ``period`` s, with the emulator's own boundary rule."""
    from grok_imagine_async.testing._quota import max_in_window as emulators_count

    return emulators_count(sorted(times), period)


def token_for(strategy: str, limit: RateLimit) -> str:
    """A token of its own per strategy and quota, so no run inherits another's window."""
    return f"{re.sub(r'[^a-z0-9]+', '-', strategy.lower()).strip('-')}-{limit.requests}"


# -- limiter CPU per permit ---------------------------------------------------------------------


def limiter_cpu(strategy: str, permits: int = 10_000, waiters: int = 1000) -> float:
    """CPU seconds per permit for ``waiters`` concurrent acquirers on the virtual-time loop."""
    from grok_imagine_async.testing import run_virtual

    async def main() -> float:
        limiter = STRATEGIES[strategy](RateLimit(1000, 6.0))

        async def take(count: int) -> None:
            for _ in range(count):
                await limiter.acquire()

        started = time.process_time()
        async with anyio.create_task_group() as group:
            for _ in range(waiters):
                group.start_soon(take, permits // waiters)
        return (time.process_time() - started) / permits

    return run_virtual(main)


# -- report -------------------------------------------------------------------------------------


def render(
    runs: list[Run], cpu: dict[str, float], command: str, windows: float, load: float
) -> str:
    lines = [
        "# Local rate limiter",
        "",
        f"Command: `{command}` at {code_state()} · Python {platform.python_version()} · "
        f"{os.cpu_count()} CPUs (load average {load:.1f} at the start, the machine was shared) · "
        "emulator under uvicorn on 127.0.0.1 in its own process",
        "",
        "## Against the emulator over real sockets",
        "",
        f"One `AsyncGrokImagine` (`retry=RetryPolicy(attempts=0)`) driven by {WORKERS} "
        "concurrent coroutines "
        f"(`get_task`, one call in ten a `generate`) for {windows:g} windows of 6 s. Server "
        "kinds: `sliding` (a sliding window, `X-RateLimit-Reset` in seconds), `fixed` (a fixed "
        "window, the reset as a Unix time), `gcra` (a leaky bucket refilled at the quota's rate "
        f"that holds at most {BURST} requests: its `Remaining` is at most {BURST - 1}). No "
        "limiter is told which kind it faces. Utilization = requests the server received / "
        "(limit x elapsed periods), which is also the share of a bucket's sustained rate; above "
        "100 % means over quota. Max window: most requests the server received in any 6 s "
        "(sliding) interval, 429'd ones included.",
        "",
        "| limit | server | limiter | requests | 429s | utilization | max in any 6 s "
        "| client CPU per request |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.limit.requests}/{run.limit.period:g} s | {run.window} | {NAMES[run.strategy]} "
            f"| {run.requests} | {run.rate_limited} | {run.utilization:.1%} "
            f"| {run.max_window} | {run.cpu_per_request * 1e6:.0f} µs |"
        )
    lines += [
        "",
        "## Limiter CPU per permit",
        "",
        "The limiters alone on the virtual-time loop: 1000 concurrent waiters take 10 000 "
        "permits at 1000 per 6 s (no HTTP, no sleeping; the loop's own work included).",
        "",
        "| limiter | CPU per permit |",
        "|---|---:|",
    ]
    lines += [f"| {NAMES[name]} | {seconds * 1e6:.1f} µs |" for name, seconds in cpu.items()]
    return "\n".join(lines) + "\n"


def sweep_sockets(servers: list[str], strategies: list[str], windows: float, command: str) -> str:
    tokens = {token_for(s, limit): limit for s in strategies for limit in LIMITS}
    load = os.getloadavg()[0]
    runs = []
    for window in servers:
        with EmulatorProcess(window, tokens) as emulator:
            for limit in LIMITS:
                for strategy in strategies:
                    run = run_one(emulator, window, limit, strategy, windows)
                    print(
                        f"{limit.requests}/{limit.period:g}s {window:7} {strategy:10} "
                        f"requests={run.requests} 429s={run.rate_limited} "
                        f"util={run.utilization:.1%} max={run.max_window}",
                        file=sys.stderr,
                    )
                    runs.append(run)
    cpu = {strategy: limiter_cpu(strategy) for strategy in strategies}
    return render(runs, cpu, command, windows, load)


def sweep_virtual(servers: list[str], strategies: list[str], windows: float, command: str) -> str:
    runs = []
    for server in servers:
        for limit in LIMITS:
            for strategy in strategies:
                run = run_virtual_one(server, BURST, limit, strategy, STRATEGIES[strategy], windows)
                print(
                    f"virtual {limit.requests}/{limit.period:g}s {server:7} {strategy:10} "
                    f"requests={run.requests} 429s={run.rate_limited} "
                    f"util={run.utilization:.1%} max={run.max_window}",
                    file=sys.stderr,
                )
                runs.append(run)
    return render_virtual(runs, command=command, windows=windows, names=NAMES, burst=BURST)


def sweep_round_trips(command: str) -> str:
    runs: list[TripRun] = []
    cases = [
        (plan, kind, burst, headers, trip, 0.0)
        for plan in PLANS
        for kind, burst in KINDS
        for headers in (True, False)
        for trip in ROUND_TRIPS
    ]
    cases += [(plan, kind, 5, True, 0.1, 0.25) for plan in PLANS for kind in ("gcra", "sliding")]
    for plan, kind, burst, headers, trip, others in cases:
        for limiter in ("before", "after"):
            run = run_round_trip_one(
                plan, kind, burst, headers=headers, round_trip=trip, limiter=limiter, others=others
            )
            print(
                f"{plan:10} {kind:7} burst={burst:2} headers={headers!s:5} rtt={trip * 1000:g}ms "
                f"others={others:g} {limiter:6} 429s={run.rate_limited} ratio={run.ratio:.3f} "
                f"share={run.share:.1%} theirs={run.their_429s}",
                file=sys.stderr,
            )
            runs.append(run)
    return render_round_trips(runs, command=command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=float, default=4.0, help="run length, in periods")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="server kinds, comma-separated"
    )
    parser.add_argument(
        "--limiters",
        default=",".join(DEFAULT_STRATEGIES),
        help=f"limiters, comma-separated, from: {', '.join(STRATEGIES)} (default: all but none)",
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="also run LocalRateLimiter as it was at this commit"
    )
    parser.add_argument(
        "--part",
        choices=["all", "sockets", "virtual", "round-trips"],
        default="all",
        help="over real sockets (results/limiter.md), on virtual time "
        "(results/limiter-virtual.md), at round trips of 0-250 ms against every plan, before "
        "and after (results/limiter-round-trips.md), or all (default)",
    )
    args = parser.parse_args(argv)
    servers = [kind for kind in args.servers.split(",") if kind]
    strategies = [name.strip() for name in args.limiters.split(",") if name.strip()]
    if args.baseline:
        STRATEGIES["baseline"] = functools.partial(before, commit=args.baseline)
        NAMES["baseline"] = f"LocalRateLimiter at {args.baseline}"
        strategies.insert(strategies.index("local") if "local" in strategies else 0, "baseline")
    unknown = sorted(set(servers) - set(SERVERS)) + sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown server kinds or limiters: {unknown}")
    command = "python -m benchmarks.bench_limiter" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    reports = []
    if args.part in ("all", "sockets"):
        reports.append((RESULTS, sweep_sockets(servers, strategies, args.windows, command)))
    if args.part in ("all", "virtual"):
        reports.append((VIRTUAL, sweep_virtual(servers, strategies, args.windows, command)))
    if args.part in ("all", "round-trips"):
        reports.append((ROUND_TRIP_RESULTS, sweep_round_trips(command)))
    for path, report in reports:
        if not args.no_write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report, encoding="utf-8")
        print(report)


if __name__ == "__main__":
    main()
