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

import bisect
import math
import random
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

from .._backoff import PollPolicy, backoff_delay
from .._limiting.plans import RateLimit

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


class PollPlanner:
    """Decides when the scheduler looks at each running job. No I/O; time is passed in.

    It combines the :class:`DurationModel`, how busy the quota has been lately (requests noted
    with :meth:`note_request`), and the bounds of a :class:`PollPolicy`:

    - the first look comes when the model says the job is probably done;
    - later looks follow the same model, never sooner than the policy's capped exponential
      floor (``wait_initial * wait_factor**misses``) and never more than ``wait_max`` apart;
    - a job resumed from a journal (age unknown) is looked at at once;
    - every delay is jittered by ``wait_jitter`` so jobs submitted together spread out.

    Args:
        limit: The quota the requests are paced to.
        policy: The bounds of the schedule.
        model: The duration model (learned in place).
        rng: Source of jitter.
    """

    def __init__(
        self, limit: RateLimit, policy: PollPolicy, model: DurationModel, rng: random.Random
    ) -> None:
        self.limit = limit
        self.policy = policy
        self.model = model
        self._rng = rng
        self._recent: deque[float] = deque()

    def note_request(self, now: float) -> None:
        """Count one request sent at ``now`` toward the recent utilization."""
        self._recent.append(now)
        horizon = now - self.limit.period
        while self._recent and self._recent[0] <= horizon:
            self._recent.popleft()

    def requests_since(self, since: float) -> int:
        """Requests noted after ``since`` (within the last period)."""
        return len(self._recent) - bisect.bisect_right(self._recent, since)

    def utilization(self, now: float) -> float:
        """Requests over the last quarter period, as a fraction of what the quota allows.

        A quarter period smooths out momentary queues (a burst of submissions at start is not
        saturation) while noticing within seconds when polls start competing for quota.
        """
        window = self.limit.period / 4
        return self.requests_since(now - window) / (self.limit.per_second * window)

    def delay(self, *, now: float, submitted_at: float | None, polls: int) -> float:
        """Seconds from ``now`` until the next look at a job.

        Args:
            now: The current time.
            submitted_at: When the job's task was created, None if unknown (resumed).
            polls: Looks already spent on it.
        """
        policy = self.policy
        if submitted_at is None:
            delay = 0.0 if polls == 0 else policy.wait_initial
        else:
            delay = next_poll_delay(
                now - submitted_at,
                self.model,
                success_probability=success_probability_for(self.utilization(now)),
                min_interval=0.0,
                max_interval=math.inf,
            )
            if polls > 0:
                floor = backoff_delay(
                    polls - 1,
                    wait_initial=policy.wait_initial,
                    wait_factor=policy.wait_factor,
                    wait_max=policy.wait_max,
                    wait_jitter=0.0,
                    rand=0.5,
                )
                delay = min(policy.wait_max, max(floor, delay))
        jitter = policy.wait_jitter * (2.0 * self._rng.random() - 1.0)
        return max(0.0, delay * (1.0 + jitter))
