"""Test doubles for seams defined as Protocols (never patches of the package's own code)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from hypothesis import settings

from grok_imagine_async import RateLimit
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx
from grok_imagine_async.abc import LimiterStatistics, Permit, Priority, RateLimitFeedback

TOKEN = "sk-test-SECRET-token-0123456789"


def examples(count: int) -> int:
    """A property test's Hypothesis examples: ``count`` under the default profile (100 a
    test), scaled to the loaded one (nox's ``quick`` profile on the Pythons that do not run
    the whole suite: a quarter; the one that does runs them all)."""
    return max(10, count * settings.default.max_examples // 100)


class RecordingLimiter:
    """A RateLimiter that grants at once and records what it was told."""

    def __init__(self) -> None:
        self.limit = RateLimit(1_000_000, 60.0)
        self.granted: list[Priority] = []
        self.feedback: list[RateLimitFeedback] = []
        self.given_back: list[Permit] = []

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        self.granted.append(priority)
        return Permit(granted_at=anyio.current_time(), serial=len(self.granted))

    async def observe(self, feedback: RateLimitFeedback) -> None:
        self.feedback.append(feedback)

    def give_back(self, permit: Permit) -> None:
        self.given_back.append(permit)

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            limit=self.limit,
            permits_granted=len(self.granted),
            waiting=0,
            total_wait_time=0.0,
            server_pauses=0,
            rate_limited_responses=sum(f.status_code == 429 for f in self.feedback),
            paused_until=None,
            stalled_for=0.0,
        )


def ok(data: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200, json={"code": 200, "message": "success", "data": data}, headers=headers
    )


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"code": status, "message": message, "error": code}, headers=headers
    )


def task_data(status: str = "completed", **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "consumed_credits": 40,
        "created_at": "2024-01-01T00:00:00Z",
        "status": status,
        "task_id": "task_1",
        "error_message": None,
        "request": {"mode": "normal", "prompt": "p", "ratio": "1:1"},
        "response": ["https://cdn.test/v/1.mp4", "https://cdn.test/v/2.mp4"]
        if status == "completed"
        else [],
    }
    data.update(fields)
    return data


class Script:
    """A MockTransport handler answering from a list of responses or exceptions, in order."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], Any]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected extra request {request.method} {request.url}")
        answer = self.answers.pop(0)
        if callable(answer) and not hasattr(answer, "status_code"):  # a Response of either family
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        assert hasattr(answer, "status_code")
        return answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]
