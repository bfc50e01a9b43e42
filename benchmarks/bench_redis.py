"""Benchmark of the Redis-backed shared limiter: cost per permit, and K = 4 processes on one token.

Run from the repository root::

    python -m benchmarks.bench_redis

Needs ``redis-server`` on the PATH and the ``redis`` and ``emulator`` extras. Starts its own
redis-server and emulator on 127.0.0.1, writes ``benchmarks/results/redis.md`` and prints it.

1. **Cost per permit.** 1 and 4 processes each take permits one after another from a
   ``RedisRateLimiter`` whose limit is far above what they can use, so no pacing wait hides
   the overhead: Redis commands per permit (Redis's own ``INFO commandstats``) and the latency
   of one ``acquire``.
2. **Four processes, one token.** K = 4 worker processes (``tests/_redis_worker.py``), each
   with its own ``AsyncGrokImagine``, send ``POST /v1/generate`` through uvicorn to one emulator
   that enforces 100 requests per sliding 3 s window. The emulator's arrival log is the judge.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "redis.md"
sys.path.insert(0, str(ROOT / "tests"))  # the worker and redis-server helpers live with the tests

from _redis_worker import (  # noqa: E402
    WARM_UP_TOKEN,
    RedisServer,
    collect,
    redis_server_binary,
    start_workers,
    warm_up_emulator,
)

from grok_imagine_async import RateLimit  # noqa: E402

TOKEN = "bench-token"
LIMIT = RateLimit(100, 3.0)
K = 4
UNBOUNDED = RateLimit(1_000_000_000, 1.0)


# -- 1. cost per permit ----------------------------------------------------------------------


def _take_permits(url: str, count: int, start_at: float, out: Any) -> None:
    """One process: ``count`` sequential acquires; puts the sorted latencies on ``out``."""
    import anyio

    from grok_imagine_async.redis import RedisRateLimiter

    async def run() -> list[float]:
        async with RedisRateLimiter(url, limit=UNBOUNDED, api_key=TOKEN) as limiter:
            await limiter.acquire()  # connect and load the script before the clock starts
            await anyio.sleep(max(0.0, start_at - time.time()))
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                await limiter.acquire()
                latencies.append(time.perf_counter() - started)
            return latencies

    out.put(sorted(anyio.run(run)))


# What the two Lua scripts run inside Redis. The limiter never sends these itself, so every
# other command in INFO commandstats is a round trip from a client.
_SCRIPT_INNER = {"time", "get", "set", "zadd", "zremrangebyscore", "pexpire", "zcount", "zcard"}


def _commands(url: str) -> tuple[int, int]:
    """(round trips, commands run inside scripts) since the last reset, minus our INFO/CONFIG."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    trips = inner = 0
    for name, entry in stats.items():
        command = name.removeprefix("cmdstat_")
        if command.startswith(("info", "config")):
            continue
        if command in _SCRIPT_INNER:
            inner += int(entry["calls"])
        else:
            trips += int(entry["calls"])
    return trips, inner


def _reset_stats(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.config_resetstat()
    finally:
        client.close()


def cost_per_permit(server: RedisServer, processes: int, per_process: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 1.5
    workers = [
        context.Process(target=_take_permits, args=(server.url, per_process, start_at, out))
        for _ in range(processes)
    ]
    _reset_stats(server.url)
    for worker in workers:
        worker.start()
    latencies = sorted(lat for _ in workers for lat in out.get(timeout=120))
    for worker in workers:
        worker.join()
    permits = processes * (per_process + 1)  # the warm-up permit included
    trips, inner = _commands(server.url)
    return {
        "processes": processes,
        "permits": processes * per_process,
        "trips": trips / permits,
        "inner": inner / permits,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
    }


# -- 2. four processes, one token --------------------------------------------------------------


def shared_token_run(
    server: RedisServer,
    *,
    label: str,
    per_worker: int,
    skews: list[float],
    reset_format: str = "seconds",
    limiter: str = "redis",
    during: Callable[[], None] | None = None,
    probe_intervals: list[float] | None = None,
) -> dict[str, Any]:
    from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread

    emulator = Emulator(
        EmulatorConfig(
            tokens={TOKEN: LIMIT, WARM_UP_TOKEN: LIMIT},
            window="sliding",
            reset_format=reset_format,  # type: ignore[arg-type]
            seed=3,
        )
    )
    _reset_stats(server.url)
    with serve_in_thread(emulator) as base_url:
        warm_up_emulator(base_url)
        workers = start_workers(
            redis_url=server.url,
            base_url=base_url,
            token=TOKEN,
            limit=LIMIT,
            per_worker=per_worker,
            skews=skews,
            limiter=limiter,
            probe_intervals=probe_intervals,
        )
        if during is not None:
            during()
        summaries = collect(workers)
    admitted = emulator.request_times(TOKEN, admitted_only=True)
    permits = sum(s["permits"] for s in summaries)
    return {
        "label": label,
        "requests": len(emulator.request_times(TOKEN)),
        "rate_limited": emulator.statistics().rate_limited,
        "max_window": emulator.max_window_count(LIMIT.period, TOKEN),
        "utilization": (len(admitted) - 1) / (admitted[-1] - admitted[0]) / LIMIT.per_second,
        "calls_per_permit": sum(s["redis_calls"] for s in summaries) / permits,
        "fallbacks": sum(s["fallbacks"] for s in summaries),
        "recoveries": sum(s["recoveries"] for s in summaries),
        "late_slots": sum(s["late_slots"] for s in summaries),
    }


def kill_and_restart(server: RedisServer) -> Callable[[], None]:
    def fault() -> None:
        time.sleep(2.0 + 3.0)  # the workers' start delay, then 3 s of shared pacing
        server.kill()
        time.sleep(2.0)
        server.start()

    return fault


# -- report ----------------------------------------------------------------------------------


def render(costs: list[dict[str, Any]], runs: list[dict[str, Any]], command: str) -> str:
    redis_version = subprocess.run(
        [redis_server_binary() or "redis-server", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    version = next((part[2:] for part in redis_version if part.startswith("v=")), "?")
    lines = [
        "# Redis-backed shared limiter",
        "",
        f"Command: `{command}` · Python {platform.python_version()} · redis-server {version} "
        f"· {os.cpu_count()} CPUs · all on 127.0.0.1",
        "",
        "## Cost per permit",
        "",
        "Sequential `acquire()` calls with a limit far above what is used, so no pacing wait",
        "hides the overhead. Commands are counted by Redis itself (`INFO commandstats`): round",
        "trips are the commands clients sent (the script call, plus the script load and",
        "connection setup once per process); the script's own commands run inside Redis.",
        "",
        "| processes | permits | round trips to Redis per permit | commands inside the script "
        "| latency p50 | latency p99 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for cost in costs:
        lines.append(
            f"| {cost['processes']} | {cost['permits']} | {cost['trips']:.4f} "
            f"| {cost['inner']:.1f} | {cost['p50'] * 1e6:.0f} µs | {cost['p99'] * 1e6:.0f} µs |"
        )
    lines += [
        "",
        "## Four processes, one token",
        "",
        f"K = {K} worker processes, 4 concurrent senders each, one `AsyncGrokImagine` per",
        f"process, against one emulator enforcing {LIMIT.requests} requests per sliding "
        f"{LIMIT.period:g} s window",
        "(uvicorn, 127.0.0.1). Utilization: admitted requests per second between the first and",
        "the last admitted one, as a fraction of the plan's rate.",
        "",
        f"| scenario | requests | 429s | max in any {LIMIT.period:g} s window "
        f"(limit {LIMIT.requests}) | utilization | Redis calls per permit | fallbacks / "
        "recoveries |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        shared = run["label"].startswith(f"{K} x Redis")
        calls = f"{run['calls_per_permit']:.2f}" if shared else "-"
        recoveries = f"{run['fallbacks']} / {run['recoveries']}" if shared else "-"
        lines.append(
            f"| {run['label']} | {run['requests']} | {run['rate_limited']} | {run['max_window']} "
            f"| {run['utilization']:.1%} | {calls} | {recoveries} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run both parts, write ``benchmarks/results/redis.md`` and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-process", type=int, default=2000, help="permits per process (1.)")
    parser.add_argument("--per-worker", type=int, default=75, help="requests per worker (2.)")
    args = parser.parse_args(argv)
    binary = redis_server_binary()
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")

    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(binary, Path(directory))
        server.start()
        try:
            costs = [cost_per_permit(server, n, args.per_process) for n in (1, K)]
            n = args.per_worker
            runs = [
                shared_token_run(
                    server,
                    label="4 x LocalRateLimiter (each process alone)",
                    per_worker=n,
                    skews=[0.0] * K,
                    limiter="local",
                ),
                shared_token_run(
                    server, label="4 x RedisRateLimiter", per_worker=n, skews=[0.0] * K
                ),
                shared_token_run(
                    server,
                    label="4 x RedisRateLimiter, clocks +-0.5 s, Unix-time resets",
                    per_worker=n,
                    skews=[-0.5, 0.5, -0.5, 0.5],
                    reset_format="unix",
                ),
                shared_token_run(
                    server,
                    label="4 x RedisRateLimiter, Redis killed for 2 s mid-run",
                    per_worker=n,
                    skews=[0.0] * K,
                    during=kill_and_restart(server),
                    probe_intervals=[0.3, 1.0, 1.7, 2.4],  # they come back at different times
                ),
            ]
        finally:
            server.kill()

    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"python -m benchmarks.bench_redis {argv_text}".strip()
    report = render(costs, runs, command)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
