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
    """The delay before try number ``attempt`` (0-based), capped, with proportional jitter.

    ``delay = min(wait_max, wait_initial * wait_factor**attempt)``, then scaled by a factor drawn
    uniformly from ``[1 - wait_jitter, 1 + wait_jitter]`` using ``rand`` in ``[0, 1)``, and
    capped again. Pure: pass ``random.random()`` as ``rand`` in real use.

    Example:
        >>> backoff_delay(3, wait_initial=1, wait_factor=2, wait_max=5, wait_jitter=0, rand=0.5)
        5.0
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    try:
        base = wait_initial * wait_factor**attempt
    except OverflowError:
        base = wait_max
    base = min(wait_max, base)
    jittered = base * (1.0 + wait_jitter * (2.0 * rand - 1.0))
    return float(max(0.0, min(wait_max, jittered)))


def _check(name: str, value: float, *, allow_zero: bool = True) -> None:
    if value < 0 or (not allow_zero and value == 0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


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
        _check("wait_initial", self.wait_initial)
        _check("wait_factor", self.wait_factor, allow_zero=False)
        _check("wait_max", self.wait_max)
        if not 0 <= self.wait_jitter <= 1:
            raise ValueError(f"wait_jitter must be within [0, 1], got {self.wait_jitter!r}")

    def delay(
        self, attempt: int, *, hint: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry ``attempt`` (0-based); a server hint wins if longer."""
        rand = (rng or random).random()
        computed = backoff_delay(
            attempt,
            wait_initial=self.wait_initial,
            wait_factor=self.wait_factor,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
            rand=rand,
        )
        return max(computed, hint) if hint is not None else computed


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """How :meth:`AsyncGrokImagine.wait` spaces its status polls.

    The first poll of :meth:`~AsyncGrokImagine.generate_and_wait` comes ``wait_initial``
    seconds after the submission; after a poll at ``t`` seconds the next one waits
    ``max(wait_initial, (wait_factor - 1) x t)``, at most ``wait_max``, jittered by
    ``wait_jitter`` (see :meth:`gap`). The delay is thus proportional to the time already
    waited, and grows by ``wait_factor`` per poll once past ``wait_initial``: with the defaults
    (1 s, x1.05, 30 s) a job is noticed within about 5 % of its duration (at most 1 s for jobs
    under 20 s, 1.5 s for a 30 s one), never more than one poll a second. That suits a quota
    with room to spare; the scheduler behind ``generate_many`` uses this schedule while the
    quota is idle and spends fewer polls as it fills.

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
        _check("wait_initial", self.wait_initial)
        _check("wait_factor", self.wait_factor, allow_zero=False)
        _check("wait_max", self.wait_max)
        if not 0 <= self.wait_jitter <= 1:
            raise ValueError(f"wait_jitter must be within [0, 1], got {self.wait_jitter!r}")

    def gap(self, elapsed: float, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after a poll made ``elapsed`` seconds into the wait.

        Example:
            >>> PollPolicy(wait_jitter=0).gap(100.0)
            5.0
        """
        base = min(max(self.wait_initial, (self.wait_factor - 1.0) * elapsed), self.wait_max)
        rand = (rng or random).random()
        return max(0.0, base * (1.0 + self.wait_jitter * (2.0 * rand - 1.0)))

    def delay(self, poll: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before poll number ``poll`` (0-based), growing by ``wait_factor``."""
        return backoff_delay(
            poll,
            wait_initial=self.wait_initial,
            wait_factor=self.wait_factor,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
            rand=(rng or random).random(),
        )
