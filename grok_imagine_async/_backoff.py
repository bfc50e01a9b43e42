"""Backoff schedules for retries and polls, as frozen value objects."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import ConfigurationError


def _jittered(base: float, jitter: float, rng: random.Random | None) -> float:
    """``base`` times a random factor within ``1 +- jitter``."""
    return base * (1.0 + jitter * (2.0 * (rng or random).random() - 1.0))


def _check_waits(policy: RetryPolicy | PollPolicy) -> None:
    for name in ("wait_initial", "wait_factor", "wait_max"):
        value = getattr(policy, name)
        if not (value > 0 if name == "wait_factor" else value >= 0):  # NaN refused too
            raise ConfigurationError(
                f"{name} must be {'> 0' if name == 'wait_factor' else '>= 0'}, got {value!r}"
            )
    if not 0 <= policy.wait_jitter <= 1:
        raise ConfigurationError(f"wait_jitter must be within [0, 1], got {policy.wait_jitter!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How the client retries a request that failed in a retryable way.

    Args:
        attempts: Retries after the first try (0 disables retrying).
        wait_initial: Delay before the first retry, in seconds.
        wait_factor: Growth of the delay per retry.
        wait_max: Cap on any single delay.
        wait_jitter: Proportional jitter (0.25 means +-25%).

    Raises:
        ConfigurationError: On a negative value, a ``wait_factor`` of 0 or a jitter above 1.
    """

    attempts: int = 3
    wait_initial: float = 0.5
    wait_factor: float = 2.0
    wait_max: float = 30.0
    wait_jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ConfigurationError(f"attempts must be >= 0, got {self.attempts}")
        _check_waits(self)

    def delay(
        self, attempt: int, *, hint: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): ``wait_initial *
        wait_factor**attempt``, jittered, within ``[0, wait_max]``; a server hint wins if longer.

        Example:
            >>> RetryPolicy(wait_initial=1.0, wait_max=5.0, wait_jitter=0).delay(3)
            5.0
        """
        try:
            base = min(self.wait_max, self.wait_initial * self.wait_factor**attempt)
        except OverflowError:
            base = self.wait_max
        computed = max(0.0, min(self.wait_max, _jittered(base, self.wait_jitter, rng)))
        return computed if hint is None else max(computed, hint)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """How :meth:`AsyncGrokImagine.wait` spaces its status polls.

    After a poll ``t`` seconds into the wait, the next waits ``max(wait_initial,
    (wait_factor - 1) x t)``, at most ``wait_max``, jittered: with the defaults a job is
    noticed within about 5 % of its duration, at most one poll a second.

    Args:
        wait_initial: Delay before the first poll.
        wait_factor: Growth of the delay per poll.
        wait_max: Cap on the delay between two polls.
        wait_jitter: Proportional jitter (0.1 means +-10%).

    Raises:
        ConfigurationError: On a negative value, a ``wait_factor`` of 0 or a jitter above 1.
    """

    wait_initial: float = 1.0
    wait_factor: float = 1.05
    wait_max: float = 30.0
    wait_jitter: float = 0.1

    def __post_init__(self) -> None:
        _check_waits(self)

    def gap(self, elapsed: float, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after a poll made ``elapsed`` seconds into the wait.

        Example:
            >>> PollPolicy(wait_jitter=0).gap(100.0)
            5.0
        """
        base = min(max(self.wait_initial, (self.wait_factor - 1.0) * elapsed), self.wait_max)
        return max(0.0, _jittered(base, self.wait_jitter, rng))
