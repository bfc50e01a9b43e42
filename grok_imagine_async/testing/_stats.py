"""What the emulator saw and did, for tests and benchmarks to assert on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any


def frozen_mapping(items: Mapping[Any, int]) -> Mapping[Any, int]:
    """A read-only copy, so a snapshot cannot change after it was taken."""
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class EmulatorStatistics:
    """A snapshot of the emulator's counters (from :meth:`Emulator.statistics`).

    Attributes:
        requests_total: Requests received on ``/v1/*``, whatever their answer.
        requests_by_endpoint: Requests by ``"METHOD /path"`` (``"POST /v1/generate"``,
            ``"GET /v1/status"``, ``"GET /videos"``, unknown ``/v1`` paths as sent).
        responses_by_status: Answers sent on ``/v1/*`` by HTTP status (dropped ones excluded).
        rate_limited: HTTP 429 answers sent.
        unauthorized: HTTP 401 answers sent.
        invalid_requests: HTTP 400 answers sent.
        not_found: HTTP 404 answers sent on ``/v1/*`` (unknown task ids and paths).
        server_errors: Injected HTTP 500 answers.
        body_errors: Injected HTTP 200 answers carrying an error ``code``.
        dropped: Connections closed without an answer.
        slow: Answers delayed on purpose.
        posts_per_prompt: ``POST /v1/generate`` requests per prompt that passed authentication
            and the rate limit, whatever happened next (retries after a 500 count here).
        tasks_per_prompt: Tasks created per prompt, i.e. generations paid for.
        duplicate_submissions: Prompts paid for twice without being asked: tasks created while
            an earlier task of the same prompt ran or after it completed, with how many. A
            resubmission once the earlier task failed (a transient failure retried) is not
            one; a prompt sent twice on purpose is.
        tasks_created: Tasks created.
        credits_consumed: Credits charged (40 per task, charged at creation).
        tasks_by_state: Tasks by state at snapshot time, keyed ``pending``, ``processing``,
            ``completed``, ``failed`` whatever vocabulary the server speaks.
        videos_served: Result videos downloaded.
    """

    requests_total: int
    requests_by_endpoint: Mapping[str, int]
    responses_by_status: Mapping[int, int]
    rate_limited: int
    unauthorized: int
    invalid_requests: int
    not_found: int
    server_errors: int
    body_errors: int
    dropped: int
    slow: int
    posts_per_prompt: Mapping[str, int]
    tasks_per_prompt: Mapping[str, int]
    duplicate_submissions: Mapping[str, int]
    tasks_created: int
    credits_consumed: int
    tasks_by_state: Mapping[str, int]
    videos_served: int

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready data (what ``GET /_emulator/stats`` returns)."""
        data: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            data[field.name] = (
                {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value
            )
        return data
