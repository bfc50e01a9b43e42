"""Bounds and percentiles of the scheduler benchmark, from :class:`RunResult` timelines."""

from __future__ import annotations

import math
from collections.abc import Sequence

from benchmarks._sim_run import RunResult


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def lower_bound(result: RunResult) -> float:
    """``max(2N / limit per second, longest job)``: no schedule can finish sooner."""
    per_second = result.requests_per_period / result.period
    longest = max(result.durations, default=0.0)
    return max(2 * result.scenario.jobs / per_second, longest)


def paced_bound(result: RunResult) -> float:
    """The bound when the k-th task cannot start before the k-th paced request slot."""
    per_second = result.requests_per_period / result.period
    latest = max((k / per_second + d for k, d in enumerate(result.durations)), default=0.0)
    return max(2 * result.scenario.jobs / per_second, latest)


def window_bound(result: RunResult) -> float:
    """The bound when the k-th task cannot start before the window holding the k-th request.

    A client that never earns a 429 from a sliding-window server sends at most ``limit``
    requests in any ``period``, so its k-th request (from 0) is at least ``k // limit``
    periods after its first, however it bunches them; its last of at least 2N requests too.
    """
    limit, period = result.requests_per_period, result.period
    latest = max(
        ((k // limit) * period + d for k, d in enumerate(result.durations)),
        default=0.0,
    )
    return max(((2 * result.scenario.jobs - 1) // limit) * period, latest)
