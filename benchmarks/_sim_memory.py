"""Peak memory of one ``generate_many`` batch, each size in a fresh process.

Run as ``python -m benchmarks._sim_memory JOBS`` it runs JOBS generations on the enterprise
plan against the in-process emulator on virtual time, keeping nothing per job on the caller's
side (as a program streaming results to disk would), and prints one JSON line. The parent side
is :func:`measure`.

The figure is the process's peak resident set (``VmHWM``), so it includes the emulator,
which keeps every task it created and every request time. Two ways to tell that part apart:
``emulator_mb``, the summed ``sys.getsizeof`` of every object reachable from the emulator at
the end, and ``python -m benchmarks._sim_memory JOBS --emulator-only``, which sends the same
kind of traffic (one POST and one poll per job, paced to the plan) straight to an emulator, with
no scheduler, so the difference of the two peaks is what the scheduler side costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLAN = "enterprise"


@dataclass(frozen=True)
class MemoryFigure:
    """What one child process measured.

    Attributes:
        jobs: Jobs in the batch.
        completed: Jobs that completed.
        peak_rss_mb: Peak resident set of the whole process, MiB.
        start_rss_mb: Resident set after imports, before the batch, MiB.
        emulator_mb: Memory held by the emulator at the end (objects reachable from it), MiB.
        emulator_only: True for the replay without a scheduler.
        wall_seconds: Real time of the batch.
    """

    jobs: int
    completed: int
    peak_rss_mb: float
    start_rss_mb: float
    emulator_mb: float
    wall_seconds: float
    emulator_only: bool = False


def _peak_rss_mb() -> float:
    """This process's peak resident set, MiB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve``, so a child
    started by a big parent would report the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def deep_size_mb(root: object) -> float:
    """Summed ``sys.getsizeof`` of the objects reachable from ``root``, in MiB.

    Classes, modules, functions and code are shared with the rest of the process and skipped.
    """
    shared = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, shared):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total / 2**20


async def _batch(jobs: int) -> tuple[int, float, float]:
    from benchmarks._sim_run import make_client, make_emulator, prompts

    emulator = make_emulator(PLAN, seed=1)
    client = make_client(emulator, PLAN, "ours")
    completed = 0
    async with client.generate_many(prompts(PLAN, jobs)) as results:
        async for result in results:
            completed += result.ok
    await client.aclose()
    peak = _peak_rss_mb()
    return completed, peak, deep_size_mb(emulator)  # after the peak: the walk takes memory


async def _replay(jobs: int) -> tuple[int, float, float]:
    """The emulator's side of a batch alone: one POST and one poll per job, paced to the plan.

    Each task is polled two periods after its POST, so only that many task ids are held.
    """
    from collections import deque

    import anyio

    from benchmarks._sim_run import TOKEN, make_emulator, prompts

    emulator = make_emulator(PLAN, seed=1)
    limit = emulator.config.rate_limits()[TOKEN]
    interval = limit.period / limit.requests
    lag = limit.requests  # a poll for every POST: a task is polled two periods after it began
    pending: deque[str] = deque()
    completed = 0

    async def poll(http: Any) -> None:
        nonlocal completed
        answer = await http.get("/v1/status", params={"task_id": pending.popleft()})
        completed += answer.json()["data"]["status"] == "completed"
        await anyio.sleep(interval)

    async with emulator.client(token=TOKEN) as http:
        for prompt in prompts(PLAN, jobs):
            answer = await http.post("/v1/generate", json={"prompt": prompt})
            pending.append(answer.json()["data"]["task_id"])
            await anyio.sleep(interval)
            if len(pending) > lag:
                await poll(http)
        await anyio.sleep(3600.0)
        while pending:
            await poll(http)
    peak = _peak_rss_mb()
    return completed, peak, deep_size_mb(emulator)


def main() -> None:
    """Child side: run one batch and print a :class:`MemoryFigure` as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", type=int)
    parser.add_argument("--emulator-only", action="store_true", help="no scheduler")
    args = parser.parse_args()
    import logging

    from grok_imagine_async.testing import run_virtual

    logging.getLogger("grok_imagine_async").setLevel(logging.ERROR)
    start_rss = _current_rss_mb()
    started = time.perf_counter()
    batch = _replay if args.emulator_only else _batch
    completed, peak, share = run_virtual(batch, args.jobs)
    wall = time.perf_counter() - started
    figure = MemoryFigure(args.jobs, completed, peak, start_rss, share, wall, args.emulator_only)
    print(json.dumps(figure.__dict__))


def measure(jobs: int, *, emulator_only: bool = False) -> MemoryFigure:
    """Run a batch of ``jobs`` (or its replay) in a fresh interpreter; return what it measured."""
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "benchmarks._sim_memory", str(jobs)]
    if emulator_only:
        command.append("--emulator-only")
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return MemoryFigure(**json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
