"""Run the benchmarks in turn: ``python -m benchmarks [NAME ...]``, names from ``BENCHMARKS``.

With no argument, all of them (``nox -s benchmarks`` does this). Each writes its table under
``benchmarks/results/``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("limiter", "scheduler", "redis", "hostile", "workers", "telemetry", "overhead")


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}: choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    worst = 0
    for name in chosen:
        print(f"== python -m benchmarks.bench_{name}", flush=True)
        worst = max(worst, subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}"]))
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
