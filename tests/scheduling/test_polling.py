"""The duration model and the poll planner, on numbers only (time is passed in)."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grok_imagine_async import PollPolicy, RateLimit
from grok_imagine_async._scheduling.breaker import Breaker
from grok_imagine_async._scheduling.polling import PollPlanner
from grok_imagine_async.abc import LimiterStatistics
from grok_imagine_async.batch import BreakerPolicy, DurationModel

SIGMA = 0.5
BATCH_QUOTA = RateLimit(200, 6.0)


@dataclass
class Job:
    """What the planner reads of a job (the scheduler's JobRecord)."""

    key: str
    submitted_at: float | None
    last_look: float
    polls: int = 0


def _planner(
    limit: RateLimit = BATCH_QUOTA,
    *,
    unfinished: int | None = None,
    model: DurationModel | None = None,
    statistics: Callable[[], LimiterStatistics] | None = None,
) -> PollPlanner:
    policy = PollPolicy(wait_initial=1.0, wait_factor=1.05, wait_max=30.0, wait_jitter=0.0)
    return PollPlanner(
        limit,
        policy,
        model or DurationModel(),
        random.Random(0),
        statistics=statistics,
        unfinished=(lambda: unfinished) if unfinished is not None else None,
    )


# -- the model -----------------------------------------------------------------------------


def test_upper_bounds_and_lower_bounds_alone_do_not_blow_the_spread_up() -> None:
    """What a saturated batch of 2-minute jobs had seen when its model once fitted sigma 1.3.

    Seven jobs found done at their first look (80-90 s: upper bounds only), fifteen found
    running (lower bounds from 50 to 270 s) and one finished between 50 and 270 s. Any spread
    fits such data about as well; the prior's must weigh enough that the 95th percentile (where
    the next first looks go) stays within a few medians, not 17 minutes out.
    """
    model = DurationModel()  # the 30 s default prior, four times too short
    for age in (86.0, 86.0, 82.0, 78.0, 78.0, 78.0, 78.0):
        model.observe(0.0, age)
    model.observe(50.0, 270.0)
    for age, jobs in ((50.0, 1), (86.0, 5), (82.0, 3), (78.0, 3), (110.0, 2), (270.0, 1)):
        for _ in range(jobs):
            model.observe_running(age)
    assert 80.0 < model.median < 200.0
    assert model.sigma < 0.95  # 1.09 when the prior's spread counted as one observation
    assert model.quantile(0.95) < 5 * model.median


def test_prior_before_any_observation() -> None:
    model = DurationModel(prior_median=30, prior_sigma=0.6)
    assert model.median == pytest.approx(30)
    assert model.cdf(30) == pytest.approx(0.5)
    assert model.count == 0 and model.censored == 0


def test_learns_the_true_distribution_from_brackets() -> None:
    rng = random.Random(1)
    model = DurationModel(prior_median=30)
    for _ in range(300):
        d = 6 * math.exp(SIGMA * rng.gauss(0, 1))
        look, previous = rng.uniform(1.0, 1.3), None  # looks on a grid that ignores d
        while look < d:
            model.observe_running(look, previous=previous)
            look, previous = look * 1.3, look
        if previous is not None:
            model.forget_running(previous)
        model.observe(previous or 0.0, look)
    assert model.count == 300 and model.censored == 0
    assert model.median == pytest.approx(6, rel=0.1)
    assert model.sigma == pytest.approx(SIGMA, abs=0.1)


def test_still_running_answers_push_the_median_up_before_any_completion() -> None:
    model = DurationModel(prior_median=30)
    previous = None
    for age in (60.0, 120.0, 240.0):
        for _ in range(3):
            model.observe_running(age, previous=previous)
        previous = age
    assert model.count == 0 and model.censored == 3  # each look replaced the one before
    assert model.median > 240
    for _ in range(3):
        model.forget_running(240.0)
    assert model.censored == 0


@given(st.floats(0.1, 1000), st.floats(0.01, 0.99))
def test_quantile_inverts_cdf(median: float, p: float) -> None:
    model = DurationModel(prior_median=median)
    assert model.cdf(model.quantile(p)) == pytest.approx(p, abs=1e-6)


# -- the planner: regimes ------------------------------------------------------------------


def test_idle_quota_polls_one_second_then_five_percent_of_the_age() -> None:
    planner = _planner(RateLimit(1000, 60.0), unfinished=1)
    assert planner.weight(0.0) == 0.0
    first = planner.next_look(Job("a", 0.0, 0.0, 0), 0.0)
    assert first == pytest.approx(1.0)
    at_100 = planner.next_look(Job("a", 0.0, 100.0, 9), 100.0)
    assert at_100 - 100.0 == pytest.approx(5.0)
    late = planner.next_look(Job("a", 0.0, 5000.0, 99), 5000.0)
    assert late - 5000.0 == pytest.approx(30.0)  # wait_max


def test_many_jobs_for_the_quota_are_saturated_and_look_at_the_95th_percentile() -> None:
    model = DurationModel(prior_median=10, prior_sigma=SIGMA)
    planner = _planner(RateLimit(200, 6.0), unfinished=400, model=model)
    for key in ("p1", "p2", "p3"):
        planner.submitted(key)  # the probes
    assert planner.weight(0.0) == 1.0
    planner.submitted("x")
    assert "x" not in planner.probes
    first = planner.next_look(Job("x", 0.0, 0.0, 0), 0.0)
    assert first == pytest.approx(model.quantile(0.95))
    probe = planner.next_look(Job("p1", 0.0, 8.0, 4), 8.0)
    assert probe == pytest.approx(16.0)  # doubling


def test_the_regime_moves_smoothly_with_the_jobs_held() -> None:
    weights = [_planner(RateLimit(1000, 60.0), unfinished=n).weight(0.0) for n in range(1, 200)]
    assert weights[0] == 0.0 and weights[-1] == 1.0
    assert weights == sorted(weights)
    assert any(0.2 < w < 0.8 for w in weights)


def test_other_traffic_on_the_limiter_leaves_less_allowance() -> None:
    granted = 0

    def statistics() -> LimiterStatistics:
        return LimiterStatistics(RateLimit(1000, 60.0), granted, 0, 0.0, 0, 0, None, 0.0)

    quiet = _planner(RateLimit(1000, 60.0), unfinished=4, statistics=statistics)
    quiet.allowance(0.0)
    granted = 200  # 200 requests in 15 s from someone else: 13.3/s of the 16.7/s
    assert quiet.allowance(15.0) < 0.25 * _planner(RateLimit(1000, 60.0), unfinished=4).allowance(
        15.0
    )


# -- the planner on virtual time: a wrong prior --------------------------------------------


def _simulate(prior: float, median: float, jobs: int = 400) -> tuple[PollPlanner, list[float]]:
    """Jobs submitted at 33/s, looked at when the planner says, in a heap of due times.

    Returns the planner and the ages at which each non-probe job was first looked at.
    """
    rng = random.Random(5)
    model = DurationModel(prior_median=prior)
    unfinished = jobs
    planner = PollPlanner(
        RateLimit(200, 6.0),
        PollPolicy(),
        model,
        random.Random(0),
        unfinished=lambda: unfinished,
    )
    durations = [median * math.exp(SIGMA * rng.gauss(0, 1)) for _ in range(jobs)]
    submitted = [i / 33.0 for i in range(jobs)]
    last = list(submitted)
    heap: list[tuple[float, int]] = []
    first_ages: list[float] = []
    looked = [False] * jobs
    clock = 0.0
    pending = list(range(jobs))
    while heap or pending:
        if pending and (not heap or submitted[pending[0]] <= heap[0][0]):
            i = pending.pop(0)
            clock = submitted[i]
            planner.submitted(str(i))
            when = planner.next_look(Job(str(i), clock, clock, 0), clock)
            heapq.heappush(heap, (when, i))
        else:
            clock, i = heapq.heappop(heap)
            done = clock - submitted[i] >= durations[i]
            if not looked[i] and str(i) not in planner.probes:
                first_ages.append(clock - submitted[i])
            looked[i] = True
            planner.looked(Job(str(i), submitted[i], last[i]), now=clock, finished=done)
            if done:
                unfinished -= 1
            else:
                last[i] = clock
                when = planner.next_look(Job(str(i), submitted[i], clock, 1), clock)
                heapq.heappush(heap, (when, i))
            if planner.replan_needed(clock):
                heap = [
                    (
                        planner.next_look(Job(str(j), submitted[j], last[j], 1), clock),
                        j,
                    )
                    for _, j in heap
                ]
                heapq.heapify(heap)
    return planner, first_ages


@pytest.mark.parametrize(("prior", "median"), [(30.0, 3.0), (30.0, 300.0)])
def test_a_prior_ten_times_wrong_is_forgotten_within_a_few_completions(
    prior: float, median: float
) -> None:
    planner, first_ages = _simulate(prior, median)
    assert planner.model.median == pytest.approx(median, rel=0.25)
    # Queued first looks were moved as the model learned: most of them land near the true
    # 95th percentile (2.3 x the median for sigma 0.5), not at the prior's.
    near = [age for age in first_ages if 1.2 * median < age < 4.0 * median]
    assert len(near) > 0.8 * len(first_ages)


def test_queued_looks_move_when_the_model_changes() -> None:
    model = DurationModel(prior_median=30.0)
    planner = _planner(RateLimit(200, 6.0), unfinished=400, model=model)
    for key in ("p1", "p2", "p3"):
        planner.submitted(key)
    planner.replan_needed(0.0)  # the regime: saturated from the start
    assert not planner.replan_needed(0.0)
    before = planner.next_look(Job("q", 0.0, 0.0, 0), 0.0)
    for probe in ("p1", "p2", "p3", "p4"):  # four probes done within (2, 4] s
        planner.looked(Job(probe, 0.0, 0.0), now=2.0, finished=False)
        planner.looked(Job(probe, 0.0, 2.0), now=4.0, finished=True)
    assert planner.replan_needed(4.0)
    assert not planner.replan_needed(4.0)  # once per change
    after = planner.next_look(Job("q", 0.0, 0.0, 0), 4.0)
    assert after < before / 5


def test_spare_quota_is_the_quota_less_what_is_sent_queued_and_planned() -> None:
    """Issue 25: 8 jobs on 100 requests a minute are saturated by a per-job share (1.33 / 8 <
    0.2 polls a second each), yet the quota has room: the room is counted, not shared out."""
    planner = _planner(RateLimit(100, 60.0), unfinished=8)
    for k in range(8):
        planner.submitted(f"j{k}")
    assert planner.weight(0.0) == 1.0  # saturated by the share per job

    def nothing(_until: float) -> int:
        return 0

    assert planner.has_room(0.0, chance=0.1, planned=nothing)
    assert not planner.has_room(
        0.1, chance=0.1, planned=nothing
    )  # paced: 20 a window, 0.75 s apart
    assert planner.has_room(0.75, chance=0.1, planned=nothing)
    assert not planner.has_room(2.0, chance=0.1, planned=lambda _until: 20)  # planned looks fill it
    assert planner.has_room(
        2.0, chance=0.99, planned=lambda _until: 20
    )  # a likely look replaces one
    for k in range(19):  # 19 requests in the last 15 s, and one planned: full
        planner.note_request(1.0 + k * 0.01)
    assert not planner.has_room(2.0, chance=0.1, planned=lambda _until: 1)
    assert planner.has_room(2.0, chance=0.1, planned=nothing)
    queued = _planner(RateLimit(100, 60.0), unfinished=30)  # 22 submissions still to send
    for k in range(8):
        queued.submitted(f"j{k}")
    assert not queued.has_room(0.0, chance=0.1, planned=nothing)


def test_spare_quota_goes_to_due_jobs_likely_done() -> None:
    model = DurationModel(prior_median=30.0, prior_sigma=SIGMA)
    planner = _planner(RateLimit(100, 60.0), unfinished=8, model=model)
    for k in range(8):
        planner.submitted(f"j{k}")
    planner.replan_needed(0.0)  # planned as saturated

    def chance(now: float, last_look: float) -> float:
        return planner.early_chance(Job("j0", 0.0, last_look), now)

    assert chance(30.0, 28.0) > chance(30.0, 28.5) > 0.0  # due on the idle schedule (1.4 s)
    assert chance(30.0, 29.5) == 0.0  # not due yet
    assert chance(3.0, 2.0) == 0.0  # due, but a 3 s old job of 30 s is not worth a look
    for k in range(4):  # confident: a look very likely to succeed is taken before it is due
        planner.looked(Job(f"d{k}", 0.0, 29.0), now=31.0, finished=True)
    late = model.quantile(0.999)
    assert chance(late, late - 0.1) == 0.0 < chance(late, 0.0)


def test_only_a_batch_ending_takes_small_steps_through_the_tail() -> None:
    left = 400

    def planner_with(model: DurationModel) -> PollPlanner:
        return PollPlanner(
            BATCH_QUOTA,
            PollPolicy(wait_jitter=0.0),
            model,
            random.Random(0),
            unfinished=lambda: left,
        )

    model = DurationModel(prior_median=10.0, prior_sigma=SIGMA)
    planner = planner_with(model)
    for key in ("p1", "p2", "p3", "p4"):  # four done: no probes any more
        planner.looked(Job(key, 0.0, 9.0), now=10.0, finished=True)
    age = model.quantile(0.97)  # found running in the tail
    planner.weight(age)
    busy = planner.next_look(Job("t", 0.0, age, 1), age) - age
    for k in range(397):  # most of the batch just finished: the quota is still saturated
        planner.looked(Job(f"j{k}", 0.0, 0.0), now=age, finished=True)
    left = 3
    assert planner.weight(age) == 1.0
    ending = planner.next_look(Job("t", 0.0, age, 1), age) - age
    assert ending == pytest.approx(0.08 * age)
    assert busy > 2 * ending  # the conditional step: p = 0.9 of the rest


# -- canaries ------------------------------------------------------------------------------


def test_a_post_leaving_as_canary_gets_one_early_urgent_look() -> None:
    planner = _planner()
    breaker = Breaker(BreakerPolicy(warmup=None))  # past the warm-up: canaries are chosen
    assert not planner.leaving("first", 100.0, breaker)  # the first POST out is a canary
    planner.submitted("first")
    assert planner.is_urgent("first")
    look = planner.next_look(Job("first", 100.0, 100.0, 0), 100.0)
    assert look == pytest.approx(100.0 + planner.canary_age)
    # The next POST, a moment later, is not one: its look is planned as any other's.
    assert not planner.leaving("second", 101.0, breaker)
    planner.submitted("second")
    assert not planner.is_urgent("second")


def test_a_canary_is_chosen_as_its_post_leaves_not_as_it_starts_waiting() -> None:
    # Chosen when its POST started waiting, a canary waited behind every POST queued before
    # it: on free, a minute, while they were paid in an outage that no look could show.
    planner = _planner(RateLimit(100, 60.0))
    breaker = Breaker(BreakerPolicy(warmup=None))
    for key in ("a", "b", "c"):  # three POSTs leave a second apart: the first is the canary
        assert not planner.leaving(key, 100.0 + ord(key) - ord("a"), breaker)
        planner.submitted(key)
    assert [k for k in "abc" if planner.is_urgent(k)] == ["a"]
    assert not planner.leaving("a", 103.0, breaker)  # the canary's own retry: still it


def test_a_burst_waits_for_its_canary_look_and_goes_once_it_is_seen_running() -> None:
    planner = _planner(RateLimit(10, 60.0))  # a canary share's gap of 20 minutes
    breaker = Breaker(BreakerPolicy(warmup=None))
    assert not planner.leaving("first", 100.0, breaker)  # the first canary
    planner.submitted("first")
    planner.looked(Job("first", 100.0, 100.0), now=103.0, finished=False)
    # A window opens 20 s later: its permits come at once. The first POST goes unexamined,
    # the second is the canary, the rest are held (their permits given back).
    assert not planner.leaving("p1", 120.0, breaker)
    assert not planner.leaving("p2", 120.0, breaker)
    planner.submitted("p1")
    planner.submitted("p2")
    assert not planner.is_urgent("p1")
    assert planner.is_urgent("p2")
    assert planner.leaving("p3", 120.0, breaker)
    assert planner.holding(120.0) == pytest.approx(120.0 + 3 * planner.canary_age)
    assert not planner.cap_holding  # a burst's hold, not max_at_risk's
    assert planner.leaving("p4", 121.0, breaker)  # held, even at a trickle
    # Its look sees it running: the burst goes, vouched for.
    planner.looked(Job("p2", 120.0, 120.0), now=123.0, finished=False)
    assert planner.holding(123.0) is None
    assert not planner.leaving("p3", 123.0, breaker)
    assert not planner.leaving("p4", 123.0, breaker)


def test_a_task_seen_healthy_elsewhere_vouches_for_the_burst_after_it() -> None:
    # The pause's probe, or the task that ended the warm-up: the burst that follows goes at
    # once, with a canary in it; six seconds on, a burst waits for its own canary again.
    planner = _planner(RateLimit(10, 60.0))
    breaker = Breaker(BreakerPolicy(warmup=None))
    planner.vouch(100.0)
    assert not planner.leaving("a", 104.0, breaker)
    assert not planner.leaving("b", 104.0, breaker)
    assert not planner.leaving("c", 104.0, breaker)
    planner.looked(Job("a", 104.0, 104.0), now=107.0, finished=False)
    assert not planner.leaving("d", 120.0, breaker)
    assert not planner.leaving("e", 120.0, breaker)  # the canary
    assert planner.leaving("f", 120.0, breaker)


def test_a_big_burst_is_vouched_for_only_by_a_canary_seen_healthy_just_now() -> None:
    # A canary that left 5 s ago and was seen running 2 s ago vouches for a small burst; a
    # burst of hundreds would all be paid if an outage began in those 5 s: it waits.
    for waiting, held in ((5, False), (400, True)):
        stats = LimiterStatistics(RateLimit(10, 60.0), 0, waiting, 0.0, 0, 0, None, 0.0)

        def statistics(stats: LimiterStatistics = stats) -> LimiterStatistics:
            return stats

        planner = _planner(RateLimit(10, 60.0), statistics=statistics)
        breaker = Breaker(BreakerPolicy(warmup=None))
        assert not planner.leaving("c", 100.0, breaker)
        planner.submitted("c")
        planner.looked(Job("c", 100.0, 100.0), now=103.0, finished=False)
        assert not planner.leaving("a", 105.0, breaker)
        assert not planner.leaving("b", 105.0, breaker)
        assert planner.leaving("x", 105.0, breaker) is held


def test_a_failed_canary_lets_out_one_more_canary_at_a_time() -> None:
    planner = _planner(RateLimit(10, 60.0))
    breaker = Breaker(BreakerPolicy(warmup=None))
    assert not planner.leaving("c1", 100.0, breaker)
    planner.submitted("c1")
    planner.looked(
        Job("c1", 100.0, 100.0), now=103.0, finished=True, completed=False
    )  # failed as an outage's tasks do
    assert not planner.leaving("c2", 104.0, breaker)  # the next POST out: the next canary
    planner.submitted("c2")
    assert planner.is_urgent("c2")
    assert planner.leaving("x", 104.5, breaker)  # the others wait for its look
    # A canary whose look never comes holds nothing back for long.
    assert planner.holding(104.5 + 3 * planner.canary_age) is None
    assert not planner.leaving("x", 104.0 + 3 * planner.canary_age, breaker)


def test_max_at_risk_holds_posts_past_the_newest_seen_healthy_until_a_canary_vouches() -> None:
    # POSTs at a trickle (no burst): by default they all leave; capped at 6, the seventh past
    # the newest task seen healthy waits for the look of the canary among them.
    planner = _planner()
    breaker = Breaker(BreakerPolicy(warmup=None, max_at_risk=6))
    for n in range(6):
        assert not planner.leaving(f"p{n}", 100.0 + n, breaker)
        planner.submitted(f"p{n}")
    assert [n for n in range(6) if planner.is_urgent(f"p{n}")] == [0]
    assert not planner.cap_holding
    assert planner.leaving("p6", 106.0, breaker)  # six at risk, the canary out: held
    assert planner.holding(106.0) is not None
    assert planner.cap_holding  # what statistics().at_risk_held says
    # p0's look sees it running: the five after it are at risk, one more may go, and goes as
    # the next canary (a third of the cap at risk with none out); the one after waits again.
    planner.looked(Job("p0", 100.0, 100.0), now=106.5, finished=False)
    assert planner.holding(106.5) is None and not planner.cap_holding
    assert not planner.leaving("p6", 106.5, breaker)
    planner.submitted("p6")
    assert planner.is_urgent("p6")
    assert planner.leaving("p7", 107.0, breaker)
    # Without the cap, the same trickle all leaves.
    planner = _planner()
    breaker = Breaker(BreakerPolicy(warmup=None))
    assert not any(planner.leaving(f"p{n}", 100.0 + n, breaker) for n in range(8))


def test_no_canary_nor_hold_without_a_breaker_or_during_the_warm_up() -> None:
    for breaker in (Breaker(None), Breaker(BreakerPolicy())):  # off; warming up
        planner = _planner()
        for key in ("k", "l", "m"):  # a burst
            assert not planner.leaving(key, 100.0, breaker)
            planner.submitted(key)
            assert not planner.is_urgent(key)
