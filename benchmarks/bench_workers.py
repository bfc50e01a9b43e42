"""Benchmark of one batch split over K processes through Redis (issue 14), against one process.

Run from the repository root::

    python -m benchmarks.bench_workers            # 2,000 jobs, K = 1 and K = 4
    python -m benchmarks.bench_workers --jobs 200 # a quick look
    python -m benchmarks.bench_workers --baseline 8b0e17b  # that commit's package beside this one

Needs ``redis-server`` on the PATH and the ``redis``, ``emulator`` and ``cli`` extras. Starts
its own redis-server and emulator (uvicorn on 127.0.0.1, pro plan, every time divided by
``--time-scale``), then for each K runs K ``grok-imagine batch INPUT --journal redis://...``
processes on one input file and one token, and writes ``benchmarks/results/workers.md``.

Measured: the makespan (first start to last exit), the emulator's 429s and duplicate tasks
(a job paid twice), the most requests it saw in any window of the plan, and Redis round trips
per job (Redis's own ``INFO commandstats``: script calls plus the commands a client sends
alone, over every process, limiter included).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "workers.md"
sys.path.insert(0, str(ROOT / "tests"))  # the redis-server helper lives with the tests

from _redis_worker import RedisServer, redis_server_binary  # noqa: E402

from benchmarks._git import extract  # noqa: E402
from grok_imagine_async import RateLimit  # noqa: E402
from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread  # noqa: E402

TOKEN = "bench-workers-token"
# Round trips: each script call, and the commands a client sends on their own (scripts run
# their inner commands on the server, which INFO counts too: those are left out).
# A SCAN of the job store is followed by one pipelined read of its page (two round trips);
# a MULTI/EXEC pipeline is one.
_TRIPS = {"evalsha", "eval", "script|load", "hmget", "del", "subscribe", "config|get", "exec"}
_TWICE = {"scan"}


def _round_trips(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(entry["calls"]) * (2 if name.removeprefix("cmdstat_") in _TWICE else 1)
        for name, entry in stats.items()
        if name.removeprefix("cmdstat_") in _TRIPS | _TWICE
    )


def _reset_stats(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.config_resetstat()
        client.flushall()
    finally:
        client.close()


def _argv(prompts: Path, out: Path, redis_url: str, base_url: str, scale: float) -> list[str]:
    return [
        sys.executable, "-m", "grok_imagine_async._cli", "batch", str(prompts),
        "--out", str(out), "--journal", redis_url, "--base-url", base_url,
        "--plan", "pro", "--time-scale", str(scale), "--no-progress",
    ]  # fmt: skip


def run(
    k: int,
    *,
    jobs: int,
    scale: float,
    redis: RedisServer,
    work: Path,
    package: Path = ROOT,
    label: str = "this tree",
) -> dict[str, object]:
    """One batch of ``jobs`` by ``k`` processes of the package under ``package``; the
    figures of one table row."""
    limit = RateLimit(1000, 60.0 / scale)  # the pro plan, as --time-scale paces it
    emulator = Emulator(
        EmulatorConfig(
            tokens={TOKEN: limit}, duration_sigma=0.5, time_scale=scale, result_ttl=None, seed=k
        )
    )
    prompts = work / f"prompts-{k}.txt"
    prompts.write_text("".join(f"a lighthouse, take {n}\n" for n in range(jobs)))
    _reset_stats(redis.url)
    env = {**os.environ, "GROK_IMAGINE_API_KEY": TOKEN, "PYTHONPATH": str(package)}
    with serve_in_thread(emulator) as url:
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                _argv(prompts, work / f"k{k}-p{i}", redis.url, url, scale),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(k)
        ]
        outputs = []
        for p in processes:
            outputs.append(p.communicate(timeout=1800)[0])
            if os.environ.get("BENCH_VERBOSE"):
                print(f"{time.monotonic() - started:.1f}s", outputs[-1][-400:], flush=True)
        makespan = time.monotonic() - started
        failed = [out for p, out in zip(processes, outputs, strict=True) if p.returncode != 0]
        if failed:
            raise RuntimeError(f"a batch process failed:\n{failed[0][-3000:]}")
        stats = emulator.statistics()
        if os.environ.get("BENCH_VERBOSE"):
            times = emulator.request_times(TOKEN)
            print(f"requests from {times[0]:.1f} to {times[-1]:.1f}; makespan {makespan:.1f}")
        max_window = emulator.max_window_count(limit.period, TOKEN)
    trips = _round_trips(redis.url)
    lower = 2 * jobs / limit.per_second  # every job needs its POST and at least one poll
    return {
        "code": label,
        "k": k,
        "makespan": makespan,
        "bound": lower,
        "rate_limited": stats.rate_limited,
        "duplicates": len(stats.duplicate_submissions),
        "tasks": stats.tasks_created,
        "requests_per_job": stats.requests_total / jobs,
        "max_window": max_window,
        "limit": limit.requests,
        "trips_per_job": trips / jobs,
    }


def render(
    rows: list[dict[str, object]], *, jobs: int, scale: float, baseline: str | None = None
) -> str:
    lines = [
        f"# One batch split over K processes through Redis ({jobs} jobs, one token)",
        "",
        f"Pro plan (1,000 requests per minute) with every time divided by {scale:g}: the quota "
        f"is {1000} requests per {60 / scale:g} s. Emulator under uvicorn on 127.0.0.1, "
        "median generation 30 s / scale, lognormal sigma 0.5. Each process is "
        "`grok-imagine batch INPUT --journal redis://...` on the same input and token.",
        "",
        "| code | K processes | makespan | quota bound (2 requests a job) | 429s "
        "| jobs paid twice | tasks | requests per job | most in any window "
        "| Redis round trips per job |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            "| {code} | {k} | {makespan:.1f} s | {bound:.1f} s | {rate_limited} | {duplicates} "
            "| {tasks} "
            "| {requests_per_job:.2f} | {max_window} of {limit} | {trips_per_job:.2f} |".format(
                **row
            )
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}. Command: `python -m benchmarks.bench_workers "
        f"--jobs {jobs} --time-scale {scale:g}"
        + (f" --baseline {baseline}" if baseline else "")
        + "`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--workers", default="1,4", help="process counts to run, comma-separated")
    parser.add_argument(
        "--baseline", metavar="REF", help="also run the package of this git commit, row by row"
    )
    args = parser.parse_args(argv)
    binary = redis_server_binary()
    if binary is None:
        print("redis-server is not installed: nothing to measure", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis = RedisServer(binary, work)
        redis.start()
        try:
            versions = [(ROOT, "this tree")]
            if args.baseline:
                versions.insert(
                    0, (extract(args.baseline, work / "baseline"), f"baseline {args.baseline}")
                )
            rows = [
                run(
                    int(k),
                    jobs=args.jobs,
                    scale=args.time_scale,
                    redis=redis,
                    work=work,
                    package=package,
                    label=label,
                )
                for k in args.workers.split(",")
                for package, label in versions
            ]
        finally:
            redis.kill()
    text = render(rows, jobs=args.jobs, scale=args.time_scale, baseline=args.baseline)
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
