"""The learned duration model and the poll schedule: pure functions."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grok_imagine_async import DurationModel, PollPolicy, RateLimit
from grok_imagine_async._scheduling.polling import (
    PollPlanner,
    next_poll_delay,
    success_probability_for,
)


def test_prior_before_any_observation() -> None:
    model = DurationModel(prior_median=30, prior_sigma=0.6)
    assert model.median == pytest.approx(30)
    assert model.sigma == pytest.approx(0.6)
    assert model.cdf(30) == pytest.approx(0.5)
    assert model.quantile(0.5) == pytest.approx(30)


def test_learns_the_true_distribution_from_brackets() -> None:
    rng = random.Random(3)
    model = DurationModel(prior_median=30, prior_sigma=0.6)
    for _ in range(2000):
        duration = 12 * math.exp(0.3 * rng.gauss(0, 1))
        look = rng.uniform(0, 4)  # found done somewhere up to 4 s after it finished
        model.observe(max(0.0, duration - 2), duration + look)
    assert model.median == pytest.approx(12 * 1.1, rel=0.15)
    assert model.sigma == pytest.approx(0.3, abs=0.1)


def test_first_poll_hits_with_the_asked_probability() -> None:
    rng = random.Random(5)
    model = DurationModel(prior_median=30, prior_sigma=0.5)
    for p in (0.5, 0.9):
        delay = next_poll_delay(0, model, success_probability=p, min_interval=0, max_interval=1e9)
        draws = [30 * math.exp(0.5 * rng.gauss(0, 1)) for _ in range(20_000)]
        hit = sum(d <= delay for d in draws) / len(draws)
        assert hit == pytest.approx(p, abs=0.02)


@given(
    elapsed=st.floats(min_value=0, max_value=600),
    p=st.floats(min_value=0.05, max_value=0.95),
    low=st.floats(min_value=0, max_value=5),
    span=st.floats(min_value=0, max_value=100),
)
def test_delay_within_bounds(elapsed: float, p: float, low: float, span: float) -> None:
    model = DurationModel()
    delay = next_poll_delay(
        elapsed, model, success_probability=p, min_interval=low, max_interval=low + span
    )
    assert low <= delay <= low + span


def test_later_polls_are_conditional_on_still_running() -> None:
    model = DurationModel(prior_median=30, prior_sigma=0.5)
    first = next_poll_delay(0, model, success_probability=0.8, min_interval=0, max_interval=1e9)
    second = next_poll_delay(
        first, model, success_probability=0.8, min_interval=0, max_interval=1e9
    )
    survived = 1 - model.cdf(first)
    done_by_second = (model.cdf(first + second) - model.cdf(first)) / survived
    assert done_by_second == pytest.approx(0.8, abs=1e-6)


def test_busier_quota_asks_for_surer_polls() -> None:
    assert success_probability_for(0.1) == 0.6
    assert success_probability_for(1.5) == 0.9
    values = [success_probability_for(u / 10) for u in range(11)]
    assert values == sorted(values)


def _planner(requests: int = 100, period: float = 60.0) -> PollPlanner:
    policy = PollPolicy(wait_initial=1.0, wait_factor=2.0, wait_max=30.0, wait_jitter=0.0)
    model = DurationModel(prior_median=30, prior_sigma=0.5)
    return PollPlanner(RateLimit(requests, period), policy, model, random.Random(0))


def test_planner_waits_longer_when_the_quota_is_busy() -> None:
    idle = _planner()
    busy = _planner()
    for i in range(30):  # 30 requests in the last 15 s: above the 25 a quarter period allows
        busy.note_request(100.0 + i * 0.5)
    assert idle.utilization(115.0) == 0.0
    assert busy.utilization(115.0) > 1.0
    first_idle = idle.delay(now=115.0, submitted_at=115.0, polls=0)
    first_busy = busy.delay(now=115.0, submitted_at=115.0, polls=0)
    assert first_idle == pytest.approx(idle.model.quantile(0.6))
    assert first_busy == pytest.approx(busy.model.quantile(0.9))


def test_planner_later_polls_respect_floor_and_cap() -> None:
    planner = _planner()
    # long overdue job: the model alone would say "look again at once"
    assert planner.delay(now=10_000.0, submitted_at=0.0, polls=3) == pytest.approx(4.0)
    assert planner.delay(now=10_000.0, submitted_at=0.0, polls=50) == pytest.approx(30.0)


def test_planner_resumed_job_is_looked_at_once_then_on_the_floor() -> None:
    planner = _planner()
    assert planner.delay(now=5.0, submitted_at=None, polls=0) == 0.0
    assert planner.delay(now=5.0, submitted_at=None, polls=1) == 1.0


def test_planner_forgets_requests_older_than_a_period() -> None:
    planner = _planner(requests=100, period=60.0)
    planner.note_request(0.0)
    planner.note_request(61.0)
    assert planner.requests_since(-1.0) == 1
