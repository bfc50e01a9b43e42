"""The emulator's API surface, in process on virtual time: envelope, auth, validation, lifecycle."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import anyio
import httpx
import pytest

from grok_imagine_async import ConfigurationError
from grok_imagine_async.testing import (
    ConnectionDropped,
    Emulator,
    EmulatorConfig,
    ManualClock,
    Vocabulary,
)

pytestmark = pytest.mark.anyio


def fixed_durations(**overrides: Any) -> EmulatorConfig:
    """Every task takes exactly 10 s: 2 s pending, then 8 s processing."""
    settings: dict[str, Any] = {
        "duration_median": 10.0,
        "duration_sigma": 0.0,
        "queue_fraction": 0.2,
        "seed": 7,
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


async def submit(http: httpx.AsyncClient, prompt: str = "a cat", **body: Any) -> str:
    answer = await http.post("/v1/generate", json={"prompt": prompt, **body})
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["data"]["task_id"]
    assert isinstance(task_id, str)
    return task_id


async def status(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    answer = await http.get("/v1/status", params={"task_id": task_id})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["code"] == 200
    data = body["data"]
    assert isinstance(data, dict)
    return data


async def test_generate_answers_the_documented_envelope() -> None:
    emulator = Emulator()
    async with emulator.client() as http:
        answer = await http.post("/v1/generate", json={"mode": "fun", "prompt": "a cat"})
    body = answer.json()
    assert answer.status_code == 200
    assert body["code"] == 200
    assert body["message"] == "success"
    assert body["data"]["task_id"].startswith("task_")
    assert answer.headers["X-RateLimit-Remaining"] == "99"
    assert answer.headers["X-RateLimit-Reset"] == "60"  # a whole period, not 60.001


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dGVzdA==", "Bearer"])
async def test_unknown_or_missing_token_is_401_with_error_body(authorization: str | None) -> None:
    emulator = Emulator()
    headers = {} if authorization is None else {"Authorization": authorization}
    async with emulator.client(token=None, headers=headers) as http:
        answer = await http.post("/v1/generate", json={"prompt": "a cat"})
    assert answer.status_code == 401
    assert answer.json() == {
        "code": 401,
        "message": "Unauthorized: invalid API key",
        "error": "UNAUTHORIZED",
    }
    stats = emulator.statistics()
    assert stats.unauthorized == 1
    assert stats.tasks_created == 0
    assert emulator.request_times() == []  # 401s are not counted against any quota


async def test_each_configured_token_is_accepted() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"alice": "free", "bob": "pro"}))
    async with emulator.client(token="bob") as http:
        answer = await http.post("/v1/generate", json={"prompt": "a dog"})
    assert answer.status_code == 200
    assert answer.headers["X-RateLimit-Limit"] == "1000"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "fun"}, "Invalid request: The prompt parameter is required"),
        ({"prompt": "   "}, "Invalid request: The prompt parameter is required"),
        ({"prompt": 12}, "Invalid request: The prompt parameter is required"),
        ({"prompt": "a", "mode": "weird"}, "mode must be one of"),
        ({"prompt": "a", "ratio": "4:3"}, "ratio must be one of"),
        ({"prompt": "a", "images": "https://x/y.png"}, "images must be a list"),
        ({"prompt": "a", "images": [3]}, "images must be a list"),
        ({"prompt": "a", "mode": "spicy", "images": ["https://x/y.png"]}, "spicy"),
        ({"prompt": "a [fail:typo]"}, "unknown emulator marker [fail:typo]"),
        ({"prompt": "a [slow:soon]"}, "needs a number of seconds"),
        (["a list"], "must be a JSON object"),
    ],
)
async def test_bad_bodies_are_400_invalid_request(body: Any, message: str) -> None:
    emulator = Emulator()
    async with emulator.client() as http:
        answer = await http.post("/v1/generate", json=body)
    assert answer.status_code == 400
    assert answer.json()["code"] == 400
    assert answer.json()["error"] == "INVALID_REQUEST"
    assert message in answer.json()["message"]
    assert "X-RateLimit-Remaining" in answer.headers
    assert emulator.statistics().tasks_created == 0


async def test_body_that_is_not_json_is_400() -> None:
    emulator = Emulator()
    async with emulator.client() as http:
        answer = await http.post("/v1/generate", content=b"{not json")
    assert answer.status_code == 400
    assert answer.json()["error"] == "INVALID_REQUEST"


async def test_accepted_request_is_echoed_with_defaults() -> None:
    emulator = Emulator(fixed_durations())
    async with emulator.client() as http:
        task_id = await submit(http, "a fox", images=["https://example.com/a.png"])
        data = await status(http, task_id)
    assert data["request"] == {
        "mode": "normal",
        "prompt": "a fox",
        "ratio": "1:1",
        "images": ["https://example.com/a.png"],
    }
    assert data["consumed_credits"] == 40
    assert data["task_id"] == task_id
    assert data["created_at"].endswith("Z")


async def test_task_goes_pending_processing_completed_on_the_clock() -> None:
    emulator = Emulator(fixed_durations())
    seen = []
    async with emulator.client() as http:
        task_id = await submit(http)
        for _ in range(6):  # at 0, 2.6, 5.2, 7.8, 10.4, 13: never at a boundary (2 s, 10 s)
            data = await status(http, task_id)
            seen.append((data["status"], data["response"], data["error_message"]))
            await anyio.sleep(2.6)
    assert [s for s, _, _ in seen] == [
        "pending",
        "processing",
        "processing",
        "processing",
        "completed",
        "completed",
    ]
    assert seen[0][1] is None
    urls = seen[-1][1]
    assert urls == [
        f"http://emulator.local/videos/{task_id}/0.mp4",
        f"http://emulator.local/videos/{task_id}/1.mp4",
    ]
    assert all(error is None for _, _, error in seen)


async def test_result_videos_are_served_without_auth_as_mp4() -> None:
    emulator = Emulator(fixed_durations())
    async with emulator.client() as http:
        task_id = await submit(http)
        early = await http.get(f"/videos/{task_id}/0.mp4")
        await anyio.sleep(11)  # past the 10 s duration, clear of the boundary
        urls = (await status(http, task_id))["response"]
    async with emulator.client(token=None) as anonymous:
        videos = [await anonymous.get(url) for url in urls]
        missing = await anonymous.get(f"/videos/{task_id}/2.mp4")
    assert early.status_code == 404  # not ready yet
    assert missing.status_code == 404
    for video in videos:
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
        assert int(video.headers["content-length"]) == len(video.content) > 200
        assert video.content[4:8] == b"ftyp"
    assert videos[0].content != videos[1].content
    assert emulator.statistics().videos_served == 2


async def test_unknown_task_is_404_and_other_tokens_cannot_read_a_task() -> None:
    emulator = Emulator(EmulatorConfig(tokens={"alice": "free", "bob": "free"}))
    async with emulator.client(token="alice") as alice, emulator.client(token="bob") as bob:
        task_id = await submit(alice)
        unknown = await alice.get("/v1/status", params={"task_id": "task_nope"})
        foreign = await bob.get("/v1/status", params={"task_id": task_id})
        missing = await alice.get("/v1/status")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "code": 404,
        "message": "Task not found: task_nope",
        "error": "NOT_FOUND",
    }
    assert foreign.status_code == 404
    assert missing.status_code == 400
    assert missing.json()["error"] == "INVALID_REQUEST"


async def test_unknown_paths_and_methods_are_counted_and_refused() -> None:
    emulator = Emulator()
    async with emulator.client() as http:
        unknown = await http.get("/v1/nothing")
        wrong_method = await http.get("/v1/generate")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "NOT_FOUND"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "INVALID_REQUEST"
    assert len(emulator.request_times()) == 2  # every /v1 request counts against the quota


@pytest.mark.parametrize(
    ("vocabulary", "words"),
    [
        ("default", ["pending", "processing", "completed"]),
        ("reseller", ["waiting", "generating", "success"]),
        ("upper", ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]),
        (Vocabulary("queued", "running", "done", "error"), ["queued", "running", "done"]),
    ],
)
async def test_status_vocabulary_is_selectable(
    vocabulary: str | Vocabulary, words: list[str]
) -> None:
    emulator = Emulator(fixed_durations(vocabulary=vocabulary))
    seen = []
    async with emulator.client() as http:
        task_id = await submit(http)
        for _ in range(3):  # at 0, 5.5 and 11 s: pending, processing, completed
            seen.append((await status(http, task_id))["status"])
            await anyio.sleep(5.5)
    assert seen == words


async def test_failed_word_follows_the_vocabulary() -> None:
    emulator = Emulator(fixed_durations(vocabulary="reseller"))
    async with emulator.client() as http:
        task_id = await submit(http, "a cat [fail:build]")
        await anyio.sleep(11)  # past the 10 s duration, clear of the boundary
        data = await status(http, task_id)
    assert data["status"] == "fail"
    assert data["error_message"] == "grok imagine build failed"


def test_unknown_vocabulary_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="unknown vocabulary"):
        EmulatorConfig(vocabulary="klingon")


async def test_durations_are_lognormal_around_the_median_and_scaled() -> None:
    emulator = Emulator(EmulatorConfig(seed=3, time_scale=10.0, tokens={"t": "enterprise"}))
    async with emulator.client(token="t") as http:
        for i in range(200):
            await submit(http, f"prompt {i}")
        done = []
        for _ in range(12):  # half a second of virtual time at a time
            await anyio.sleep(0.5)
            done.append(emulator.statistics().tasks_by_state["completed"])
    # Median 30 s / time_scale 10 = 3 s: half done at 3 s; sigma 0.5 leaves ~8% beyond 6 s.
    assert 70 <= done[5] <= 130
    assert 170 <= done[-1] <= 198
    assert done == sorted(done)


async def test_injected_clock_drives_the_lifecycle_without_sleeping() -> None:
    clock = ManualClock(start=1000.0)
    emulator = Emulator(fixed_durations(clock=clock))
    async with emulator.client() as http:
        task_id = await submit(http)
        clock.advance(1.0)
        first = (await status(http, task_id))["status"]
        clock.advance(9.0)
        last = (await status(http, task_id))["status"]
    assert (first, last) == ("pending", "completed")
    assert emulator.request_times() == [1000.0, 1001.0, 1010.0]


async def test_statistics_count_requests_prompts_credits_and_states() -> None:
    emulator = Emulator(fixed_durations())
    async with emulator.client() as http:
        first = await submit(http, "same")
        await submit(http, "same")
        await submit(http, "other [fail:content]")
        await status(http, first)
        await anyio.sleep(20)
        await http.get("/v1/status", params={"task_id": "task_missing"})
    stats = emulator.statistics()
    assert stats.requests_total == 5
    assert stats.requests_by_endpoint == {"POST /v1/generate": 3, "GET /v1/status": 2}
    assert stats.responses_by_status == {200: 4, 404: 1}
    assert stats.posts_per_prompt == {"same": 2, "other [fail:content]": 1}
    assert stats.tasks_per_prompt == {"same": 2, "other [fail:content]": 1}
    assert stats.duplicate_submissions == {"same": 2}
    assert stats.credits_consumed == 120
    assert stats.tasks_by_state == {"pending": 0, "processing": 0, "completed": 2, "failed": 1}
    with pytest.raises(TypeError):
        stats.posts_per_prompt["same"] = 5  # type: ignore[index]


async def test_the_admin_route_returns_statistics_as_json() -> None:
    emulator = Emulator()
    async with emulator.client() as http:
        await submit(http, "x")
        await anyio.sleep(1)
        await submit(http, "x")
        stats = (await http.get("/_emulator/stats")).json()
    assert stats["tasks_created"] == 2
    assert stats["credits_consumed"] == 80
    assert stats["posts_per_prompt"] == {"x": 2}
    assert stats["duplicate_submissions"] == {"x": 2}
    assert stats["requests_by_endpoint"] == {"POST /v1/generate": 2}
    assert emulator.statistics().requests_total == 2  # inspection is not counted


async def test_statistics_can_be_read_outside_the_event_loop() -> None:
    emulator = Emulator(fixed_durations())
    async with emulator.client() as http:
        await submit(http)
    # Read from sync code (no running loop): the state as of the last request.
    stats = await anyio.to_thread.run_sync(emulator.statistics)
    assert stats.tasks_by_state["pending"] == 1


async def test_plain_asgi_transport_sees_connection_dropped() -> None:
    emulator = Emulator()
    transport = httpx.ASGITransport(app=emulator.app)
    headers = {"Authorization": "Bearer test-token"}
    async with httpx.AsyncClient(transport=transport, base_url="http://e", headers=headers) as http:
        with pytest.raises(ConnectionDropped):
            await http.post("/v1/generate", json={"prompt": "x [fail:drop]"})
    assert emulator.statistics().tasks_created == 1


def test_testing_imports_without_starlette_and_hints_at_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None  # as if the extra were not installed\n"
        "from grok_imagine_async.testing import VirtualTimeEventLoop, run_virtual\n"
        "try:\n"
        "    from grok_imagine_async.testing import Emulator\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert 'pip install "grok-imagine-async[emulator]"' in result.stdout


def test_result_ttl_must_be_positive_or_none() -> None:
    with pytest.raises(ConfigurationError, match="result_ttl"):
        EmulatorConfig(result_ttl=0)
    with pytest.raises(ConfigurationError, match="duration_sigma"):
        EmulatorConfig(duration_sigma=float("nan"))  # refused, where `sigma < 0` let it in
    assert EmulatorConfig(result_ttl=None).result_ttl is None


def test_reset_seconds_ignore_float_noise() -> None:
    from grok_imagine_async.testing._emulator import _seconds

    # (now + period) - now is off by up to one ulp of now when the sum crosses a power of two:
    # clocks just below 2**11 or 2**17 seconds (the virtual loop starts at the real one).
    starts = [2.0**k - 59.9 + 0.37 * i for k in (11, 17) for i in range(160)]
    assert {_seconds((now + 60.0) - now) for now in starts} == {"60"}
    assert _seconds(0.0001) == "0.001"  # a real fraction of a millisecond still rounds up
    assert _seconds(2.5) == "2.5"


async def test_saved_tasks_go_on_in_another_emulator(tmp_path: Any) -> None:
    before, after = ManualClock(), ManualClock(5.0)  # the second process starts 5 s later
    first = Emulator(fixed_durations(clock=before))
    async with first.client() as http:
        task_id = await submit(http)
    first.save_tasks(tmp_path / "tasks.json")

    second = Emulator(fixed_durations(clock=after))
    assert second.load_tasks(tmp_path / "tasks.json") == 1
    assert second.load_tasks(tmp_path / "tasks.json") == 0  # a known task is kept as it is
    async with second.client() as http:
        assert (await status(http, task_id))["status"] == "processing"  # 5 s of 10
        after.advance(5.5)
        assert (await status(http, task_id))["status"] == "completed"
    assert second.task_ids() == [task_id]
    for text in ("[]", "{", '{"tasks": [{"created_at": "noon"}]}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ConfigurationError, match="does not hold an emulator's tasks"):
            second.load_tasks(tmp_path / "bad.json")


async def test_a_resubmission_after_a_failure_is_not_a_duplicate() -> None:
    emulator = Emulator(fixed_durations())
    async with emulator.client() as http:
        await submit(http, "kite [fail:network:1]")  # fails at 10 s
        await submit(http, "boat")
        await anyio.sleep(11)
        await submit(http, "kite [fail:network:1]")  # the retry the client chose: succeeds
        await submit(http, "boat")  # the first one completed: paid twice unasked
        await submit(http, "boat")  # and again while that one runs
    stats = emulator.statistics()
    assert stats.tasks_per_prompt == {"kite [fail:network:1]": 2, "boat": 3}
    assert stats.duplicate_submissions == {"boat": 3}
