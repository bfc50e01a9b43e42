"""Property: whatever the callers and the server do, no window ever holds more than the quota.

Each example runs a random scenario on the virtual-time loop: callers arrive at random times
with random priorities, some give up (cancel) after a while, and random server answers (429s
with or without times, low ``Remaining``, resets) arrive in between. Grant times are exact, so
the quota is checked to the nanosecond, and again after adding random network latency of up to
``headroom * period`` to each request, which is the jitter the headroom is documented to absorb.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

import anyio
from fakes import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from grok_imagine_async import LocalRateLimiter, RateLimit
from grok_imagine_async.abc import Permit, Priority, RateLimitFeedback
from grok_imagine_async.testing import run_virtual


@dataclass(frozen=True)
class Caller:
    arrives: float
    priority: Priority
    gives_up_after: float | None
    latency: float  # fraction of the headroom's jitter budget this request travels


@dataclass(frozen=True)
class Answer:
    at: float
    status: int
    remaining: int | None
    reset_after: float | None
    retry_after: float | None
    of_latest: bool  # answer to the latest permit, or to the first one (a stale answer)


@dataclass(frozen=True)
class Scenario:
    limit: RateLimit
    headroom: float
    callers: list[Caller]
    answers: list[Answer]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    requests = draw(st.integers(min_value=1, max_value=30))
    period = draw(st.floats(min_value=0.5, max_value=20.0))
    headroom = draw(st.sampled_from([0.001, 0.01, 0.05, 0.5]))
    span = 3 * period
    times = st.floats(min_value=0.0, max_value=span)
    callers = draw(
        st.lists(
            st.builds(
                Caller,
                arrives=times,
                priority=st.sampled_from(Priority),
                gives_up_after=st.none() | st.floats(min_value=0.0, max_value=period),
                latency=st.floats(min_value=0.0, max_value=0.999),
            ),
            min_size=1,
            max_size=100,
        )
    )
    waits = st.none() | st.floats(min_value=0.0, max_value=2 * period)
    answers = draw(
        st.lists(
            st.builds(
                Answer,
                at=times,
                status=st.sampled_from([200, 200, 429]),
                remaining=st.none() | st.integers(min_value=0, max_value=requests),
                reset_after=waits,
                retry_after=waits,
                of_latest=st.booleans(),
            ),
            max_size=8,
        )
    )
    return Scenario(RateLimit(requests, period), headroom, callers, answers)


def most_in_any_window(times: list[float], length: float) -> int:
    """Most of ``times`` in any closed interval of ``length``."""
    times = sorted(times)
    return max((bisect.bisect_right(times, t + length) - i for i, t in enumerate(times)), default=0)


async def play(scenario: Scenario) -> tuple[LocalRateLimiter, dict[int, Permit], set[int], int]:
    """Run the scenario; (limiter, permits by caller, callers who gave up, 429s reported)."""
    limiter = LocalRateLimiter(scenario.limit, headroom=scenario.headroom)
    permits: dict[int, Permit] = {}
    gave_up: set[int] = set()
    issued: list[Permit] = []
    reported_429s = 0
    start = anyio.current_time()

    async def call(index: int, caller: Caller) -> None:
        await anyio.sleep_until(start + caller.arrives)
        with anyio.move_on_after(caller.gives_up_after) as scope:
            permit = await limiter.acquire(priority=caller.priority)
            permits[index] = permit
            issued.append(permit)
        if scope.cancelled_caught:
            gave_up.add(index)

    async def reply(answer: Answer) -> None:
        nonlocal reported_429s
        await anyio.sleep_until(start + answer.at)
        if issued:  # an answer needs a request
            reported_429s += answer.status == 429
            permit = max(issued, key=lambda p: p.serial) if answer.of_latest else issued[0]
            await limiter.observe(
                RateLimitFeedback(
                    permit,
                    answer.status,
                    remaining=answer.remaining,
                    reset_after=answer.reset_after,
                    retry_after=answer.retry_after,
                )
            )

    async with anyio.create_task_group() as group:
        for index, caller in enumerate(scenario.callers):
            group.start_soon(call, index, caller)
        for answer in scenario.answers:
            group.start_soon(reply, answer)
    return limiter, permits, gave_up, reported_429s


@settings(max_examples=examples(400), deadline=None)
@given(scenarios())
def test_no_window_ever_holds_more_than_the_quota(scenario: Scenario) -> None:
    limiter, permits, gave_up, reported_429s = run_virtual(play, scenario)
    limit = scenario.limit

    granted = [permit.granted_at for permit in permits.values()]
    assert most_in_any_window(granted, limit.period) <= limit.requests

    # With up to headroom * period of latency jitter, the server still never sees more.
    jitter = scenario.headroom * limit.period
    arrivals = [
        permits[i].granted_at + caller.latency * jitter
        for i, caller in enumerate(scenario.callers)
        if i in permits
    ]
    assert most_in_any_window(arrivals, limit.period) <= limit.requests

    # Everyone who did not give up was served; nobody was served twice; counters agree.
    assert set(permits) | gave_up == set(range(len(scenario.callers)))
    assert not set(permits) & gave_up
    assert len({p.serial for p in permits.values()}) == len(permits)
    by_serial = sorted(permits.values(), key=lambda p: p.serial)
    assert [p.granted_at for p in by_serial] == sorted(granted)
    stats = limiter.statistics()
    assert stats.permits_granted == len(permits)
    assert stats.waiting == 0
    assert stats.rate_limited_responses == reported_429s


@settings(max_examples=examples(100), deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=5.0), st.sampled_from(Priority)),
        min_size=2,
        max_size=40,
    )
)
def test_waiters_are_served_by_priority_then_arrival(
    arrivals: list[tuple[float, Priority]],
) -> None:
    limit = RateLimit(5, 10.0)  # a permit every 2 s: waiters pile up

    async def main() -> list[tuple[float, int, int, float]]:
        limiter = LocalRateLimiter(limit)
        start = anyio.current_time()
        served: list[tuple[float, int, int, float]] = []

        line = itertools.count()

        async def call(at: float, priority: Priority) -> None:
            await anyio.sleep_until(start + at)
            place = next(line)  # the order in which acquire() was called
            permit = await limiter.acquire(priority=priority)
            served.append((permit.granted_at - start, place, int(priority), at))

        async with anyio.create_task_group() as group:
            for at, priority in arrivals:
                group.start_soon(call, at, priority)
        return sorted(served)

    served = run_virtual(main)
    # Whenever B was served after A, B was not both waiting already and ahead of A in line.
    for position, (granted_a, place_a, priority_a, _) in enumerate(served):
        for granted_b, place_b, priority_b, arrived_b in served[position + 1 :]:
            if granted_b <= granted_a:
                continue  # granted at the same instant: their order is not observable
            b_was_waiting = arrived_b < granted_a - 1e-9  # float noise of start + at - start
            b_ahead = (priority_b, place_b) < (priority_a, place_a)
            assert not (b_was_waiting and b_ahead), (place_a, place_b)


@dataclass(frozen=True)
class Trip:
    starts: float  # when the caller asks for a permit
    answer_after: float | None  # permit to observed answer, in periods; None: no answer
    arrives_at: float  # fraction of that time (or of a period, unanswered) to reach the server


@settings(max_examples=examples(300), deadline=None)
@given(
    requests=st.integers(min_value=1, max_value=20),
    period=st.floats(min_value=0.5, max_value=10.0),
    trips=st.lists(
        st.builds(
            Trip,
            starts=st.floats(min_value=0.0, max_value=30.0),
            # Up to two periods: the client's timeouts end a request well within that.
            answer_after=st.none() | st.floats(min_value=0.0, max_value=2.0),
            arrives_at=st.floats(min_value=0.0, max_value=1.0),
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_the_window_bound_holds_whatever_the_latency(
    requests: int, period: float, trips: list[Trip]
) -> None:
    """A request reaches the server between its permit and its answer, however late that is."""
    limit = RateLimit(requests, period)

    async def main() -> list[float]:
        limiter = LocalRateLimiter(limit)
        start = anyio.current_time()
        arrivals: list[float] = []

        async def travel(trip: Trip) -> None:
            await anyio.sleep_until(start + trip.starts)
            permit = await limiter.acquire()
            if trip.answer_after is None:  # lost: it arrived within a period, if at all
                arrivals.append(permit.granted_at + trip.arrives_at * period)
                return
            latency = trip.answer_after * period
            arrivals.append(permit.granted_at + trip.arrives_at * latency)
            await anyio.sleep(latency)
            await limiter.observe(RateLimitFeedback(permit, 200))

        async with anyio.create_task_group() as group:
            for trip in trips:
                group.start_soon(travel, trip)
        return arrivals

    arrivals = run_virtual(main)
    assert len(arrivals) == len(trips)
    assert most_in_any_window(arrivals, period) <= requests
