"""The emulator's leaky-bucket (GCRA) mode: what it admits, its headers, and the admission law."""

from __future__ import annotations

import argparse

import anyio
import httpx
import pytest
from fakes import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from grok_imagine_async import ConfigurationError
from grok_imagine_async._cli import emulator as emulator_command
from grok_imagine_async._limiting.plans import RateLimit
from grok_imagine_async.testing import Emulator, EmulatorConfig, ManualClock
from grok_imagine_async.testing._quota import EPSILON, GcraCounter

pytestmark = pytest.mark.anyio

LIMIT = RateLimit(10, 10.0)  # one request's room a second


async def post(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/v1/generate", json={"prompt": "p"})


async def test_a_full_bucket_admits_its_burst_then_one_per_interval() -> None:
    clock = ManualClock(start=100.0)
    config = EmulatorConfig(tokens={"t": LIMIT}, window="gcra", burst=3, clock=clock)
    emulator = Emulator(config)
    async with emulator.client(token="t") as http:
        burst = [await post(http) for _ in range(3)]
        refused = await post(http)
        clock.advance(0.5)
        still = await post(http)  # half a request's room is not enough
        clock.advance(0.5)
        refilled = await post(http)
    assert [a.status_code for a in burst] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in burst] == ["2", "1", "0"]
    assert [float(a.headers["X-RateLimit-Reset"]) for a in burst] == [1.0, 2.0, 3.0]
    assert all(a.headers["X-RateLimit-Limit"] == "10" for a in burst)
    assert refused.status_code == 429
    assert float(refused.headers["Retry-After"]) == pytest.approx(1.0)
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert still.status_code == 429
    assert float(still.headers["Retry-After"]) == pytest.approx(0.5)
    assert refilled.status_code == 200
    assert refilled.headers["X-RateLimit-Remaining"] == "0"
    assert emulator.statistics().rate_limited == 2


async def test_remaining_and_reset_show_the_bucket_refilling() -> None:
    clock = ManualClock(start=0.0)
    config = EmulatorConfig(tokens={"t": LIMIT}, window="gcra", burst=5, clock=clock)
    emulator = Emulator(config)
    async with emulator.client(token="t") as http:
        for _ in range(5):
            await post(http)
        clock.advance(2.5)  # two and a half requests' room back
        answer = await post(http)
    assert answer.status_code == 200
    assert answer.headers["X-RateLimit-Remaining"] == "1"  # 2.5 back, one taken: 1.5 held
    assert float(answer.headers["X-RateLimit-Reset"]) == pytest.approx(3.5)  # until full


async def test_burst_one_refuses_anything_closer_than_the_interval() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"t": LIMIT}, window="gcra"))  # burst=1
    async with emulator.client(token="t") as http:
        first = await post(http)
        await anyio.sleep(0.9)
        early = await post(http)
        await anyio.sleep(0.1)
        on_time = await post(http)
    assert [first.status_code, early.status_code, on_time.status_code] == [200, 429, 200]
    assert first.headers["X-RateLimit-Remaining"] == "0"


async def test_counting_refused_requests_keeps_a_hammering_client_out() -> None:
    clock = ManualClock(start=0.0)
    codes: dict[bool, list[int]] = {}
    for count_refused in (False, True):
        config = EmulatorConfig(
            tokens={"t": LIMIT}, window="gcra", count_refused=count_refused, clock=clock
        )
        async with Emulator(config).client(token="t") as http:
            codes[count_refused] = []
            for _ in range(4):  # every 0.6 s, faster than one a second
                codes[count_refused].append((await post(http)).status_code)
                clock.advance(0.6)
    assert codes[False] == [200, 429, 200, 429]
    assert codes[True] == [200, 429, 429, 429]


def test_config_refuses_an_unknown_mode_or_a_bad_burst() -> None:
    with pytest.raises(ConfigurationError, match="gcra"):
        EmulatorConfig(window="leaky")  # type: ignore[arg-type]
    for burst in (0, -1, 2.5, True):
        with pytest.raises(ConfigurationError, match="burst"):
            EmulatorConfig(window="gcra", burst=burst)  # type: ignore[arg-type]


def test_the_command_line_selects_the_bucket_and_its_burst() -> None:
    parser = argparse.ArgumentParser()
    emulator_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["emulator", "--window", "gcra", "--burst", "5", "--plan", "pro"])
    config = emulator_command.build_config(args)
    assert (config.window, config.burst) == ("gcra", 5)
    with pytest.raises(SystemExit):
        parser.parse_args(["emulator", "--burst", "0"])


def brute_force_admits(times: list[float], limit: RateLimit, burst: int) -> list[bool]:
    """The bucket as a continuous level: +1 per interval up to ``burst``, -1 per admission."""
    rate, level, last, verdicts = limit.requests / limit.period, float(burst), None, []
    for t in times:
        if last is not None:
            level = min(float(burst), level + (t - last) * rate)
        last = t
        admitted = level >= 1.0 - EPSILON * rate  # the emulator's boundary tolerance
        if admitted:
            level -= 1.0
        verdicts.append(admitted)
    return verdicts


@settings(max_examples=examples(300), deadline=None)
@given(
    requests=st.integers(min_value=1, max_value=50),
    period=st.sampled_from([1.0, 6.0, 60.0]),
    burst=st.integers(min_value=1, max_value=8),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=80),
)
def test_admissions_follow_a_leaky_bucket(
    requests: int, period: float, burst: int, gaps: list[float]
) -> None:
    limit = RateLimit(requests, period)
    times, now = [], 1000.0
    for gap in gaps:
        now += gap * limit.interval
        times.append(now)
    counter = GcraCounter(limit, burst=burst)
    decisions = [counter.hit(t) for t in times]
    expected = brute_force_admits(times, limit, burst)
    for decision, admitted in zip(decisions, expected, strict=True):
        assert decision.admitted == admitted
        assert 0 <= decision.remaining <= burst - 1
        assert decision.reset_after <= burst * limit.interval + 1e-6
        assert (decision.retry_after > 0) == (not decision.admitted)
    # Never more than burst + rate * t in any span of t seconds.
    admitted_times = [t for t, d in zip(times, decisions, strict=True) if d.admitted]
    for i, start in enumerate(admitted_times):
        for j in range(i, len(admitted_times)):
            span = admitted_times[j] - start
            assert j - i + 1 <= burst + (span + EPSILON) / limit.interval + 1e-9
