"""Fault injection in the emulator: prompt markers, random rates, reproducibility."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from grok_imagine_async import ConfigurationError
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx
from grok_imagine_async.testing import (
    Emulator,
    EmulatorConfig,
    FaultConfig,
    Outage,
)

pytestmark = pytest.mark.anyio

ENTERPRISE = {"test-token": "enterprise"}


def config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "duration_median": 10.0,
        "duration_sigma": 0.0,
        "seed": 11,
        "tokens": ENTERPRISE,
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


async def final_status(http: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    answer = await http.post("/v1/generate", json={"prompt": prompt})
    task_id = answer.json()["data"]["task_id"]
    # Tasks take exactly 10 s: look well after, never at the boundary float rounding decides.
    await anyio.sleep(11)
    data = (await http.get("/v1/status", params={"task_id": task_id})).json()["data"]
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("[fail:content]", "Inappropriate content, please try another prompt."),
        ("[fail:input]", "File type not supported"),
        ("[fail:network]", "Network error, please try again later."),
        ("[fail:build]", "grok imagine build failed"),
        ("[fail:unknown]", "Unexpected error"),
    ],
)
async def test_failure_markers_fail_the_task_with_the_documented_message(
    marker: str, message: str
) -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        data = await final_status(http, f"a cat {marker}")
    assert data["status"] == "failed"
    assert data["error_message"] == message
    assert data["response"] is None
    assert data["consumed_credits"] == 40
    assert emulator.statistics().tasks_by_state["failed"] == 1


async def test_empty_marker_completes_without_any_video() -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        data = await final_status(http, "a cat [fail:empty]")
    assert data["status"] == "completed"
    assert data["response"] == []


async def test_counted_marker_fails_only_the_first_tasks_of_a_prompt() -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        first = await final_status(http, "a cat [fail:network:1]")
        second = await final_status(http, "a cat [fail:network:1]")
    assert (first["status"], second["status"]) == ("failed", "completed")
    assert emulator.statistics().tasks_per_prompt == {"a cat [fail:network:1]": 2}


async def test_duration_marker_sets_an_exact_unscaled_duration() -> None:
    emulator = Emulator(config(time_scale=100.0))
    async with emulator.client() as http:
        task_id = (await http.post("/v1/generate", json={"prompt": "x [duration:42]"})).json()
        await anyio.sleep(41.9)
        before = await http.get("/v1/status", params={"task_id": task_id["data"]["task_id"]})
        await anyio.sleep(0.2)
        after = await http.get("/v1/status", params={"task_id": task_id["data"]["task_id"]})
    assert before.json()["data"]["status"] == "processing"
    assert after.json()["data"]["status"] == "completed"


async def test_500_marker_answers_a_server_error_and_creates_no_task() -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        first = await http.post("/v1/generate", json={"prompt": "x [fail:500:2]"})
        second = await http.post("/v1/generate", json={"prompt": "x [fail:500:2]"})
        third = await http.post("/v1/generate", json={"prompt": "x [fail:500:2]"})
    assert first.status_code == second.status_code == 500
    assert first.json() == {
        "code": 500,
        "message": "Internal server error",
        "error": "SERVER_ERROR",
    }
    assert "X-RateLimit-Remaining" in first.headers
    assert third.status_code == 200
    stats = emulator.statistics()
    assert stats.server_errors == 2
    assert stats.posts_per_prompt == {"x [fail:500:2]": 3}
    assert stats.tasks_per_prompt == {"x [fail:500:2]": 1}


async def test_body_marker_answers_200_with_an_error_code() -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        answer = await http.post("/v1/generate", json={"prompt": "x [fail:body]"})
    assert answer.status_code == 200
    assert answer.json() == {
        "code": 500,
        "message": "Internal server error",
        "error": "SERVER_ERROR",
    }
    assert emulator.statistics().body_errors == 1
    assert emulator.statistics().tasks_created == 0


async def test_drop_marker_creates_the_task_then_hangs_up() -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.post("/v1/generate", json={"prompt": "x [fail:drop:1]"})
        retried = await http.post("/v1/generate", json={"prompt": "x [fail:drop:1]"})
    assert retried.status_code == 200
    stats = emulator.statistics()
    assert stats.dropped == 1
    assert stats.duplicate_submissions == {"x [fail:drop:1]": 2}  # the ambiguity, paid twice
    assert stats.responses_by_status == {200: 1}


async def test_slow_marker_delays_the_answer_on_the_emulator_clock() -> None:
    emulator = Emulator(config())
    async with emulator.client(timeout=60.0) as http:
        start = anyio.current_time()
        answer = await http.post("/v1/generate", json={"prompt": "x [slow:20]"})
        elapsed = anyio.current_time() - start
    assert answer.status_code == 200
    assert elapsed == pytest.approx(20.0, abs=0.01)
    assert emulator.statistics().slow == 1


async def test_slow_answer_beyond_the_read_timeout_is_a_read_timeout_but_the_task_exists() -> None:
    emulator = Emulator(config())
    async with emulator.client(timeout=5.0) as http:
        start = anyio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/generate", json={"prompt": "x [slow:30]"})
        elapsed = anyio.current_time() - start
    assert elapsed == pytest.approx(5.0, abs=0.01)
    assert emulator.statistics().tasks_created == 1


async def test_markers_can_be_disabled() -> None:
    emulator = Emulator(config(faults=FaultConfig(markers=False)))
    async with emulator.client() as http:
        data = await final_status(http, "a cat [fail:content] [fail:typo]")
    assert data["status"] == "completed"


async def run_traffic(emulator: Emulator, count: int) -> list[str]:
    """Outcome of each of ``count`` submissions followed by one poll each."""
    outcomes, task_ids = [], []
    async with emulator.client() as http:
        for i in range(count):
            try:
                answer = await http.post("/v1/generate", json={"prompt": f"p{i}"})
            except httpx.RemoteProtocolError:
                outcomes.append("drop")
                continue
            body = answer.json()
            outcomes.append(f"{answer.status_code}/{body['code']}")
            if body["code"] == 200:
                task_ids.append(body["data"]["task_id"])
        await anyio.sleep(1000)
        for task_id in task_ids:
            try:
                data = (await http.get("/v1/status", params={"task_id": task_id})).json()
            except httpx.RemoteProtocolError:
                outcomes.append("drop")
                continue
            outcomes.append(str(data.get("data", {}).get("status")))
    return outcomes


RANDOM_FAULTS = FaultConfig(
    server_error_rate=0.1,
    body_error_rate=0.1,
    drop_rate=0.1,
    task_failure_rate=0.3,
    slow_rate=0.1,
    slow_seconds=1.0,
)


async def test_random_faults_occur_at_their_rates() -> None:
    emulator = Emulator(config(faults=RANDOM_FAULTS, seed=5))
    await run_traffic(emulator, 2000)
    stats = emulator.statistics()
    requests = stats.requests_total
    assert 0.07 * requests <= stats.server_errors <= 0.13 * requests
    assert 0.06 * requests <= stats.body_errors <= 0.12 * requests  # only when no 500
    assert 0.06 * requests <= stats.dropped <= 0.12 * requests
    assert 0.07 * requests <= stats.slow <= 0.13 * requests
    finished = stats.tasks_by_state["completed"] + stats.tasks_by_state["failed"]
    assert finished == stats.tasks_created
    assert 0.25 <= stats.tasks_by_state["failed"] / stats.tasks_created <= 0.35


async def test_same_seed_same_faults_different_seed_different_faults() -> None:
    runs = [
        await run_traffic(Emulator(config(faults=RANDOM_FAULTS, seed=seed)), 200)
        for seed in (1, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_rates_out_of_range_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="drop_rate"):
        FaultConfig(drop_rate=1.5)
    with pytest.raises(ConfigurationError, match="slow_seconds"):
        FaultConfig(slow_seconds=math.nan)  # a NaN passed `< 0`


async def test_an_outage_window_fails_every_task_created_in_it_then_ends() -> None:
    outage = Outage(start=20.0, end=50.0, message="grok imagine build failed", fails_after=1.5)
    emulator = Emulator(config(faults=FaultConfig(outages=(outage,))))
    async with emulator.client() as http:
        before = await final_status(http, "a cat")  # the first request: the outage's origin
        await anyio.sleep(10)  # 21 s in
        during = await final_status(http, "a cat [fail:empty]")  # markers make no difference
        await anyio.sleep(20)  # 52 s in
        after = await final_status(http, "a cat")
    assert (before["status"], during["status"], after["status"]) == (
        "completed",
        "failed",
        "completed",
    )
    assert during["error_message"] == "grok imagine build failed"
    assert during["consumed_credits"] == 40  # charged unless the outage says it is free


async def test_an_outage_switched_on_and_off_fails_tasks_fast_and_free() -> None:
    emulator = Emulator(config())
    async with emulator.client() as http:
        emulator.outage(Outage(fails_after=2.0, free=True))
        answer = await http.post("/v1/generate", json={"prompt": "a cat"})
        task_id = answer.json()["data"]["task_id"]
        await anyio.sleep(1.9)
        running = (await http.get("/v1/status", params={"task_id": task_id})).json()["data"]
        await anyio.sleep(0.2)
        failed = (await http.get("/v1/status", params={"task_id": task_id})).json()["data"]
        emulator.outage(on=False)
        after = await final_status(http, "a dog")
    assert running["status"] != "failed"
    assert (failed["status"], failed["error_message"]) == (
        "failed",
        "Network error, please try again later.",
    )
    assert failed["consumed_credits"] == 0
    assert after["status"] == "completed"
    assert emulator.statistics().credits_consumed == 40  # only the dog


def test_an_outage_must_end_after_it_starts() -> None:
    with pytest.raises(ConfigurationError, match=r"Outage\.(start|end) must"):
        Outage(start=10.0, end=5.0)
    for times in ({"start": math.nan}, {"start": 1.0, "end": math.nan}):  # NaN passed `<`
        with pytest.raises(ConfigurationError, match=r"Outage\.(start|end) must"):
            Outage(**times)
    with pytest.raises(ConfigurationError, match="fails_after"):
        Outage(fails_after=math.nan)
