"""When to poll a running task: a learned duration model and a quota-aware schedule. Pure.

Durations of generations are modelled as lognormal (typical 10-60 s, a long right tail). The
model starts from a prior (median 30 s) and learns from each finished job in the run. The next
poll of a job is placed where the job has a chosen probability ``p`` of being done, *given that
it was still running at the last look*:

    F(t_next) = F(t_last) + p * (1 - F(t_last))

so every poll, first or later, succeeds with about the same probability ``p``. A high ``p``
(quota scarce) spends about ``1/p`` polls per job; a low ``p`` (quota idle) polls earlier and
detects completions sooner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_STANDARD = NormalDist()


@dataclass(slots=True)
class DurationModel:
    """Online lognormal estimate of how long generations take.

    Each observation is an interval (the job finished after ``lower`` and by ``upper``
    seconds), because polling only brackets the true completion time.

    Args:
        prior_median: Median duration assumed before any job finished.
        prior_sigma: Spread (log-space standard deviation) assumed before any job finished.
        prior_weight: How many observations the prior is worth.
    """

    prior_median: float = 30.0
    prior_sigma: float = 0.6
    prior_weight: float = 8.0
    count: int = 0
    _mean: float = 0.0
    _m2: float = 0.0

    def observe(self, lower: float, upper: float) -> None:
        """Learn from a job known to have finished within ``(lower, upper]`` seconds."""
        upper = max(upper, 1e-3)
        lower = min(max(lower, 0.0), upper)
        # The true duration lies somewhere in the bracket; take the current model's median
        # *within* the bracket (one EM-like step), which does not drag the estimate down the
        # way a midpoint does when a job is found done at its first poll (lower == 0).
        f_low, f_high = self.cdf(lower), self.cdf(upper)
        if f_high - f_low > 1e-9:
            point = self.quantile((f_low + f_high) / 2)
        else:
            point = math.sqrt(lower * upper) if lower > 0 else upper
        point = min(max(point, lower), upper)
        x = math.log(max(point, 1e-3))
        self.count += 1
        delta = x - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (x - self._mean)

    @property
    def mu(self) -> float:
        """Log-space mean, the prior blended with the observations."""
        w, n = self.prior_weight, self.count
        return (w * math.log(self.prior_median) + n * self._mean) / (w + n)

    @property
    def sigma(self) -> float:
        """Log-space standard deviation, the prior blended with the observations."""
        w, n = self.prior_weight, self.count
        mu0 = math.log(self.prior_median)
        pooled = w * self.prior_sigma**2 + self._m2
        if n:
            pooled += w * n / (w + n) * (self._mean - mu0) ** 2
        return max(0.05, math.sqrt(pooled / (w + n)))

    @property
    def median(self) -> float:
        """The estimated median duration in seconds."""
        return math.exp(self.mu)

    @property
    def mean(self) -> float:
        """The estimated mean duration in seconds."""
        return math.exp(self.mu + self.sigma**2 / 2)

    def cdf(self, seconds: float) -> float:
        """Probability that a job takes at most ``seconds``."""
        if seconds <= 0:
            return 0.0
        return _STANDARD.cdf((math.log(seconds) - self.mu) / self.sigma)

    def quantile(self, probability: float) -> float:
        """The duration that a fraction ``probability`` of jobs do not exceed."""
        p = min(max(probability, 1e-9), 1 - 1e-9)
        return math.exp(self.mu + self.sigma * _STANDARD.inv_cdf(p))


def next_poll_delay(
    elapsed: float,
    model: DurationModel,
    *,
    success_probability: float,
    min_interval: float,
    max_interval: float,
) -> float:
    """Seconds from now until the next poll of a job running for ``elapsed`` seconds.

    Args:
        elapsed: Seconds since the job was submitted (it was still running at the last look).
        model: The duration model.
        success_probability: Wanted probability that this poll finds the job done.
        min_interval: Never poll sooner than this after the last look.
        max_interval: Never wait longer than this.

    Example:
        >>> model = DurationModel(prior_median=30, prior_sigma=0.5)
        >>> delay = next_poll_delay(
        ...     0, model, success_probability=0.5, min_interval=1, max_interval=60
        ... )
        >>> round(delay)
        30
    """
    p = min(max(success_probability, 0.01), 0.999)
    reached = model.cdf(elapsed)
    target = reached + p * (1.0 - reached)
    delay = model.quantile(target) - elapsed
    return float(min(max(delay, min_interval), max_interval))


def success_probability_for(utilization: float, *, low: float = 0.6, high: float = 0.9) -> float:
    """How sure a poll should be of success, given how busy the quota is (0..1+).

    With spare quota (utilization at most 0.5) polls are cheap: aim low and detect completions
    early. Near saturation every wasted poll delays real work: aim high. Linear in between.
    """
    if utilization <= 0.5:
        return low
    if utilization >= 0.9:
        return high
    return low + (high - low) * (utilization - 0.5) / 0.4
