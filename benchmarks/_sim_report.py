"""Figures, table and plot of the scheduler benchmark, from :class:`RunResult` timelines."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._sim_run import LIMITERS, OURS, RunResult

TARGET_REQUESTS_PER_JOB = 2.3
TARGET_MAKESPAN_RATIO = 1.10


@dataclass(frozen=True)
class Row:
    """One line of the results table.

    Attributes:
        plan: The plan tier.
        seed: The emulator's seed.
        name: The strategy's name.
        limiter: The limiter variant's key.
        jobs: Jobs run.
        completed: Jobs completed.
        rate_limited: 429 answers.
        requests_per_job: Requests (429'd ones included) per completed job.
        latency_p50: Median detection latency, seconds.
        latency_p99: 99th percentile detection latency, seconds.
        makespan: Seconds from start to the last result.
        bound: ``max(2N / limit per second, longest job)``.
        paced_bound: ``max(2N / limit per second, max_k((k - 1) / limit per second + d_k))``
            with ``d_k`` the duration of the k-th task created: the emulator draws durations
            in creation order, so no client that paces its POSTs can finish sooner.
        window_bound: ``max(floor((2N - 1) / limit) * period, max_k(floor((k - 1) / limit) *
            period + d_k))``: the bound for any client that never sends more than the quota in
            one sliding window, even one that spends a whole window's quota at once.
        wall_seconds: Real time the simulation took.
    """

    plan: str
    name: str
    limiter: str
    seed: int
    jobs: int
    completed: int
    rate_limited: int
    requests_per_job: float
    latency_p50: float
    latency_p99: float
    makespan: float
    bound: float
    paced_bound: float
    window_bound: float
    wall_seconds: float

    @property
    def ratio(self) -> float:
        """Makespan over its lower bound."""
        return self.makespan / self.bound if self.bound > 0 else math.inf


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


def summarize(result: RunResult) -> Row:
    """The table row of one run."""
    return Row(
        plan=result.scenario.plan,
        name=result.scenario.name,
        limiter=result.scenario.limiter,
        seed=result.scenario.seed,
        jobs=result.scenario.jobs,
        completed=result.completed,
        rate_limited=result.rate_limited,
        requests_per_job=result.requests / max(1, result.completed),
        latency_p50=percentile(result.latencies, 0.50),
        latency_p99=percentile(result.latencies, 0.99),
        makespan=result.makespan,
        bound=lower_bound(result),
        paced_bound=paced_bound(result),
        window_bound=window_bound(result),
        wall_seconds=result.wall_seconds,
    )


def _mark(ok: bool) -> str:
    return "" if ok else " ✗"


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table; ours is bold and its misses are marked ✗."""
    lines = [
        "| plan | jobs | strategy | limiter | 429s | requests / job | detection p50 | "
        "detection p99 | makespan | bound | makespan / bound | wall |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours = row.name == OURS
        name = f"**{row.name}**" if ours else row.name
        rpj = f"{row.requests_per_job:.2f}"
        ratio = f"{row.ratio:.2f}"
        r429 = str(row.rate_limited)
        if ours:
            rpj += _mark(row.requests_per_job <= TARGET_REQUESTS_PER_JOB)
            ratio += _mark(row.ratio <= TARGET_MAKESPAN_RATIO)
            r429 += _mark(row.rate_limited == 0)
        lines.append(
            f"| {row.plan} | {row.jobs:,} | {name} | {row.limiter} | {r429} | {rpj} | "
            f"{row.latency_p50:.1f} s | {row.latency_p99:.1f} s | {row.makespan:.0f} s | "
            f"{row.bound:.0f} s | {ratio} | {row.wall_seconds:.1f} s |"
        )
    return "\n".join(lines)


def limiter_legend() -> str:
    """What the limiter column means."""
    return "\n".join(f"- `{key}`: {text}" for key, text in LIMITERS.items())


def per_minute(times: Sequence[float], grid: Sequence[float], window: float = 60.0) -> list[float]:
    """Requests in the ``window`` seconds before each grid point, scaled to a minute."""
    scale = 60.0 / window
    return [
        (bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window)) * scale
        for t in grid
    ]


def plot(results: Sequence[RunResult], path: Path) -> None:
    """Requests per minute against the plan limit, and completions over time, as a PNG.

    Args:
        results: Runs of one plan and size (ours and the baselines).
        path: Where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0]
    limit_per_minute = first.requests_per_period * 60.0 / first.period
    horizon = max(r.makespan for r in results)
    step = max(1.0, horizon / 600)
    grid = [i * step for i in range(int(horizon / step) + 2)]
    figure, (paced, bursty, done) = plt.subplots(3, 1, figsize=(11, 12), sharex=True)
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    strategies = list(dict.fromkeys(r.scenario.strategy for r in results))
    colour = {name: palette[i % len(palette)] for i, name in enumerate(strategies)}
    style = {"ours": "-", "window": "-.", "aiolimiter": "--"}
    for result in results:
        name = result.scenario.strategy
        if result.scenario.limiter in ("ours", "window"):
            paced.plot(
                grid,
                per_minute(result.request_times, grid),
                color=colour[name],
                linestyle=style[result.scenario.limiter],
                linewidth=2.2 if name == OURS else 1.0,
                label=f"{result.scenario.name} [{result.scenario.limiter}]",
            )
        else:
            sent = per_minute(result.request_times, grid)
            refused = per_minute(result.refused_times, grid)
            bursty.plot(grid, sent, color=colour[name], label=f"{result.scenario.name}: sent")
            bursty.plot(grid, refused, color=colour[name], linestyle=":", label="... of which 429")
    for axes in (paced, bursty):
        axes.axhline(limit_per_minute, color="black", linestyle="--", label="plan limit")
        axes.set_ylabel("requests in the last 60 s")
        axes.legend(loc="upper right", fontsize=8)
    paced.set_title(
        f"The client's LocalRateLimiter, even and window pacing ({first.scenario.plan}, "
        f"{first.scenario.jobs:,} jobs)"
    )
    bursty.set_title("User code today: aiolimiter.AsyncLimiter(limit, 60)")
    for result in results:
        times = sorted(result.detected)
        name = result.scenario.strategy
        done.step(
            times,
            range(1, len(times) + 1),
            where="post",
            color=colour[name],
            linestyle=style[result.scenario.limiter],
            linewidth=2.2 if name == OURS else 1.0,
            label=f"{result.scenario.name} [{result.scenario.limiter}]",
        )
    done.axvline(lower_bound(first), color="black", linestyle="--", label="bound")
    done.axvline(paced_bound(first), color="grey", linestyle=":", label="paced bound")
    done.axvline(window_bound(first), color="grey", linestyle="-.", label="window bound")
    done.set_ylabel("results delivered")
    done.set_xlabel("seconds since the batch started (virtual time)")
    done.legend(loc="lower right", fontsize=8)
    done.set_title("Completions over time")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
