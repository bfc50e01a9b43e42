"""The client through httpx.MockTransport: requests sent, answers read, retries, POST safety."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import anyio
import pytest
from fakes import TOKEN, RecordingLimiter, Script, error, ok, task_data

from grok_imagine_async import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncGrokImagine,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    FailureClass,
    GenerationRequest,
    InvalidRequestError,
    JobScheduler,
    JobState,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TaskFailedError,
    TaskStatus,
    WaitTimeoutError,
)
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx
from grok_imagine_async._settings import DEFAULT_BASE_URL
from grok_imagine_async.abc import Priority
from grok_imagine_async.testing import Emulator

BASE = "http://api.test"
FAST_RETRY = RetryPolicy(attempts=3, wait_initial=0.5, wait_factor=2.0, wait_max=4.0)


def make_client(script: Script, **kwargs: Any) -> tuple[AsyncGrokImagine, RecordingLimiter]:
    limiter = RecordingLimiter()
    http = httpx.AsyncClient(transport=httpx.MockTransport(script))
    options: dict[str, Any] = {"retry": FAST_RETRY, **kwargs}
    client = AsyncGrokImagine(
        api_key=TOKEN, base_url=BASE, http_client=http, limiter=limiter, **options
    )
    return client, limiter


# -- configuration ---------------------------------------------------------------------------


def test_missing_api_key_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROK_IMAGINE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="GROK_IMAGINE_API_KEY"):
        AsyncGrokImagine(limiter=RecordingLimiter())


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROK_IMAGINE_API_KEY", TOKEN)
    monkeypatch.setenv("GROK_IMAGINE_BASE_URL", "http://env.test/")
    monkeypatch.setenv("GROK_IMAGINE_PLAN", "pro")
    client = AsyncGrokImagine(limiter=RecordingLimiter())
    assert client.settings.base_url == "http://env.test"
    assert client.settings.rate_limit.requests == 1000


def test_defaults_to_real_host_and_free_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GROK_IMAGINE_BASE_URL", "GROK_IMAGINE_PLAN"):
        monkeypatch.delenv(name, raising=False)
    client = AsyncGrokImagine(api_key=TOKEN, limiter=RecordingLimiter())  # no request is sent
    assert client.settings.base_url == DEFAULT_BASE_URL
    assert DEFAULT_BASE_URL.startswith("https://")
    assert client.settings.rate_limit.requests == 100


def test_base_url_taken_from_supplied_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROK_IMAGINE_BASE_URL", raising=False)
    http = httpx.AsyncClient(base_url="http://emulator.local")
    client = AsyncGrokImagine(api_key=TOKEN, http_client=http, limiter=RecordingLimiter())
    assert client.settings.base_url == "http://emulator.local"


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigurationError, match="unknown plan 'gold'"):
        AsyncGrokImagine(api_key=TOKEN, plan="gold", limiter=RecordingLimiter())
    with pytest.raises(ConfigurationError, match="base_url"):
        AsyncGrokImagine(api_key=TOKEN, base_url="ftp://x", limiter=RecordingLimiter())
    with pytest.raises(ConfigurationError, match="on_ambiguous_submit"):
        AsyncGrokImagine(
            api_key=TOKEN,
            limiter=RecordingLimiter(),
            on_ambiguous_submit="maybe",  # type: ignore[arg-type]
        )


def test_token_not_in_repr() -> None:
    client = AsyncGrokImagine(api_key=TOKEN, base_url=BASE, limiter=RecordingLimiter())
    assert TOKEN not in repr(client)
    assert TOKEN not in str(vars(client).get("_http"))


@pytest.mark.anyio
async def test_supplied_http_client_is_not_closed() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(Script()))
    async with AsyncGrokImagine(
        api_key=TOKEN, base_url=BASE, http_client=http, limiter=RecordingLimiter()
    ):
        pass
    assert not http.is_closed
    await http.aclose()


@pytest.mark.anyio
async def test_owned_http_client_is_closed() -> None:
    client = AsyncGrokImagine(api_key=TOKEN, base_url=BASE, limiter=RecordingLimiter())
    async with client:
        pass
    assert client._http.is_closed


# -- generate --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_generate_sends_documented_body_with_bearer_token() -> None:
    script = Script(ok({"task_id": "task_123"}))
    client, limiter = make_client(script)
    task_id = await client.generate("a fox", mode="fun", ratio="2:3", images="https://x.test/a.png")
    assert task_id == "task_123"
    [request] = script.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/v1/generate"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert script.bodies() == [
        {"mode": "fun", "prompt": "a fox", "ratio": "2:3", "images": ["https://x.test/a.png"]}
    ]
    assert limiter.granted == [Priority.SUBMIT]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"prompt": "   "}, "prompt must not be empty"),
        ({"prompt": "x", "mode": "wild"}, "unknown mode 'wild'"),
        ({"prompt": "x", "ratio": "16:9"}, "unknown ratio '16:9'"),
        ({"prompt": "x", "images": ["file:///etc/passwd"]}, "http(s) URL"),
        ({"prompt": "x", "mode": "spicy", "images": ["https://a.test/i.png"]}, "spicy"),
    ],
)
async def test_invalid_input_raises_before_any_request(kwargs: dict[str, Any], needle: str) -> None:
    script = Script()
    client, limiter = make_client(script)
    with pytest.raises(InvalidRequestError) as info:
        await client.generate(**kwargs)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)
    assert script.requests == []
    assert limiter.granted == []


@pytest.mark.anyio
async def test_unlisted_ratio_allowed_on_opt_in() -> None:
    script = Script(ok({"task_id": "t"}))
    client, _ = make_client(script)
    await client.generate("x", ratio="16:9", allow_unlisted=True)
    assert script.bodies()[0]["ratio"] == "16:9"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        error(429, "RATE_LIMITED", "slow down", **{"Retry-After": "2"}),
        error(500, "SERVER_ERROR", "boom"),
        httpx.Response(200, json={"code": 500, "message": "busy", "error": "SERVER_ERROR"}),
    ],
    ids=["connect-error", "connect-timeout", "429", "500-error-body", "200-body-code-500"],
)
async def test_post_retried_when_server_provably_started_nothing(answer: Any) -> None:
    script = Script(answer, ok({"task_id": "task_9"}))
    client, _ = make_client(script)
    assert await client.generate("x") == "task_9"
    assert len(script.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(200, text="not json"),
        ok({"no_task_id": True}),
    ],
    ids=["read-timeout", "dropped", "read-error", "502-no-error-body", "200-not-json", "no-id"],
)
async def test_post_with_lost_answer_is_ambiguous_and_never_resent(answer: Any) -> None:
    script = Script(answer)
    client, _ = make_client(script)
    with pytest.raises(AmbiguousSubmitError) as info:
        await client.generate("an expensive video")
    assert len(script.requests) == 1
    assert info.value.request is not None
    assert info.value.request.prompt == "an expensive video"


@pytest.mark.anyio
async def test_resubmit_policy_resends_a_lost_post() -> None:
    script = Script(httpx.ReadTimeout("no answer"), ok({"task_id": "t2"}))
    client, _ = make_client(script, on_ambiguous_submit="resubmit")
    assert await client.generate("x") == "t2"
    assert len(script.requests) == 2


@pytest.mark.anyio
async def test_bad_request_is_not_retried() -> None:
    script = Script(
        error(400, "INVALID_REQUEST", "Invalid request: The prompt parameter is required")
    )
    client, _ = make_client(script)
    with pytest.raises(BadRequestError) as info:
        await client.generate("x")
    assert info.value.status_code == 400
    assert info.value.error_code == "INVALID_REQUEST"
    assert "prompt parameter is required" in str(info.value)
    assert len(script.requests) == 1


@pytest.mark.anyio
async def test_error_in_body_of_http_200_raises_matching_class() -> None:
    body = {"code": 401, "message": "bad token", "error": "UNAUTHORIZED"}
    script = Script(httpx.Response(200, json=body))
    client, _ = make_client(script)
    with pytest.raises(AuthenticationError) as info:
        await client.get_task("task_1")
    assert info.value.http_status == 200
    assert info.value.status_code == 401


# -- get_task ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_task_parses_documented_answer() -> None:
    script = Script(ok(task_data()))
    client, limiter = make_client(script)
    task = await client.get_task("task_1")
    assert task.status is TaskStatus.COMPLETED
    assert task.videos == ("https://cdn.test/v/1.mp4", "https://cdn.test/v/2.mp4")
    assert task.consumed_credits == 40
    assert task.created_at is not None and task.created_at.year == 2024
    assert script.requests[0].url.params["task_id"] == "task_1"
    assert limiter.granted == [Priority.POLL]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("COMPLETED", TaskStatus.COMPLETED),
        ("success", TaskStatus.COMPLETED),
        ("Succeeded", TaskStatus.COMPLETED),
        ("done", TaskStatus.COMPLETED),
        ("fail", TaskStatus.FAILED),
        ("ERROR", TaskStatus.FAILED),
        ("expired", TaskStatus.FAILED),
        ("canceled", TaskStatus.FAILED),
        ("cancelled", TaskStatus.FAILED),
        ("IN_QUEUE", TaskStatus.PENDING),
        ("waiting", TaskStatus.PENDING),
        ("queuing", TaskStatus.PENDING),
        ("submitted", TaskStatus.PENDING),
        ("IN_PROGRESS", TaskStatus.PROCESSING),
        ("generating", TaskStatus.PROCESSING),
        ("running", TaskStatus.PROCESSING),
        ("teleporting", TaskStatus.UNKNOWN),
    ],
)
async def test_status_aliases(raw: str, status: TaskStatus) -> None:
    client, _ = make_client(Script(ok(task_data(raw, response=["https://cdn.test/a.mp4"]))))
    task = await client.get_task("task_1")
    assert task.status is status
    assert task.raw_status == raw


@pytest.mark.anyio
async def test_missing_and_mistyped_optional_fields_do_not_crash() -> None:
    data = {"status": "processing", "consumed_credits": "forty", "created_at": 12, "request": []}
    client, _ = make_client(Script(ok(data)))
    task = await client.get_task("task_7")
    assert task.task_id == "task_7"
    assert task.consumed_credits is None
    assert task.request is None
    assert task.videos == ()
    assert task.error_message is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>oops</html>"),
        httpx.Response(200, json=[1, 2, 3]),
        ok(None),
        ok({"task_id": "task_1"}),
        ok("completed"),
    ],
    ids=["html", "json-list", "null-data", "no-status", "string-data"],
)
async def test_malformed_status_answers_raise_api_error_after_retries(answer: Any) -> None:
    script = Script(answer, answer, answer, answer)
    client, _ = make_client(script)
    with pytest.raises(APIResponseValidationError):
        await client.get_task("task_1")


@pytest.mark.anyio
async def test_unknown_task_is_not_found_and_not_retried() -> None:
    script = Script(error(404, "NOT_FOUND", "task not found"))
    client, _ = make_client(script)
    with pytest.raises(NotFoundError):
        await client.get_task("nope")
    assert len(script.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fault",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        error(500, "SERVER_ERROR", "boom"),
        error(503, "SERVER_ERROR", "busy"),
        error(429, "RATE_LIMITED", "slow down"),
    ],
    ids=["timeout", "dropped", "500", "503", "429"],
)
async def test_status_retried_on_any_transient_fault(fault: Any) -> None:
    script = Script(fault, ok(task_data()))
    client, _ = make_client(script)
    assert (await client.get_task("task_1")).status is TaskStatus.COMPLETED
    assert len(script.requests) == 2


@pytest.mark.anyio
async def test_retries_are_bounded_and_raise_the_last_error() -> None:
    script = Script(*[error(500, "SERVER_ERROR", "down")] * 4)
    client, _ = make_client(script)
    with pytest.raises(ServerError) as info:
        await client.get_task("task_1")
    assert info.value.status_code == 500
    assert len(script.requests) == 4  # 1 + 3 retries


async def _time_to_give_up(rng: random.Random | None) -> float:
    script = Script(*[error(500, "SERVER_ERROR", "down")] * 4)
    client, _ = make_client(script, rng=rng)
    start = anyio.current_time()
    with pytest.raises(ServerError):
        await client.get_task("task_1")
    return anyio.current_time() - start


@pytest.mark.anyio
async def test_a_seeded_rng_makes_the_retry_waits_reproducible() -> None:
    first = await _time_to_give_up(random.Random(7))
    again = await _time_to_give_up(random.Random(7))
    other = await _time_to_give_up(random.Random(8))
    # The same jitter; the clock's floats, read at different times, may differ in the last bit.
    assert first == pytest.approx(again, abs=1e-9)
    assert abs(first - other) > 0.01  # the waits do come from the rng given


@pytest.mark.anyio
async def test_zero_retry_attempts_disables_retrying() -> None:
    script = Script(httpx.ReadTimeout("slow"))
    client, _ = make_client(script, retry=RetryPolicy(attempts=0))
    with pytest.raises(APITimeoutError):
        await client.get_task("task_1")
    assert len(script.requests) == 1


@pytest.mark.anyio
async def test_connection_error_class_after_retries() -> None:
    script = Script(*[httpx.ConnectError("refused")] * 4)
    client, _ = make_client(script)
    with pytest.raises(APIConnectionError):
        await client.get_task("task_1")


@pytest.mark.anyio
async def test_429_retry_waits_for_retry_after() -> None:
    script = Script(error(429, "RATE_LIMITED", "slow", **{"Retry-After": "7"}), ok(task_data()))
    client, _ = make_client(script)
    start = anyio.current_time()
    await client.get_task("task_1")
    assert anyio.current_time() - start >= 7.0 - 1e-6  # float rounding of start + 7


@pytest.mark.anyio
async def test_a_429s_retry_after_is_its_retry_after_header_before_the_reset() -> None:
    answer = error(429, "RATE_LIMITED", "slow", **{"Retry-After": "4", "X-RateLimit-Reset": "9"})
    client, _ = make_client(Script(answer), retry=RetryPolicy(attempts=0))
    with pytest.raises(RateLimitError) as info:
        await client.get_task("task_1")
    assert info.value.retry_after == pytest.approx(4.0)


@pytest.mark.anyio
async def test_429_after_retries_carries_retry_after() -> None:
    answer = error(429, "RATE_LIMITED", "slow", **{"X-RateLimit-Reset": "12"})
    client, _ = make_client(
        Script(answer, answer), retry=dataclasses.replace(FAST_RETRY, attempts=1)
    )
    with pytest.raises(RateLimitError) as info:
        await client.get_task("task_1")
    assert info.value.retry_after == pytest.approx(12.0)


@pytest.mark.anyio
async def test_rate_limit_headers_reach_the_limiter() -> None:
    headers = {"X-RateLimit-Remaining": "42", "X-RateLimit-Reset": "17"}
    client, limiter = make_client(Script(ok(task_data(), headers=headers)))
    await client.get_task("task_1")
    [feedback] = limiter.feedback
    assert feedback.remaining == 42
    assert feedback.reset_after == pytest.approx(17.0)
    assert feedback.status_code == 200


# -- wait ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wait_polls_until_completed_on_the_policy_schedule() -> None:
    running = [ok(task_data("pending"))] + [ok(task_data("processing"))] * 3
    script = Script(*running, ok(task_data()))
    client, _ = make_client(script)
    policy = PollPolicy(wait_initial=1.0, wait_factor=2.0, wait_max=10.0, wait_jitter=0.0)
    start = anyio.current_time()
    task = await client.wait("task_1", poll=policy)
    assert task.succeeded
    # At once, then max(1 s, (2 - 1) x the time waited): at 0, 1, 2, 4 and 8 s.
    assert anyio.current_time() - start == pytest.approx(8.0)
    assert len(script.requests) == 5


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("message", "failure_class"),
    [
        ("Inappropriate content, please try another prompt.", FailureClass.CONTENT_POLICY),
        ("File type not supported", FailureClass.INVALID_INPUT),
        ("Network error, please try again later.", FailureClass.TRANSIENT),
        ("grok imagine build failed", FailureClass.GENERATION_FAILED),
        ("the moon is in the wrong phase", FailureClass.UNKNOWN),
    ],
)
async def test_wait_raises_task_failed_with_class(
    message: str, failure_class: FailureClass
) -> None:
    client, _ = make_client(Script(ok(task_data("failed", error_message=message))))
    with pytest.raises(TaskFailedError) as info:
        await client.wait("task_1")
    assert info.value.failure_class is failure_class
    assert info.value.task.error_message == message


@pytest.mark.anyio
async def test_completed_without_video_is_a_failure() -> None:
    client, _ = make_client(Script(ok(task_data("completed", response=None))))
    with pytest.raises(TaskFailedError) as info:
        await client.wait("task_1")
    assert info.value.failure_class is FailureClass.NO_RESULT


@pytest.mark.anyio
async def test_cancelled_wait_leaves_nothing_running() -> None:
    script = Script(*[ok(task_data("processing"))] * 50)
    client, _ = make_client(script)
    policy = PollPolicy(wait_initial=1.0, wait_factor=1.0, wait_max=1.0, wait_jitter=0.0)
    with pytest.raises(TimeoutError):
        with anyio.fail_after(10.5):
            await client.wait("task_1", poll=policy)
    sent = len(script.requests)
    assert sent == 11
    await anyio.sleep(100)  # virtual: if a poller survived, it would have sent ~100 more
    assert len(script.requests) == sent


@pytest.mark.anyio
async def test_wait_timeout_carries_the_task_and_its_last_status() -> None:
    script = Script(ok(task_data("pending")), *[ok(task_data("processing"))] * 50)
    client, _ = make_client(script)
    policy = PollPolicy(wait_initial=1.0, wait_factor=1.0, wait_max=1.0, wait_jitter=0.0)
    start = anyio.current_time()
    with pytest.raises(WaitTimeoutError) as info:
        await client.wait("task_1", poll=policy, timeout=5.5)
    assert anyio.current_time() - start == pytest.approx(5.5)
    error = info.value
    assert isinstance(error, TimeoutError)  # ``except TimeoutError`` catches it too
    assert (error.task_id, error.last_status, error.timeout) == (
        "task_1",
        TaskStatus.PROCESSING,
        5.5,
    )
    assert "task_1" in str(error) and "processing" in str(error)
    sent = len(script.requests)
    assert sent == 6  # at 0, 1, 2, 3, 4 and 5 s
    await anyio.sleep(100)  # virtual: nothing polls on after the deadline
    assert len(script.requests) == sent


# The plugin's emulator and client at the real service's times, on the suite's virtual clock.
AT_REAL_TIMES = pytest.mark.grok_emulator(tokens={TOKEN: "pro"}, seed=3, time_scale=1)


@pytest.mark.anyio
@AT_REAL_TIMES
async def test_generate_and_wait_deadline_pays_once_and_a_later_wait_picks_it_up(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    start = anyio.current_time()
    with pytest.raises(WaitTimeoutError) as info:
        await grok_client.generate_and_wait("a slow heron [duration:40]", timeout=10)
    assert anyio.current_time() - start == pytest.approx(10, abs=0.5)
    task_id = info.value.task_id
    assert task_id is not None
    assert info.value.last_status is TaskStatus.PROCESSING
    assert grok_emulator.statistics().tasks_created == 1
    await anyio.sleep(5)  # nothing was left running: no poll, no resubmission
    assert grok_emulator.statistics().tasks_created == 1
    task = await grok_client.wait(task_id)
    assert task.succeeded and task.task_id == task_id
    assert 40 <= anyio.current_time() - start < 45
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
@AT_REAL_TIMES
async def test_a_job_wait_deadline_leaves_the_job_running_in_the_scheduler(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    async with JobScheduler(grok_client) as scheduler:
        job = await scheduler.submit("a slow heron [duration:40]")
        with pytest.raises(WaitTimeoutError) as info:
            await job.wait(timeout=10)
        assert info.value.task_id == job.task_id is not None
        assert info.value.last_status is JobState.RUNNING
        assert job.status is JobState.RUNNING
        task = await job.wait()
        assert task.succeeded and task.task_id == info.value.task_id
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
@AT_REAL_TIMES
async def test_a_deadline_shorter_than_the_submission_still_names_the_task(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    # The POST is never cut (its task id would be lost); the deadline is met right after.
    with pytest.raises(WaitTimeoutError) as info:
        await grok_client.generate_and_wait("a heron [duration:5]", timeout=0)
    assert info.value.task_id is not None and info.value.last_status is None
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
async def test_generate_and_wait() -> None:
    script = Script(ok({"task_id": "task_1"}), ok(task_data()))
    client, _ = make_client(script)
    task = await client.generate_and_wait("x", poll=PollPolicy(wait_initial=1.0, wait_jitter=0.0))
    assert task.task_id == "task_1"
    assert [r.method for r in script.requests] == ["POST", "GET"]


@pytest.mark.anyio
async def test_submit_and_get_task_refuse_a_bad_argument_before_sending() -> None:
    script = Script(ok({"task_id": "t"}))
    client, _ = make_client(script)
    assert await client.submit(GenerationRequest(prompt="hello")) == "t"
    with pytest.raises(TypeError):  # the wrong kind of object: Python's convention
        await client.submit("hello")  # type: ignore[arg-type]
    for blank in ("", "  "):  # a bad value: in the tree, and still a ValueError
        with pytest.raises(ConfigurationError, match="task_id"):
            await client.get_task(blank)
    assert len(script.requests) == 1


# -- secrecy -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_token_never_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"code": 401, "message": f"token {TOKEN} is revoked", "error": "UNAUTHORIZED"}
    script = Script(error(500, "SERVER_ERROR", "x"), httpx.Response(401, json=echo))
    client, _ = make_client(script)
    with pytest.raises(AuthenticationError) as info:
        await client.get_task("task_1")
    exc = info.value
    for text in (str(exc), repr(exc), repr(exc.body), repr(exc.args), caplog.text):
        assert TOKEN not in text
    assert "***" in str(exc)
