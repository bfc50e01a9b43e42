"""The feedback interpreter, called directly: estimate and answer in, estimate out."""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import random
from typing import Any

import pytest
from fakes import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from grok_imagine_async import RateLimit
from grok_imagine_async._limiting.feedback import (
    DEFAULT_HEADROOM,
    Estimate,
    _refilled_tat,
    grant,
    read_answer,
    ready_at,
)
from grok_imagine_async._limiting.local import TimeLog

LIMIT = RateLimit(100, 10.0)  # 10 a second


def granted(estimate: Estimate, *, now: float) -> Estimate:
    """The estimate after a permit granted at ``now``, ``estimate`` unchanged."""
    after = estimate.copy()
    grant(after, now=now)
    return after


def answered(estimate: Estimate, **answer: Any) -> Estimate:
    """The estimate after ``answer`` (read_answer's arguments), ``estimate`` unchanged."""
    after = estimate.copy()
    read_answer(after, **answer)
    return after


def grant_at(estimate: Estimate, times: list[float]) -> Estimate:
    for when in times:
        assert ready_at(estimate, now=when) <= when
        estimate = granted(estimate, now=when)
    return estimate


def first_window_answer(remaining: int) -> Estimate:
    """A fresh estimate after its first permit's answer, 50 ms later, said ``remaining`` with
    our one request in the window."""
    return answered(
        granted(Estimate(LIMIT), now=0.0),
        serial=1,
        granted_at=0.0,
        now=0.05,
        status_code=200,
        remaining=remaining,
        own_in_window=1,
    )


def test_no_word_from_the_server_paces_evenly_at_the_plans_rate() -> None:
    estimate = granted(Estimate(LIMIT), now=0.0)
    assert ready_at(estimate, now=0.0) == pytest.approx(1 / estimate.plan_pace)
    assert estimate.plan_pace == pytest.approx(10 / 1.02)


def test_requests_in_flight_at_a_steady_rate_are_not_a_burst() -> None:
    # A bucket of 5 at a 250 ms round trip: 2-3 requests are on their way when an answer says
    # the bucket holds 4. Counted from the answer, that would leave no room; counted from its
    # permit's grant, the refill since pays for them.
    estimate = Estimate(LIMIT)
    interval = 1 / estimate.plan_pace
    times = [i * interval for i in range(4)]
    estimate = grant_at(estimate, times)
    estimate = answered(
        estimate,
        serial=1,
        granted_at=0.0,
        now=0.25,
        status_code=200,
        remaining=4,
        later_grants=times[1:],
    )
    assert estimate.size == 5 and not estimate.is_window
    # Steady pace goes on: the next permit is due one interval after the last.
    assert ready_at(estimate, now=0.25) <= times[-1] + interval + 1e-9


def test_a_windows_remaining_lends_its_quota_at_once() -> None:
    estimate = first_window_answer(99)
    assert estimate.is_window and estimate.places == 100
    now = 0.05
    for _ in range(90):  # a burst, less one request kept for jitter
        assert ready_at(estimate, now=now) == now
        estimate = granted(estimate, now=now)


def test_others_on_a_window_take_its_places() -> None:
    estimate = first_window_answer(59)
    assert estimate.is_window
    assert estimate.places == 100 - 40  # their 40 (more than the jitter tolerance)


def test_others_draining_a_bucket_slow_the_pace_by_their_rate() -> None:
    # A bucket of 41 refilled at 10 a second; someone else takes 3 a second of it. We send
    # one every 0.11 s and each answer says 0.33 fewer than our own requests explain.
    estimate = Estimate(LIMIT)
    level = 40.0
    now = 0.0
    for serial in range(1, 101):
        estimate = granted(estimate, now=now)
        level = min(41.0, level + 1.1) - 1.0 - 0.33
        estimate = answered(
            estimate,
            serial=serial,
            granted_at=now,
            now=now,
            status_code=200,
            remaining=int(level),
            grants_between=[now] if serial > 1 else None,
        )
        now += 0.11
    assert not estimate.is_window
    assert estimate.others == pytest.approx(3.0, abs=0.5)
    assert estimate.pace == pytest.approx(estimate.plan_pace - estimate.others)


def test_a_429_pauses_and_halves_what_is_believed() -> None:
    estimate = granted(Estimate(LIMIT), now=0.0)
    estimate = answered(
        estimate, serial=1, granted_at=0.0, now=0.1, status_code=429, retry_after=2.0
    )
    assert estimate.hold_until == pytest.approx(2.1)
    assert estimate.factor == 0.5
    assert ready_at(estimate, now=0.2) == pytest.approx(2.1)


def test_a_full_window_refills_at_its_reset() -> None:
    estimate = answered(
        first_window_answer(99),
        serial=2,
        granted_at=0.1,
        now=0.15,
        status_code=200,
        remaining=0,
        reset_after=5.0,
        own_in_window=2,
    )
    assert ready_at(estimate, now=0.2) >= 5.15


def test_an_answer_overtaken_on_its_way_cannot_raise_the_estimate() -> None:
    estimate = grant_at(Estimate(LIMIT), [0.0])
    before = answered(
        estimate,
        serial=1,
        granted_at=0.0,
        now=0.1,
        status_code=200,
        remaining=0,
    )
    later = answered(
        before,
        serial=2,
        granted_at=0.0,
        now=0.2,
        status_code=200,
        remaining=4,
        overlapped=True,
    )
    assert later.tat >= before.tat


def test_a_copy_of_an_estimate_has_every_field_and_is_left_alone_by_updates() -> None:
    # Every field away from its default, so a field the copy forgets cannot pass unseen.
    estimate = Estimate(
        RateLimit(7, 3.0), 0.1, 2.0, 9.0, 0.5, 0.25, 3.0, 4.0, 7, 1.5, 6, True, 0.1, 0.01, 2.5
    )
    assert all(getattr(estimate, f.name) != f.default for f in dataclasses.fields(Estimate))
    copy = estimate.copy()
    assert copy == estimate
    after = answered(copy, serial=8, granted_at=5.0, now=5.5, status_code=429)
    assert copy == estimate  # answered() updates a copy of its own
    assert after != estimate


def replayed(tat: float, later: list[float], emission: float) -> float:
    """The grants after an answer replayed one by one through the pacing bucket."""
    last = later[-1] if later else tat
    for index, when in enumerate(later):
        if tat >= last:
            return tat + (len(later) - index) * emission
        tat = max(tat, when) + emission
    return tat


@settings(max_examples=examples(500), deadline=None)
@given(
    start=st.sampled_from([0.0, 1e5, 1.7e9]),
    gaps=st.lists(st.floats(0.0, 3.0), max_size=60),
    lead=st.floats(-60.0, 5.0),
    remaining=st.integers(0, 5),
)
def test_grants_in_flight_replayed_at_once_give_the_replays_result(
    start: float, gaps: list[float], lead: float, remaining: int
) -> None:
    # The short path (each grant finds the bucket empty) must be the loop's result bit for bit.
    estimate = Estimate(LIMIT, size=5.0)
    emission = 1 / estimate.pace
    later = list(itertools.accumulate((start, *(gap * emission for gap in gaps))))
    arrived = start + lead * emission
    tat = arrived + (estimate.size - remaining) * emission
    expected = replayed(tat, later, emission)
    assert _refilled_tat(estimate, later, remaining, arrived, 0, estimate.pace) == expected
    # The same with the smallest gap the limiter's grant log keeps instead of a scan.
    log = TimeLog(keep=math.inf, gaps=True)
    for when in later:
        log.add(when)
    _, gap = log.later(0, set())
    assert _refilled_tat(estimate, later, remaining, arrived, 0, estimate.pace, gap) == expected


@settings(max_examples=examples(100), deadline=None)
@given(
    seed=st.integers(0, 2**32),
    count=st.sampled_from([60, 2100]),
    keep=st.floats(0.5, 30.0),
    back=st.lists(st.integers(0, 120), min_size=1, max_size=4),
)
def test_the_grant_logs_smallest_gap_is_a_scan_of_its_times(
    seed: int, count: int, keep: float, back: list[int]
) -> None:
    # Bit for bit what a scan of the times after a serial gives, after every time added: also
    # once times were forgotten, and once the log compacted (past 2,048 times).
    rng = random.Random(seed)
    gaps = [rng.choice((0.0, 0.001, rng.random(), rng.expovariate(1.0))) for _ in range(count)]
    log = TimeLog(keep=keep, gaps=True)
    for newest, when in enumerate(itertools.accumulate(gaps, initial=1.7e9), start=1):
        log.add(when)
        for serial in (newest - step for step in back):
            later, gap = log.later(serial, set())
            scan = min(map(operator.sub, later[1:], later)) if len(later) > 1 else math.inf
            assert gap == scan


def test_a_429_pauses_for_retry_after_else_the_reset_within_an_interval_and_a_period() -> None:
    def pause(retry_after: float | None, reset_after: float | None) -> float:
        estimate = Estimate(RateLimit(100, 3.0))
        read_answer(estimate, 1, 0.0, 0.0, 429, None, reset_after, retry_after)
        return estimate.hold_until

    assert pause(0.5, 2.0) == 0.5
    assert pause(None, 2.0) == 2.0
    assert pause(None, None) == 3.0
    # A skewed clock reading a Unix-time reset: never more than one period.
    assert pause(None, 3600.0) == 3.0
    # A zero hint still waits one interval (at the pace less the headroom).
    assert pause(0.0, None) == pytest.approx(0.03 * (1 + DEFAULT_HEADROOM))
