"""Validation of generation requests and the plan/limit value objects."""

from __future__ import annotations

import pydantic
import pytest

from grok_imagine_async import (
    ConfigurationError,
    FailureClass,
    GenerationRequest,
    GrokImagineError,
    InvalidRequestError,
    Plan,
    RateLimit,
    Task,
    TaskStatus,
)
from grok_imagine_async._limiting.plans import resolve_rate_limit


def test_payload_is_the_documented_body() -> None:
    request = GenerationRequest(prompt="  a cat  ", mode="FUN", images=["https://x.test/a.png"])
    assert request.payload() == {
        "mode": "fun",
        "prompt": "a cat",
        "ratio": "1:1",
        "images": ["https://x.test/a.png"],
    }
    assert "images" not in GenerationRequest(prompt="a").payload()
    assert "allow_unlisted" not in GenerationRequest(prompt="a", allow_unlisted=True).payload()


def test_single_image_string_becomes_a_list() -> None:
    assert GenerationRequest(prompt="a", images="https://x.test/a.png").images == (
        "https://x.test/a.png",
    )


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"prompt": ""}, "prompt must not be empty"),
        ({"prompt": "a", "mode": "weird"}, "unknown mode"),
        ({"prompt": "a", "ratio": "4:3"}, "unknown ratio"),
        ({"prompt": "a", "ratio": "wide", "allow_unlisted": True}, "must look like 'W:H'"),
        ({"prompt": "a", "mode": "no spaces!", "allow_unlisted": True}, "plausible mode"),
        ({"prompt": "a", "images": ["example.com/a.png"]}, "absolute http\\(s\\) URL"),
        ({"prompt": "a", "images": ["javascript:alert(1)"]}, "absolute http\\(s\\) URL"),
        ({"prompt": "a", "images": ["http://exa mple.test/x"]}, "spaces or control"),
        ({"prompt": "a", "images": ["https://:443/a.png"]}, "absolute http\\(s\\) URL with a host"),
        ({"prompt": "a", "images": ["https://a.test:99999/a.png"]}, "not a valid URL"),
        ({"prompt": "a", "images": ["https://a.test/x\x00.png"]}, "spaces or control"),
        ({"prompt": "a", "mode": "spicy", "images": ["https://a.test/x.png"]}, "spicy"),
        ({"prompt": "a", "colour": "red"}, "Extra inputs"),
    ],
)
def test_invalid_requests_are_value_errors_naming_the_problem(
    fields: dict[str, object], needle: str
) -> None:
    with pytest.raises(InvalidRequestError, match=needle) as info:
        GenerationRequest(**fields)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_opt_in_lets_reseller_ratios_through() -> None:
    request = GenerationRequest(prompt="a", ratio="9:16", mode="custom", allow_unlisted=True)
    assert (request.ratio, request.mode) == ("9:16", "custom")


def test_an_invalid_request_lists_every_problem_in_the_tree() -> None:
    with pytest.raises(GrokImagineError) as info:
        GenerationRequest(prompt="", images=["example.com/a.png"])
    assert isinstance(info.value, InvalidRequestError)
    assert [p.split(":")[0] for p in info.value.problems] == ["prompt", "images"]


def test_requests_are_frozen_and_hashable() -> None:
    request = GenerationRequest(prompt="a")
    with pytest.raises(pydantic.ValidationError):
        request.prompt = "b"  # type: ignore[misc]
    assert hash(request) == hash(GenerationRequest(prompt="a"))


def test_plans() -> None:
    assert [p.requests_per_minute for p in Plan] == [100, 1000, 5000]
    assert Plan.parse(" PRO ") is Plan.PRO
    assert resolve_rate_limit("enterprise") == RateLimit(5000, 60.0)
    assert resolve_rate_limit(RateLimit(10, 1.0)) == RateLimit(10, 1.0)
    with pytest.raises(ConfigurationError, match="unknown plan 'gold'"):
        Plan.parse("gold")


@pytest.mark.parametrize(("requests", "period"), [(0, 60.0), (-1, 60.0), (10, 0.0), (10, -1.0)])
def test_rate_limit_must_be_positive(requests: int, period: float) -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        RateLimit(requests, period)


def test_task_failure_class_only_for_failures() -> None:
    running = Task(task_id="t", status=TaskStatus.PROCESSING, raw_status="processing")
    assert running.failure_class is None and not running.is_terminal
    done = Task(task_id="t", status=TaskStatus.COMPLETED, raw_status="done", videos=("u",))
    assert done.failure_class is None and done.succeeded
    empty = Task(task_id="t", status=TaskStatus.COMPLETED, raw_status="done")
    assert empty.failure_class is FailureClass.NO_RESULT and not empty.succeeded


def test_a_problem_of_the_whole_request_is_not_labelled_request_twice() -> None:
    # "invalid generation request: request: unknown ratio ..." reached the CLI and a FastAPI 422.
    with pytest.raises(InvalidRequestError) as info:
        GenerationRequest(prompt="a", ratio="16:9")
    assert str(info.value).startswith("invalid generation request: unknown ratio '16:9'")
    assert info.value.problems[0].startswith("unknown ratio")
