"""API.md rules as pure functions: where errors live, failure classes, tolerant parsing."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grok_imagine_async import (
    APIResponseValidationError,
    AuthenticationError,
    BadRequestError,
    FailureClass,
    RateLimitError,
    ServerError,
    TaskStatus,
    _http,
)
from grok_imagine_async._models import classify_error_message
from grok_imagine_async._protocol import (
    _PLAIN_HTTP_URL,
    find_error,
    has_error_body,
    is_fetchable_url,
    normalize_status,
    parse_task,
)


def test_success_has_no_error() -> None:
    assert find_error(200, {"code": 200, "message": "success", "data": {}}) is None
    assert find_error(200, {"data": {}}) is None  # no code at all: trust the HTTP status


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (400, {"code": 400, "message": "m", "error": "INVALID_REQUEST"}, BadRequestError, 400),
        (401, {"code": 401, "message": "m", "error": "UNAUTHORIZED"}, AuthenticationError, 401),
        (429, {"code": 429, "message": "m"}, RateLimitError, 429),
        (500, "<html>", ServerError, 500),
        (503, None, ServerError, 503),
        (200, {"code": 400, "message": "m", "error": "INVALID_REQUEST"}, BadRequestError, 400),
        (200, {"code": "500", "message": "m"}, ServerError, 500),
    ],
)
def test_errors_in_status_or_body(status: int, body: object, cls: type, code: int) -> None:
    err = find_error(status, body, retry_after=3.0)
    assert isinstance(err, cls)
    assert err.status_code == code
    assert err.http_status == status
    assert err.retry_after == 3.0


def test_error_message_and_code_read_from_body() -> None:
    err = find_error(400, {"code": 400, "message": "Invalid request", "error": "INVALID_REQUEST"})
    assert err is not None
    assert (err.message, err.error_code) == ("Invalid request", "INVALID_REQUEST")
    assert str(err) == "400 INVALID_REQUEST: Invalid request"


def test_error_body_detection() -> None:
    assert has_error_body({"code": 500, "message": "x", "error": "SERVER_ERROR"})
    assert has_error_body({"code": 500})
    assert not has_error_body({"code": 200})
    assert not has_error_body("<html>")
    assert not has_error_body(None)


def test_unknown_status_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="grok_imagine_async")
    for _ in range(3):
        assert normalize_status("Hibernating-7") is TaskStatus.UNKNOWN
    assert caplog.text.count("Hibernating-7") == 1
    assert normalize_status(None) is TaskStatus.UNKNOWN


def test_failure_classes() -> None:
    assert classify_error_message("Inappropriate content, please try another prompt.") is (
        FailureClass.CONTENT_POLICY
    )
    assert classify_error_message(None) is FailureClass.UNKNOWN


def test_parse_task_rejects_non_objects_clearly() -> None:
    with pytest.raises(APIResponseValidationError, match="no 'data' object"):
        parse_task(["x"], task_id="t")
    with pytest.raises(APIResponseValidationError, match="no 'status'"):
        parse_task({"status": "  "}, task_id="t")


def test_parse_task_tolerates_odd_shapes() -> None:
    task = parse_task(
        {"status": "done", "response": "https://cdn.test/one.mp4", "consumed_credits": 40.0},
        task_id="t",
    )
    assert task.videos == ("https://cdn.test/one.mp4",)
    assert task.consumed_credits == 40
    weird = parse_task({"status": "done", "response": [None, 3, " https://x/a.mp4 "]}, task_id="t")
    assert weird.videos == ("https://x/a.mp4",)


def parses_as_fetchable(url: str) -> bool:
    """What every installed HTTP library says of ``url`` (the slow, sure way)."""
    for family in _http.FAMILIES:
        try:
            parsed = family.URL(url)
        except _http.BadURL:
            return False
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return False
    return True


@given(st.from_regex(_PLAIN_HTTP_URL, fullmatch=True))
def test_a_url_the_quick_look_accepts_parses_in_every_library(url: str) -> None:
    assert parses_as_fetchable(url)


@pytest.mark.parametrize(
    ("url", "fetchable"),
    [
        ("https://cdn.example.com/generated/video1.mp4?sig=a%2Fb&x=1#t", True),
        ("HTTP://CDN.EXAMPLE.COM:8443/v.mp4", True),
        ("http://127.0.0.1:9/v.mp4", True),  # no letter in the host: parsed
        ("http://[::1]/v.mp4", True),
        ("https://bücher.example/v.mp4", True),
        ("http://999.1.1.1/v.mp4", False),
        ("http://[::1/v.mp4", False),
        ("https://cdn.example.com:x/v.mp4", False),
        ("https://cdn.example.com/a b.mp4", False),  # httpx would quote the space: ours refuses
        ("ftp://cdn.example.com/v.mp4", False),
        ("https:///v.mp4", False),
        ("https://cdn.example.com" + "/v" * 40_000, False),  # longer than any URL httpx takes
    ],
)
def test_fetchable_urls(url: str, fetchable: bool) -> None:
    assert is_fetchable_url(url) is fetchable
