"""The pure backoff schedule and the policy value objects."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grok_imagine_async import ConfigurationError, PollPolicy, RetryPolicy


class _Fixed(random.Random):
    """A source whose every draw is ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def backoff_delay(attempt: int, *, rand: float, **waits: float) -> float:
    return RetryPolicy(**waits).delay(attempt, rng=_Fixed(rand))


def test_exponential_then_capped() -> None:
    delays = [
        backoff_delay(n, wait_initial=1, wait_factor=2, wait_max=10, wait_jitter=0, rand=0.3)
        for n in range(6)
    ]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_jitter_spans_both_sides() -> None:
    low = backoff_delay(0, wait_initial=10, wait_factor=2, wait_max=100, wait_jitter=0.2, rand=0.0)
    high = backoff_delay(
        0, wait_initial=10, wait_factor=2, wait_max=100, wait_jitter=0.2, rand=0.999999
    )
    assert low == pytest.approx(8.0)
    assert high == pytest.approx(12.0, abs=1e-4)


def test_huge_attempt_does_not_overflow() -> None:
    assert (
        backoff_delay(10_000, wait_initial=1, wait_factor=10, wait_max=30, wait_jitter=0, rand=0)
        == 30
    )


@given(
    attempt=st.integers(min_value=0, max_value=200),
    initial=st.floats(min_value=0, max_value=100),
    factor=st.floats(min_value=1, max_value=10),
    cap=st.floats(min_value=0, max_value=1000),
    jitter=st.floats(min_value=0, max_value=1),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_always_within_zero_and_cap(
    attempt: int, initial: float, factor: float, cap: float, jitter: float, rand: float
) -> None:
    delay = backoff_delay(
        attempt,
        wait_initial=initial,
        wait_factor=factor,
        wait_max=cap,
        wait_jitter=jitter,
        rand=rand,
    )
    assert 0 <= delay <= cap


def test_retry_policy_honours_a_longer_server_hint() -> None:
    policy = RetryPolicy(wait_initial=1, wait_jitter=0)
    assert policy.delay(0, hint=9.0) == 9.0
    assert policy.delay(0, hint=0.1) == 1.0
    assert policy.delay(2, rng=random.Random(1)) == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": -1},
        {"wait_initial": -1},
        {"wait_factor": 0},
        {"wait_jitter": 1.5},
        {"wait_initial": math.nan},  # a NaN passed `< 0`
        {"wait_max": math.nan},
        {"wait_factor": math.nan},
    ],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_poll_policy_defaults_and_validation() -> None:
    policy = PollPolicy(wait_jitter=0)
    # One second until 20 s in, then 5 % of the time waited, at most 30 s apart.
    assert [policy.gap(t) for t in (0.0, 10.0, 20.0, 100.0, 1000.0)] == pytest.approx(
        [1.0, 1.0, 1.0, 5.0, 30.0]
    )
    with pytest.raises(ConfigurationError, match="wait_max"):
        PollPolicy(wait_max=-1)
    with pytest.raises(TypeError):
        PollPolicy(5.0)  # type: ignore[misc]  # keyword-only
