"""What the emulated server remembers and reports: its tasks and statistics (no extra needed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._models import TaskStatus

STATES = (TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Task:
    """One generation: pending for ``queued_for`` seconds, processing until ``duration``, then
    failed with ``error_message`` or completed with ``video_count`` videos (``free``: a failure
    not charged). Times are on the emulator's monotonic clock."""

    task_id: str
    token: str
    request: Mapping[str, Any]
    created_at: float
    queued_for: float
    duration: float
    error_message: str | None
    video_count: int = 2
    free: bool = False

    @property
    def ends_at(self) -> float:
        """Clock time of the final state."""
        return self.created_at + self.duration

    def state(self, now: float) -> TaskStatus:
        """The state at clock time ``now``, one of :data:`STATES`."""
        elapsed = now - self.created_at
        if elapsed < self.queued_for:
            return TaskStatus.PENDING
        if elapsed < self.duration:
            return TaskStatus.PROCESSING
        return TaskStatus.COMPLETED if self.error_message is None else TaskStatus.FAILED


@dataclass(frozen=True)
class EmulatorStatistics:
    """A snapshot of the emulator's counters (from :meth:`Emulator.statistics`).

    Attributes:
        requests_total: Requests received on ``/v1/*``, whatever their answer.
        requests_by_endpoint: Requests by ``"METHOD /path"`` (``"GET /videos"`` included).
        responses_by_status: Answers sent on ``/v1/*`` by HTTP status (dropped ones excluded).
        rate_limited: HTTP 429 answers sent.
        unauthorized: HTTP 401 answers sent.
        invalid_requests: HTTP 400 answers sent.
        not_found: HTTP 404 answers sent on ``/v1/*``.
        server_errors: Injected HTTP 500 answers.
        body_errors: Injected HTTP 200 answers carrying an error ``code``.
        dropped: Connections closed without an answer.
        slow: Answers delayed on purpose.
        posts_per_prompt: ``POST /v1/generate`` requests per prompt, past auth and quota.
        tasks_per_prompt: Tasks created per prompt, i.e. generations paid for.
        duplicate_submissions: Prompts paid for again while an earlier task of theirs had
            not failed, with the times paid in all.
        tasks_created: Tasks created.
        credits_consumed: Credits charged (40 per task, at creation).
        tasks_by_state: Tasks by state now (pending, processing, completed, failed).
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
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {
            name: {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value
            for name, value in data.items()
        }
