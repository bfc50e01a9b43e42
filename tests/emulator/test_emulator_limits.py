"""The emulator's rate limiting: headers, 429s, both window modes, and the admission property."""

from __future__ import annotations

import math

import anyio
import httpx
import pytest
from fakes import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from grok_imagine_async._limiting.plans import RateLimit
from grok_imagine_async._protocol import parse_reset
from grok_imagine_async.testing import Emulator, EmulatorConfig, ManualClock
from grok_imagine_async.testing._quota import EPSILON, WindowCounter, max_in_window

pytestmark = pytest.mark.anyio


async def post(http: httpx.AsyncClient, prompt: str = "p") -> httpx.Response:
    return await http.post("/v1/generate", json={"prompt": prompt})


async def test_sliding_window_refuses_over_quota_with_429_and_retry_after() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"t": RateLimit(3, 10.0)}))
    async with emulator.client(token="t") as http:
        answers = [await post(http) for _ in range(3)]
        await anyio.sleep(4)
        refused = await post(http)
        await anyio.sleep(float(refused.headers["Retry-After"]))
        again = await post(http)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert refused.status_code == 429
    assert refused.json() == {
        "code": 429,
        "message": "Rate limit exceeded, please try again later.",
        "error": "RATE_LIMITED",
    }
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert float(refused.headers["Retry-After"]) == pytest.approx(6.0)
    assert float(refused.headers["X-RateLimit-Reset"]) == pytest.approx(6.0)
    assert again.status_code == 200
    stats = emulator.statistics()
    assert stats.rate_limited == 1
    assert stats.tasks_created == 4
    assert stats.posts_per_prompt == {"p": 4}  # the 429'd POST never reached the handler


async def test_sliding_window_frees_one_slot_per_expired_request() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"t": RateLimit(3, 10.0)}))
    async with emulator.client(token="t") as http:
        for _ in range(3):
            assert (await post(http)).status_code == 200
            await anyio.sleep(4)
        # t=12: the request of t=0 has left the window, those of t=4 and t=8 still count.
        admitted = await post(http)
        refused = await post(http)
    assert admitted.status_code == 200
    assert refused.status_code == 429
    assert float(refused.headers["Retry-After"]) == pytest.approx(2.0)


async def test_fixed_window_restarts_on_period_boundaries() -> None:
    clock = ManualClock(start=105.0)
    emulator = Emulator(
        EmulatorConfig(tokens={"t": RateLimit(3, 10.0)}, window="fixed", clock=clock)
    )
    async with emulator.client(token="t") as http:
        first = [await post(http) for _ in range(3)]
        refused = await post(http)
        clock.advance(5.0)  # t=110: a new window
        fresh = [await post(http) for _ in range(3)]
    assert [a.status_code for a in first] == [200, 200, 200]
    assert float(first[0].headers["X-RateLimit-Reset"]) == pytest.approx(5.0)
    assert refused.status_code == 429
    assert float(refused.headers["Retry-After"]) == pytest.approx(5.0)
    assert [a.status_code for a in fresh] == [200, 200, 200]
    # Six admitted within 5 s: fixed windows allow bursts across a boundary.
    assert emulator.max_window_count(10.0, admitted_only=True) == 6


async def test_reset_can_be_sent_as_unix_time() -> None:
    clock = ManualClock(start=50.0)
    emulator = Emulator(
        EmulatorConfig(tokens={"t": RateLimit(2, 10.0)}, reset_format="unix", clock=clock)
    )
    async with emulator.client(token="t") as http:
        answer = await post(http)
    reset = float(answer.headers["X-RateLimit-Reset"])
    assert reset > 1e9
    assert reset == pytest.approx(clock.unix() + 10.0, abs=0.01)
    assert parse_reset(answer.headers["X-RateLimit-Reset"], now_unix=clock.unix()) == (
        pytest.approx(10.0, abs=0.01)
    )


async def test_status_polls_count_against_the_same_quota() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"t": RateLimit(2, 10.0)}))
    async with emulator.client(token="t") as http:
        task_id = (await post(http)).json()["data"]["task_id"]
        poll = await http.get("/v1/status", params={"task_id": task_id})
        refused = await http.get("/v1/status", params={"task_id": task_id})
    assert poll.status_code == 200
    assert refused.status_code == 429


async def test_tokens_have_independent_quotas() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"a": RateLimit(1, 10.0), "b": RateLimit(1, 10.0)}))
    async with emulator.client(token="a") as a, emulator.client(token="b") as b:
        assert (await post(a)).status_code == 200
        assert (await post(b)).status_code == 200
        assert (await post(a)).status_code == 429
    assert len(emulator.request_times("a")) == 2
    assert emulator.request_times("a", admitted_only=True) == emulator.request_times("a")[:1]
    assert len(emulator.request_times()) == 3


async def test_plan_quota_applies_over_the_configured_period() -> None:
    emulator = Emulator(EmulatorConfig(period=3.0))  # test-token: free, 100 per 3 s
    async with emulator.client() as http:
        codes = [(await post(http, f"p{i}")).status_code for i in range(101)]
        await anyio.sleep(3)
        later = await post(http)
    assert codes.count(200) == 100
    assert codes[-1] == 429
    assert later.status_code == 200


async def test_counting_refused_requests_keeps_a_hammering_client_locked_out() -> None:
    limit = RateLimit(2, 10.0)
    lenient = Emulator(EmulatorConfig(tokens={"t": limit}))
    strict = Emulator(EmulatorConfig(tokens={"t": limit}, count_refused=True))
    codes: dict[str, list[int]] = {}
    for name, emulator in (("lenient", lenient), ("strict", strict)):
        async with emulator.client(token="t") as http:
            codes[name] = []
            for _ in range(4):  # one request every 4 s
                codes[name].append((await post(http)).status_code)
                await anyio.sleep(4)
    assert codes["lenient"] == [200, 200, 429, 200]
    assert codes["strict"] == [200, 200, 429, 429]


async def test_max_window_count_reports_a_client_that_overshoots() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"t": RateLimit(5, 1.0)}))
    async with emulator.client(token="t") as http:
        for _ in range(8):
            await post(http)
            await anyio.sleep(0.1)
    assert emulator.max_window_count(1.0) == 8
    assert emulator.max_window_count(1.0, admitted_only=True) == 5
    assert emulator.statistics().rate_limited == 3


# The admission property, on the pure counter --------------------------------------------------

gaps = st.lists(
    st.floats(min_value=0.0, max_value=2.0, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=300,
)


def arrivals(start: float, intervals: list[float]) -> list[float]:
    times, now = [], start
    for gap in intervals:
        now += gap
        times.append(now)
    return times


@settings(max_examples=examples(300), deadline=None)
@given(
    quota=st.integers(min_value=1, max_value=8),
    period=st.sampled_from([0.5, 1.0, 3.0, 60.0]),
    start=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    intervals=gaps,
    count_refused=st.booleans(),
)
def test_sliding_window_admits_at_most_quota_in_any_window(
    quota: int, period: float, start: float, intervals: list[float], count_refused: bool
) -> None:
    counter = WindowCounter(RateLimit(quota, period), "sliding", count_refused=count_refused)
    times = arrivals(start, intervals)
    admitted = [t for t in times if counter.hit(t).admitted]
    assert max_in_window(admitted, period) <= quota
    if not count_refused:
        # And no more refusals than necessary: a request is refused only at a full window.
        counter = WindowCounter(RateLimit(quota, period), "sliding")
        kept: list[float] = []
        for t in times:
            decision = counter.hit(t)
            in_window = sum(1 for k in kept if k + period > t + EPSILON)
            assert decision.admitted == (in_window < quota)
            if decision.admitted:
                kept.append(t)
            else:
                assert decision.retry_after > 0
                assert decision.remaining == 0


@settings(max_examples=examples(300), deadline=None)
@given(
    quota=st.integers(min_value=1, max_value=8),
    period=st.sampled_from([0.5, 1.0, 3.0, 60.0]),
    start=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    intervals=gaps,
)
def test_fixed_window_admits_at_most_quota_per_window(
    quota: int, period: float, start: float, intervals: list[float]
) -> None:
    counter = WindowCounter(RateLimit(quota, period), "fixed")
    per_window: dict[int, int] = {}
    for t in arrivals(start, intervals):
        decision = counter.hit(t)
        window = math.floor((t + EPSILON) / period)
        assert decision.admitted == (per_window.get(window, 0) < quota)
        if decision.admitted:
            per_window[window] = per_window.get(window, 0) + 1
        assert 0 <= decision.reset_after <= period + EPSILON
    assert all(count <= quota for count in per_window.values())


@settings(max_examples=examples(200), deadline=None)
@given(times=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=60))
def test_max_in_window_matches_brute_force(times: list[float]) -> None:
    times.sort()
    period = 7.0
    brute = max(
        (sum(1 for u in times if t <= u < t + period - EPSILON) for t in times),
        default=0,
    )
    assert max_in_window(times, period) == brute
