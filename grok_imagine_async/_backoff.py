"""Backoff schedules for retries and polls: value objects plus a pure delay function."""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff_delay(
    attempt: int,
    *,
    wait_initial: float,
    wait_factor: float,
    wait_max: float,
    wait_jitter: float,
    rand: float,
) -> float:
    """``min(wait_max, wait_initial * wait_factor**attempt)``, jittered by ``rand`` in ``[0, 1)``
    within ``1 +- wait_jitter``, capped again.

    Example:
        >>> backoff_delay(3, wait_initial=1, wait_factor=2, wait_max=5, wait_jitter=0, rand=0.5)
        5.0
    """
    try:
        base = min(wait_max, wait_initial * wait_factor**attempt)
    except OverflowError:
        base = wait_max
    return float(max(0.0, min(wait_max, base * (1.0 + wait_jitter * (2.0 * rand - 1.0)))))


def _check_waits(policy: RetryPolicy | PollPolicy) -> None:
    for name in ("wait_initial", "wait_factor", "wait_max"):
        value = getattr(policy, name)
        if value < 0 or (name == "wait_factor" and value == 0):
            raise ValueError(
                f"{name} must be {'> 0' if name == 'wait_factor' else '>= 0'}, got {value!r}"
            )
    if not 0 <= policy.wait_jitter <= 1:
        raise ValueError(f"wait_jitter must be within [0, 1], got {policy.wait_jitter!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How the client retries a request that failed in a retryable way.

    Args:
        attempts: Retries after the first try (0 disables retrying).
        wait_initial: Delay before the first retry, in seconds.
        wait_factor: Growth of the delay per retry.
        wait_max: Cap on any single delay.
        wait_jitter: Proportional jitter (0.25 means +-25%).
    """

    attempts: int = 3
    wait_initial: float = 0.5
    wait_factor: float = 2.0
    wait_max: float = 30.0
    wait_jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")
        _check_waits(self)

    def delay(
        self, attempt: int, *, hint: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry ``attempt`` (0-based); a server hint wins if longer."""
        computed = backoff_delay(
            attempt,
            wait_initial=self.wait_initial,
            wait_factor=self.wait_factor,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
            rand=(rng or random).random(),
        )
        return max(computed, hint) if hint is not None else computed


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
        rand = (rng or random).random()
        return max(0.0, base * (1.0 + self.wait_jitter * (2.0 * rand - 1.0)))
