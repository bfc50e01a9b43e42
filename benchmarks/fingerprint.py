"""A behaviour fingerprint: a refactor must leave the scheduler's decisions as they were.

Runs a fixed set of batches on virtual time (outages at several starts, refusals, usual
faults, quota-bound batches, on sliding, fixed and leaky-bucket servers), each in a fresh
process, and prints one line per batch: makespan, tasks or requests, what was paid during an
outage, completions and the breaker's course. The runs repeat exactly, so compare two
checkouts line for line::

    PYTHONPATH=$PWD python -m benchmarks.fingerprint > after.txt
    (the same at the base commit, into before.txt), then ``diff before.txt after.txt``

An empty diff says the change kept behaviour; a diff names the batch that moved (Python 3.11+).
"""

from __future__ import annotations

import contextlib
import io
import sys
from concurrent.futures import ProcessPoolExecutor

from benchmarks._sim_run import Scenario, run_scenario
from benchmarks.bench_scheduler import OutageCase, _outage_one

CASES = (
    OutageCase("free", 300),
    OutageCase("pro", 300),
    OutageCase("pro", 300, median=10.0),
    OutageCase("free", 300, "outage", 0.0, 30.0),
    OutageCase("free", 300, "outage", 202.0, 30.0),
    OutageCase("pro", 300, "outage", 0.0, 30.0),
    OutageCase("pro", 300, "outage", 8.0, 30.0, 10.0),
    OutageCase("pro", 300, "outage", 20.0, 30.0, 10.0, "gcra"),
    OutageCase("free", 300, "refused"),
    OutageCase("pro", 300, "usual"),
    OutageCase("free", 300, "usual"),
    OutageCase("free", 300, "outage", 150.0, 120.0, 10.0, "fixed"),
)
SCENARIOS = (
    Scenario("free", 100),
    Scenario("pro", 500),
    Scenario("pro", 300, median=6.0),
    Scenario("free", 200, server="fixed"),
    Scenario("pro", 400, quota=(200, 6.0), median=15.0),
)


def line(batch: OutageCase | Scenario) -> str:
    """One batch, as a line: an outage-section case or a simulated batch."""
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(batch, OutageCase):
            row = _outage_one(batch)
            figures = (
                f"makespan {row['makespan']:.3f} tasks {row['tasks']} "
                f"paid {row['paid_during']} ok {row['completed']} {row['transitions']}"
            )
        else:
            result = run_scenario(batch)
            figures = (
                f"makespan {result.makespan:.3f} requests {result.requests} "
                f"ok {result.completed} 429 {result.rate_limited}"
            )
    return f"{batch}: {figures}"


def main(argv: list[str] | None = None) -> None:
    """Print the fingerprint; ``argv[0]``: worker processes (default 2)."""
    args = sys.argv[1:] if argv is None else argv
    workers = int(args[0]) if args else 2
    # A fresh process per batch: nothing a run leaves in a module carries into the next.
    with ProcessPoolExecutor(max_workers=workers, max_tasks_per_child=1) as pool:
        lines = list(pool.map(line, [*CASES, *SCENARIOS]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
