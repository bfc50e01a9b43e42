"""The limiter's arithmetic, called directly: pace, reactions to headers, holds, grant history."""

from __future__ import annotations

import math
from typing import Any

import pytest

from grok_imagine_async._limiting.pacing import (
    GrantHistory,
    LatencySpread,
    Reaction,
    Slowdown,
    WindowLog,
    catch_up,
    hold_until,
    jitter_tolerance,
    paced_rate,
    react,
    window_stretch,
)
from grok_imagine_async._limiting.plans import RateLimit

LIMIT = RateLimit(100, 10.0)
RATE = paced_rate(LIMIT, 0.01)


def reaction(**overrides: Any) -> Reaction:
    """``react`` for a 100/10 s quota where the observed request is our only one so far."""
    args: dict[str, Any] = {
        "limit": LIMIT,
        "rate": RATE,
        "rate_limited": False,
        "remaining": None,
        "reset_after": None,
        "retry_after": None,
        "own_in_window": 1,
        "sent_since": 0,
        "tolerance": jitter_tolerance(LIMIT, 0.01),
        "margin": jitter_tolerance(LIMIT, 0.01),
        "default_pause": 10.0,
    }
    args.update(overrides)
    return react(**args)


# -- pace -------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [RateLimit(100, 60.0), RateLimit(1000, 6.0), RateLimit(1, 1.0)])
@pytest.mark.parametrize("headroom", [0.001, 0.01, 0.2])
def test_the_bucket_bound_stays_under_the_quota_over_a_stretched_window(
    limit: RateLimit, headroom: float
) -> None:
    rate = paced_rate(limit, headroom)
    capacity = 1 + catch_up(limit, headroom)
    stretched = limit.period * (1 + headroom)
    # A bucket of capacity c grants at most c + rate * L in a closed interval of length L.
    assert capacity + rate * stretched == pytest.approx(limit.requests + 1)
    assert math.floor(capacity + rate * limit.period) <= limit.requests


def test_default_pace_is_98_percent_of_every_plan() -> None:
    for requests in (100, 1000, 5000):
        limit = RateLimit(requests, 60.0)
        assert paced_rate(limit, 0.01) * limit.period / requests == pytest.approx(0.99 / 1.01)


def test_catch_up_is_the_headroom_share_of_the_quota() -> None:
    assert catch_up(RateLimit(1000, 6.0), 0.01) == pytest.approx(10.0)
    # About headroom * period seconds of lateness, whatever the quota.
    for limit in (RateLimit(1000, 6.0), RateLimit(100, 60.0)):
        seconds = catch_up(limit, 0.01) / paced_rate(limit, 0.01)
        assert seconds == pytest.approx(0.01 * limit.period, rel=0.05)


def test_jitter_tolerance_grows_with_the_quota() -> None:
    assert jitter_tolerance(RateLimit(100, 60.0), 0.01) == 3
    assert jitter_tolerance(RateLimit(5000, 60.0), 0.01) == 52


def test_jitter_tolerance_grows_when_answers_take_unevenly_long() -> None:
    limit = RateLimit(1000, 6.0)  # 166.7 requests a second
    assert jitter_tolerance(limit, 0.01, spread=0.01) == 12  # the headroom's 60 ms rules
    assert jitter_tolerance(limit, 0.01, spread=0.1) == 36  # 2 x 100 ms


def test_uneven_latency_stretches_the_window_beyond_the_headroom() -> None:
    limit = RateLimit(1000, 6.0)
    assert paced_rate(limit, 0.01, spread=0.05) == paced_rate(limit, 0.01)
    assert paced_rate(limit, 0.01, spread=2.0) == pytest.approx(990 / 8.0)


def test_window_stretch_rounds_the_spread_up_to_steps_within_one_period() -> None:
    limit = RateLimit(1000, 6.0)  # a 60 ms margin, steps of 15 ms beyond it
    assert window_stretch(limit, 0.01, 0.0) == pytest.approx(0.06)
    assert window_stretch(limit, 0.01, 0.06) == pytest.approx(0.06)
    assert window_stretch(limit, 0.01, 0.07) == pytest.approx(0.075)
    assert window_stretch(limit, 0.01, 100.0) == pytest.approx(6.0)


def test_latency_spread_rises_with_uneven_answers_and_fades_with_even_ones() -> None:
    latency = LatencySpread()
    latency.add(2.0)  # one answer says nothing about spread, however slow
    assert latency.spread == 0.0
    for value in (0.1, 0.9) * 10:  # queueing: 0.8 s apart, again and again
        latency.add(value)
    assert latency.spread > 1.5
    for _ in range(30):
        latency.add(0.5)
    assert latency.spread < 0.05


def test_one_slow_answer_among_fast_ones_fades_quickly() -> None:
    latency = LatencySpread()
    for _ in range(20):
        latency.add(0.05)
    latency.add(5.0)
    assert latency.spread == pytest.approx(4.95)
    for _ in range(40):  # 2.4 s of answers at 1000 a minute
        latency.add(0.05)
    assert latency.spread < 0.1


# -- 429 ----------------------------------------------------------------------------------------


def test_429_pauses_for_retry_after_before_reset() -> None:
    got = reaction(rate_limited=True, retry_after=4.0, reset_after=7.0, remaining=0)
    assert got == Reaction(pause=4.0)


def test_429_without_retry_after_pauses_until_the_reset() -> None:
    assert reaction(rate_limited=True, reset_after=7.0) == Reaction(pause=7.0)


def test_429_with_no_time_at_all_pauses_the_default() -> None:
    assert reaction(rate_limited=True, default_pause=3.0) == Reaction(pause=3.0)


def test_429_pause_is_at_least_one_paced_interval() -> None:
    got = reaction(rate_limited=True, retry_after=0.0)
    assert got.pause == pytest.approx(1 / RATE)


@pytest.mark.parametrize("hint", [3600.0, 1e9])
def test_waits_longer_than_a_window_are_clock_skew_and_clamped(hint: float) -> None:
    assert reaction(rate_limited=True, reset_after=hint) == Reaction(pause=LIMIT.period)
    assert reaction(remaining=0, reset_after=hint).pause == LIMIT.period


# -- Remaining ----------------------------------------------------------------------------------


def test_no_headers_no_reaction() -> None:
    assert reaction() == Reaction()


def test_remaining_explained_by_our_own_requests_changes_nothing() -> None:
    # 60 of ours in the window: 40 remain, minus what jitter can shift (3).
    for remaining in (40, 37):
        assert reaction(remaining=remaining, own_in_window=60, reset_after=5.0) == Reaction()
    assert reaction(remaining=36, own_in_window=60, reset_after=5.0) != Reaction()


def test_an_exactly_full_window_of_our_own_is_not_a_reason_to_pause() -> None:
    assert reaction(remaining=0, own_in_window=100, reset_after=5.0) == Reaction()


def share_of(others: int) -> Slowdown:
    """The slowdown that keeps us to what ``others`` requests per window leave us."""
    share = max(1, LIMIT.requests - others - jitter_tolerance(LIMIT, 0.01))
    return Slowdown(spacing=LIMIT.requests / (RATE * share), lasting=LIMIT.period)


def test_remaining_zero_from_someone_else_pauses_until_the_reset() -> None:
    got = reaction(remaining=0, reset_after=2.5)
    assert got == Reaction(pause=2.5, slowdowns=(share_of(99),))
    assert got.slowdowns[0].spacing == pytest.approx(LIMIT.requests / RATE)  # one per window


def test_remaining_zero_with_no_reset_pauses_the_default() -> None:
    assert reaction(remaining=0, default_pause=4.0).pause == 4.0


def test_fewer_remaining_spreads_them_until_the_reset_and_keeps_to_our_share() -> None:
    got = reaction(remaining=10, reset_after=5.0)
    assert got == Reaction(slowdowns=(share_of(89), Slowdown(spacing=0.5, lasting=5.0)))


def test_our_share_is_what_the_others_leave() -> None:
    # 40 of ours, 30 of someone else's in the window: we keep to 100 - 30 - 3 = 67 a window.
    got = reaction(remaining=30, own_in_window=40, reset_after=0.1)
    assert got == Reaction(slowdowns=(share_of(30),))
    assert got.slowdowns[0].spacing == pytest.approx(LIMIT.requests / (RATE * 67))


def test_requests_sent_after_the_observed_one_come_out_of_remaining() -> None:
    assert reaction(remaining=10, reset_after=5.0, sent_since=6) == Reaction(
        slowdowns=(share_of(89), Slowdown(spacing=5.0 / 4, lasting=5.0))
    )
    assert reaction(remaining=10, reset_after=5.0, sent_since=10) == Reaction(
        pause=5.0, slowdowns=(share_of(89),)
    )


def test_enough_remaining_for_our_pace_until_the_reset_needs_no_spreading() -> None:
    # Our pace sends floor(1.0 * RATE) + 1 = 10 requests in the second before the reset.
    assert reaction(remaining=10, reset_after=1.0) == Reaction(slowdowns=(share_of(89),))
    assert reaction(remaining=9, reset_after=1.0) == Reaction(
        slowdowns=(share_of(90), Slowdown(spacing=1.0 / 9, lasting=1.0))
    )


def test_fewer_remaining_without_a_reset_spreads_over_one_period() -> None:
    assert reaction(remaining=20) == Reaction(
        slowdowns=(share_of(79), Slowdown(spacing=0.5, lasting=10.0))
    )


def test_a_stale_answer_can_pause_but_not_slow_down() -> None:
    assert reaction(remaining=0, reset_after=2.0, own_in_window=None) == Reaction(pause=2.0)
    assert reaction(remaining=5, reset_after=2.0, own_in_window=None) == Reaction()


# -- holds --------------------------------------------------------------------------------------


def test_hold_is_the_pause_when_there_is_no_slowdown() -> None:
    assert hold_until(paused_until=5.0, last_grant=4.0, slowdowns=()) == 5.0


def test_hold_spaces_grants_until_each_slowdown_ends_and_the_strictest_wins() -> None:
    assert hold_until(paused_until=0.0, last_grant=1.0, slowdowns=[(0.5, 3.0)]) == 1.5
    assert hold_until(paused_until=0.0, last_grant=2.8, slowdowns=[(0.5, 3.0)]) == 3.0
    assert hold_until(paused_until=4.0, last_grant=1.0, slowdowns=[(0.5, 3.0)]) == 4.0
    both = [(0.5, 3.0), (2.0, 10.0)]
    assert hold_until(paused_until=0.0, last_grant=1.0, slowdowns=both) == 3.0


# -- history ------------------------------------------------------------------------------------


def test_history_counts_grants_in_the_window_ending_with_a_serial() -> None:
    history = GrantHistory(keep=100.0)
    assert history.last_serial == 0
    serials = [history.add(t) for t in (0.0, 1.0, 2.0, 3.0, 3.5)]
    assert serials == [1, 2, 3, 4, 5]
    assert history.count_in_window(5, period=2.0) == 3  # 2.0, 3.0, 3.5 (2.0 is inside (1.5, 3.5])
    assert history.count_in_window(4, period=2.0) == 2  # later grants do not count: 2.0, 3.0
    assert history.count_in_window(1, period=2.0) == 1
    assert history.count_in_window(0, period=2.0) is None
    assert history.count_in_window(6, period=2.0) is None


def test_history_forgets_old_grants_and_says_when_it_cannot_tell() -> None:
    history = GrantHistory(keep=10.0)
    for t in range(3000):  # one grant a second: enough to compact the list
        history.add(float(t))
    assert history.last_serial == 3000
    assert history.count_in_window(3000, period=5.0) == 5
    assert history.count_in_window(2995, period=5.0) == 5
    assert history.count_in_window(2992, period=5.0) is None  # its window reaches past memory
    assert history.count_in_window(10, period=5.0) is None


def test_window_log_frees_a_place_a_window_after_its_answer() -> None:
    log = WindowLog(2, window=10.0, unanswered=5.0)
    assert log.opens_at(now=0.0) == -math.inf
    log.grant(1, now=0.0)
    assert log.opens_at(now=0.0) == -math.inf  # one place left
    log.grant(2, now=1.0)
    assert log.opens_at(now=1.0) == 15.0  # no answers yet: the first is held 5 + 10 s
    assert log.answered(1, now=2.0)  # answered: held until 12 instead
    assert log.opens_at(now=2.0) == 12.0
    assert log.opens_at(now=12.0) == -math.inf  # expired
    assert not log.answered(1, now=13.0)  # already free: nothing changes


def test_window_log_extends_the_hold_of_a_late_answer() -> None:
    log = WindowLog(1, window=10.0, unanswered=5.0)
    log.grant(1, now=0.0)
    # Answered at 14 s, while still held (until 15 s): it may have arrived as late as 14 s.
    assert not log.answered(1, now=14.0)
    assert log.opens_at(now=14.0) == 24.0
