"""Peak memory of one ``generate_many`` batch, each size in a fresh process.

Run as ``python -m benchmarks._sim_memory JOBS`` it runs JOBS generations on the enterprise
plan against the in-process emulator on virtual time, keeping nothing per job on the caller's
side (as a program streaming results to disk would), and prints one JSON line. The parent side
is :func:`measure`.

The figure is the process's peak resident set (``ru_maxrss``), so it includes the emulator,
which keeps every task it created and every request time; ``emulator_mb`` estimates that part
as the summed ``sys.getsizeof`` of every object reachable from the emulator at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

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
        wall_seconds: Real time of the batch.
    """

    jobs: int
    completed: int
    peak_rss_mb: float
    start_rss_mb: float
    emulator_mb: float
    wall_seconds: float


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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return completed, peak, deep_size_mb(emulator)  # after the peak: the walk takes memory


def main() -> None:
    """Child side: run one batch and print a :class:`MemoryFigure` as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", type=int)
    args = parser.parse_args()
    import logging

    from grok_imagine_async.testing import run_virtual

    logging.getLogger("grok_imagine_async").setLevel(logging.ERROR)
    start_rss = _current_rss_mb()
    started = time.perf_counter()
    completed, peak, share = run_virtual(_batch, args.jobs)
    wall = time.perf_counter() - started
    figure = MemoryFigure(args.jobs, completed, peak, start_rss, share, wall)
    print(json.dumps(figure.__dict__))


def measure(jobs: int) -> MemoryFigure:
    """Run a batch of ``jobs`` in a fresh interpreter and return what it measured."""
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "benchmarks._sim_memory", str(jobs)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return MemoryFigure(**json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
