"""How long generations take: a lognormal fitted (EM, weak prior) to what polls see. Pure.

A look finding a job done brackets its duration; one finding it running is a lower bound
(censored), so long jobs are learnt before any finished. Both are binned on a log scale.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist

from .._errors import ConfigurationError

_BIN = 0.05  # log-space resolution: durations are told apart at about 5 %
_FROM_ZERO = -(10**6)  # bin key of a lower bound at 0 (found done at the first look)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MIN_SIGMA, _MAX_SIGMA = 0.05, 1.5
# The prior's spread weighs three observations: bounds fit a wide spread as well as a narrow one.
_SIGMA_WEIGHT = 3.0
_REFIT_GROWTH = 0.05  # refit once observations grew by this fraction (or by one, early on)
_STANDARD = NormalDist()


def _key(seconds: float) -> int:
    return round(math.log(max(seconds, 1e-3)) / _BIN)


def _pdf(z: float) -> float:
    return 0.0 if math.isinf(z) else _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def _upper(z: float) -> float:
    """P(Z > z) for a standard normal, accurate in the far upper tail."""
    return 0.5 * math.erfc(z / _SQRT2)


def _moments(mu: float, sigma: float, low: float, high: float) -> tuple[float, float]:
    """E[x] and E[x^2] of N(mu, sigma^2) restricted to (low, high]."""
    a, b = (low - mu) / sigma, (high - mu) / sigma
    mass = _upper(a) - _upper(b) if a > 0 else _upper(-b) - _upper(-a)
    if mass < 1e-300:  # far outside the model: the nearest edge is the best guess
        edge = low if a > 0 else high
        return edge, edge * edge
    pa, pb = _pdf(a), _pdf(b)
    ratio = (pa - pb) / mass
    spread = (0.0 if math.isinf(a) else a * pa) - (0.0 if math.isinf(b) else b * pb)
    mean = mu + sigma * ratio
    variance = max(0.0, sigma * sigma * (1.0 + spread / mass - ratio * ratio))
    return mean, variance + mean * mean


class DurationModel:
    """Online lognormal estimate of how long generations take, from brackets and lower bounds.

    Args:
        prior_median: Median duration, in seconds, assumed before anything was seen.
        prior_sigma: Log-space standard deviation assumed before anything was seen.
        prior_weight: How many observations the prior is worth.

    Attributes:
        mu: Log-space mean of the fitted lognormal.
        sigma: Log-space standard deviation of the fitted lognormal.
        count: Completions observed.
        censored: Running jobs whose latest look is held as a lower bound.

    Raises:
        ConfigurationError: If a prior is not positive.

    Example:
        >>> model = DurationModel(prior_median=30)
        >>> for _ in range(20):
        ...     model.observe(5.5, 6.5)
        >>> round(model.median)
        6
    """

    def __init__(
        self, prior_median: float = 30.0, prior_sigma: float = 0.6, prior_weight: float = 0.25
    ) -> None:
        if not (prior_median > 0 and prior_sigma > 0 and prior_weight > 0):  # NaN refused too
            raise ConfigurationError("prior_median, prior_sigma and prior_weight must be positive")
        self.prior_median, self.prior_sigma = prior_median, prior_sigma
        self.prior_weight = prior_weight
        self._done: defaultdict[tuple[int, int], int] = defaultdict(int)
        self._running: defaultdict[int, int] = defaultdict(int)
        self.count = self.censored = 0
        self.mu = math.log(prior_median)
        self.sigma = prior_sigma
        self._fitted_at = 0  # observations (both kinds) at the last fit
        self._changes = 0  # observations added or moved since the last fit

    def __repr__(self) -> str:
        return (
            f"DurationModel(median={self.median:.3g}, sigma={self.sigma:.3g}, "
            f"completed={self.count}, running={self.censored})"
        )

    def observe(self, lower: float, upper: float) -> None:
        """Learn from a job known to have finished within ``(lower, upper]`` seconds."""
        upper = max(upper, 1e-3)
        low = _FROM_ZERO if lower <= 0 else _key(min(lower, upper))
        high = max(_key(upper), low + 1) if low != _FROM_ZERO else _key(upper)
        self._done[(low, high)] += 1
        self.count += 1
        self._changed()

    def observe_running(self, age: float, *, previous: float | None = None) -> None:
        """Learn that a job still ran at ``age`` s, replacing its ``previous`` look's bound."""
        if previous is not None:
            self._drop(previous)
        self._running[_key(age)] += 1
        self.censored += 1
        self._changed()

    def forget_running(self, age: float) -> None:
        """Drop the lower bound a job left at ``age`` (it ended or went away)."""
        self._drop(age)
        self._changed()

    def _drop(self, age: float) -> None:
        key = _key(age)
        if self._running.get(key, 0) > 0:
            self._running[key] -= 1
            self.censored -= 1
            if not self._running[key]:
                del self._running[key]

    def _changed(self) -> None:
        self._changes += 1
        total = self.count + self.censored
        if self._changes >= max(1.0, _REFIT_GROWTH * self._fitted_at) or total < 8:
            self._fit()

    def _fit(self) -> None:
        mu, sigma = self.mu, self.sigma
        w0, m0, s0 = self.prior_weight, math.log(self.prior_median), self.prior_sigma
        seen = self.count + self.censored
        bounds = [  # (low, high] in log seconds, and how many jobs each holds
            (-math.inf if low == _FROM_ZERO else low * _BIN, high * _BIN, n)
            for (low, high), n in self._done.items()
        ] + [(key * _BIN, math.inf, n) for key, n in self._running.items()]
        for _ in range(30):
            first, second = w0 * m0, 0.0
            for low, high, n in bounds:
                m1, m2 = _moments(mu, sigma, low, high)
                first += n * m1
                second += n * m2
            new_mu = first / (w0 + seen)
            # The data's spread around the new mean plus the prior's spread; not the prior's
            # median, or a prior far from the truth would widen the spread.
            data_mean = (first - w0 * m0) / seen if seen else new_mu
            spread = max(second - seen * data_mean * data_mean, 0.0) + _SIGMA_WEIGHT * s0 * s0
            new_sigma = math.sqrt(spread / (seen + _SIGMA_WEIGHT))
            new_sigma = min(max(new_sigma, _MIN_SIGMA), _MAX_SIGMA)
            moved = abs(new_mu - mu) + abs(new_sigma - sigma)
            mu, sigma = new_mu, new_sigma
            if moved < 1e-4:
                break
        self.mu, self.sigma = mu, sigma
        self._fitted_at, self._changes = seen, 0

    @property
    def median(self) -> float:
        return math.exp(self.mu)

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def cdf(self, seconds: float) -> float:
        """Probability that a job takes at most ``seconds``."""
        return 1.0 - self.survival(seconds)

    def survival(self, seconds: float) -> float:
        """Probability that a job takes longer than ``seconds`` (exact far into the tail)."""
        if seconds <= 0:
            return 1.0
        return _upper((math.log(seconds) - self.mu) / self.sigma)

    def quantile(self, probability: float) -> float:
        """The duration a fraction ``probability`` of jobs do not exceed."""
        p = min(max(probability, 1e-9), 1 - 1e-9)
        return math.exp(self.mu + self.sigma * _STANDARD.inv_cdf(p))
