"""The pure parts of the FastAPI integration: exception -> HTTP answer, and the SSE format."""

from __future__ import annotations

import json
import math

import pytest
from fastapi import FastAPI

from grok_imagine_async import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    GenerationRequest,
    GrokImagineError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    RateLimitError,
    SchedulerClosedError,
    ServerError,
    Task,
    TaskFailedError,
    TaskStatus,
    WaitTimeoutError,
)
from grok_imagine_async._journal.memory import MemoryJobStore
from grok_imagine_async.fastapi import (
    BacklogFullError,
    BodyLimitMiddleware,
    HTTPProblem,
    JobRegistry,
    error_responses,
    event_stream_response,
    http_error_for,
    sse_event,
)

SECRET = "sk-live-0d4b-secret"


def failed_task(message: str | None, status: TaskStatus = TaskStatus.FAILED) -> TaskFailedError:
    return TaskFailedError(
        Task(task_id="task_1", status=status, raw_status=status.value, error_message=message)
    )


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidRequestError("invalid generation request: prompt: empty"), 422, "invalid_request"),
        (BadRequestError("bad", status_code=400), 422, "rejected_by_upstream"),
        (failed_task("Inappropriate content, please try another prompt."), 422, "content_policy"),
        (failed_task("File type not supported"), 422, "invalid_input"),
        (failed_task("Network error, please try again later."), 502, "transient"),
        (failed_task("grok imagine build failed"), 502, "generation_failed"),
        (failed_task("Something odd"), 502, "unknown"),
        (failed_task(None, TaskStatus.COMPLETED), 502, "no_result"),
        (BudgetExceededError(max_credits=80, committed_credits=80), 402, "budget_exceeded"),
        (BacklogFullError(queued=300, retry_after=7.2), 429, "too_many_pending"),
        (
            RateLimitError("slow down", status_code=429, retry_after=12.5),
            503,
            "upstream_rate_limited",
        ),
        (SchedulerClosedError("stopped"), 503, "unavailable"),
        (JournalError("Redis refused to record job x: NOPERM"), 503, "store_unavailable"),
        (APITimeoutError("read timeout"), 504, "upstream_timeout"),
        (WaitTimeoutError("task_1", last_status=None, timeout=20), 504, "not_ready"),
        (AmbiguousSubmitError("lost"), 502, "ambiguous_submit"),
        (AuthenticationError("bad token", status_code=401), 502, "upstream_error"),
        (ServerError("boom", status_code=500), 502, "upstream_error"),
        (NotFoundError("no task", status_code=404), 502, "upstream_error"),
        (APIConnectionError("refused"), 502, "upstream_error"),
        (APIResponseValidationError("not json"), 502, "upstream_error"),
        (ConfigurationError("no API key"), 500, "internal_error"),
        (GrokImagineError("something"), 500, "internal_error"),
        (ZeroDivisionError("a bug"), 500, "internal_error"),
    ],
)
def test_each_exception_has_its_answer(exc: BaseException, status: int, code: str) -> None:
    problem = http_error_for(exc)
    assert (problem.status_code, problem.code) == (status, code)
    assert problem.detail


@pytest.mark.parametrize(
    "options",
    [{"mode": "cinematic"}, {"ratio": "16:9"}, {"ratio": "4:3"}],
)
def test_a_refused_request_tells_the_caller_what_without_python_advice(
    options: dict[str, str],
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        GenerationRequest(prompt="a kite", **options)
    assert "pass allow_unlisted=True" in str(caught.value)  # the library's advice, for Python
    detail = http_error_for(caught.value).detail
    assert "allow_unlisted" not in detail and "pass " not in detail
    for value in options.values():
        assert repr(value) in detail  # still says which value was refused


def test_retry_after_is_given_in_whole_seconds_when_waiting_helps() -> None:
    backlog = http_error_for(BacklogFullError(queued=300, retry_after=7.2))
    upstream = http_error_for(RateLimitError("slow", status_code=429, retry_after=0.2))
    unknown = http_error_for(RateLimitError("slow", status_code=429))
    now = http_error_for(RateLimitError("slow", status_code=429, retry_after=0.0))
    assert backlog.headers == {"Retry-After": "8"}
    assert upstream.headers == {"Retry-After": "1"}
    assert now.headers == {"Retry-After": "1"}  # "Retry-After: 0" upstream is not "unknown"
    assert unknown.headers == {"Retry-After": "60"}
    assert http_error_for(ServerError("x", status_code=500)).headers == {}


@pytest.mark.parametrize(
    "exc",
    [
        ServerError(f"upstream echoed Bearer {SECRET}", status_code=500, body={"t": SECRET}),
        AuthenticationError(f"token {SECRET} revoked", status_code=401),
        APIConnectionError(f"connect to https://x?key={SECRET} failed"),
        AmbiguousSubmitError(f"lost ({SECRET})"),
        ZeroDivisionError(SECRET),
    ],
)
def test_upstream_text_is_never_relayed(exc: BaseException) -> None:
    # Even if some text upstream carried a secret, the caller would not see it.
    assert SECRET not in http_error_for(exc).detail


def test_the_problem_is_a_frozen_value() -> None:
    problem = HTTPProblem(402, "budget_exceeded", "spent")
    with pytest.raises(AttributeError):
        problem.status_code = 200  # type: ignore[misc]


def test_an_event_is_event_id_and_one_data_line() -> None:
    text = sse_event({"status": "running", "note": "two\nlines"}, event="status", event_id="3")
    assert text.endswith("\n\n")
    lines = text[:-2].split("\n")
    assert lines[:2] == ["event: status", "id: 3"]
    assert len(lines) == 3 and lines[2].startswith("data: ")
    assert json.loads(lines[2].removeprefix("data: ")) == {
        "status": "running",
        "note": "two\nlines",
    }


def test_an_event_name_cannot_break_the_framing() -> None:
    text = sse_event(1, event="a\n\ndata: forged")
    assert text == "event: a  data: forged\ndata: 1\n\n"


def test_unicode_is_sent_as_is() -> None:
    assert sse_event({"prompt": "un chat sur un toit à Paris"}) == (
        'data: {"prompt":"un chat sur un toit à Paris"}\n\n'
    )


def test_a_bad_argument_of_the_integration_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="418"):
        error_responses(418)
    with pytest.raises(ConfigurationError, match="max_bytes"):
        BodyLimitMiddleware(FastAPI(), max_bytes=-1)
    with pytest.raises(ConfigurationError, match="max_jobs"):
        JobRegistry(MemoryJobStore(), max_jobs=0)
    jobs = JobRegistry(MemoryJobStore())
    with pytest.raises(ConfigurationError, match="heartbeat"):  # refused before job is read
        event_stream_response(jobs, None, render=dict, heartbeat=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="heartbeat"):  # a NaN passed `<= 0`
        event_stream_response(jobs, None, render=dict, heartbeat=math.nan)  # type: ignore[arg-type]


def test_the_module_exports_are_sorted_importable_and_documented() -> None:
    import grok_imagine_async.fastapi as module

    assert module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        value = getattr(module, name)
        if callable(value) and not name.startswith("Grok"):  # the Annotated aliases aside
            assert (value.__doc__ or "").strip(), name
