"""Custom quotas written as text, and how a time scale applies to plans and quotas."""

from __future__ import annotations

import pytest

from grok_imagine_async import ConfigurationError, RateLimit
from grok_imagine_async._limiting.plans import resolve_rate_limit


@pytest.mark.parametrize(
    ("text", "requests", "period"),
    [
        ("100/6s", 100, 6.0),
        ("2000/min", 2000, 60.0),
        ("100 / 1.5 min", 100, 90.0),
        ("5000/1h", 5000, 3600.0),
        ("100/60", 100, 60.0),
        ("10/.5S", 10, 0.5),
        ("7/2 seconds", 7, 2.0),
        ("300/minute", 300, 60.0),
    ],
)
def test_quota_text_is_read(text: str, requests: int, period: float) -> None:
    assert RateLimit.parse(text) == RateLimit(requests, period)
    assert resolve_rate_limit(text) == RateLimit(requests, period)


@pytest.mark.parametrize("text", ["100", "100/", "/6s", "100/6x", "-1/6s", "1.5/6s", "100/6s/2"])
def test_what_is_not_a_quota_is_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"not a quota.*REQUESTS/PERIOD"):
        RateLimit.parse(text)


@pytest.mark.parametrize("text", ["0/6s", "100/0s"])
def test_a_quota_must_be_positive(text: str) -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        RateLimit.parse(text)


def test_text_round_trips() -> None:
    for limit in (RateLimit(100, 6.0), RateLimit(1000, 0.6), RateLimit(7, 3600.0)):
        assert RateLimit.parse(limit.text) == limit
    assert RateLimit(100, 6.0).text == "100/6s"


def test_unknown_names_mention_both_forms() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown plan 'gold'.*quota"):
        resolve_rate_limit("gold")
