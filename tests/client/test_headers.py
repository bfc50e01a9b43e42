"""Pure parsing of the rate-limit headers (API.md rule 4)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grok_imagine_async._protocol import (
    parse_remaining,
    parse_reset,
    parse_retry_after,
    read_rate_limit_headers,
)
from grok_imagine_async.abc import Permit

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", 42),
        (" 7 ", 7),
        ("0", 0),
        ("-3", 0),
        ("12.0", 12),
        ("", None),
        ("x", None),
        (None, None),
    ],
)
def test_remaining(value: str | None, expected: int | None) -> None:
    assert parse_remaining(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("0.5", 0.5),
        (str(NOW + 45), 45.0),  # a Unix time
        (str(int(NOW) - 10), 0.0),  # a Unix time already past
        ("1000000001", 0.0),  # above 10**9 is always an epoch (long past here)
        ("-5", 0.0),
        ("nan", None),
        ("soon", None),
        (None, None),
    ],
)
def test_reset_both_formats(value: str | None, expected: float | None) -> None:
    assert parse_reset(value, now_unix=NOW) == expected


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("5", now_unix=NOW) == 5.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:00 GMT", now_unix=NOW) == 40.0
    assert parse_retry_after("Tue, 14 Nov 2000 22:14:00 GMT", now_unix=NOW) == 0.0
    assert parse_retry_after("whenever", now_unix=NOW) is None
    assert parse_retry_after(None, now_unix=NOW) is None


def test_read_headers_is_case_insensitive() -> None:
    headers = httpx.Headers(
        {"x-ratelimit-remaining": "3", "X-RATELIMIT-RESET": "9", "retry-after": "4"}
    )
    permit = Permit(granted_at=0.0, serial=1)
    limits = read_rate_limit_headers(headers, permit=permit, status_code=429, now_unix=NOW)
    assert (limits.remaining, limits.reset_after, limits.retry_after) == (3, 9.0, 4.0)
    assert (limits.permit, limits.status_code) == (permit, 429)


@given(st.floats(min_value=0, max_value=86_400, allow_nan=False))
def test_seconds_and_epoch_forms_agree(seconds: float) -> None:
    as_delta = parse_reset(repr(seconds), now_unix=NOW)
    as_epoch = parse_reset(repr(NOW + seconds), now_unix=NOW)
    assert as_delta is not None and as_epoch is not None
    assert as_delta == pytest.approx(as_epoch, abs=1e-3)
