"""A generation task's life on the emulated server: durations, states, status vocabulary.

A task never runs anything: its state is a function of the clock, computed when read
(pending for the first ``queue_fraction`` of its duration, then processing, then completed or
failed as decided at creation). That keeps 100,000 tasks as cheap as 100,000 small records.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class TaskState(enum.Enum):
    """Where a task is in its life, independent of the words the server uses for it."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The words the emulated server writes in ``status`` for each :class:`TaskState`.

    Named ones (see :meth:`named`): ``"default"`` (pending/processing/completed/failed),
    ``"reseller"`` (waiting/generating/success/fail), ``"upper"``
    (IN_QUEUE/IN_PROGRESS/COMPLETED/FAILED).
    """

    pending: str = "pending"
    processing: str = "processing"
    completed: str = "completed"
    failed: str = "failed"

    def word(self, state: TaskState) -> str:
        """The status string for ``state``."""
        return str(getattr(self, state.name.lower()))

    @classmethod
    def named(cls, name: str | Vocabulary) -> Vocabulary:
        """The vocabulary called ``name``, or ``name`` itself if it already is one.

        Raises:
            ValueError: If the name is unknown.
        """
        if isinstance(name, Vocabulary):
            return name
        try:
            return VOCABULARIES[name]
        except KeyError:
            known = ", ".join(repr(key) for key in VOCABULARIES)
            raise ValueError(f"unknown vocabulary {name!r}: expected one of {known}") from None


VOCABULARIES: Mapping[str, Vocabulary] = {
    "default": Vocabulary(),
    "reseller": Vocabulary("waiting", "generating", "success", "fail"),
    "upper": Vocabulary("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED"),
}


def sample_duration(rng: random.Random, *, median: float, sigma: float, time_scale: float) -> float:
    """One generation time in seconds: lognormal around ``median``, divided by ``time_scale``."""
    return median * math.exp(sigma * rng.gauss(0.0, 1.0)) / time_scale


@dataclass(frozen=True, slots=True)
class Task:
    """One generation as the emulated server remembers it.

    Attributes:
        task_id: The id handed to the client.
        token: The API token that created it (other tokens cannot read it).
        request: The normalised body, echoed in the status answer.
        created_at: Creation time on the emulator's monotonic clock.
        queued_for: Seconds spent in the pending state.
        duration: Seconds from creation to the final state.
        error_message: Why it fails, or None if it completes.
        video_count: Result videos on completion (0 emulates "completed without URL").
        free: Its failure is not charged (``consumed_credits`` 0).
    """

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

    def state(self, now: float) -> TaskState:
        """The state at clock time ``now``."""
        elapsed = now - self.created_at
        if elapsed < self.queued_for:
            return TaskState.PENDING
        if elapsed < self.duration:
            return TaskState.PROCESSING
        return TaskState.COMPLETED if self.error_message is None else TaskState.FAILED
