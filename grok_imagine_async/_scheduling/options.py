"""How a scheduler runs its jobs: one frozen :class:`SchedulerConfig`, validated once, the
keywords beside it (:class:`SchedulerOptions`), and the work a quota carries."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .._backoff import PollPolicy
from .._limiting.plans import RateLimit
from .._limiting.protocol import Priority
from .._models import FailureClass
from .breaker import BreakerPolicy
from .durations import DurationModel
from .jobs import JobStore, SchedulerHook

REQUESTS_PER_JOB = 2.2
"""Requests one job costs: one POST plus about 1.2 polls, what the poll schedule aims for."""

Favor = Literal["throughput", "latency"]
"""What gets the quota first when it is the bottleneck (see ``SchedulerConfig.favor``)."""

PRIORITIES: dict[str, tuple[Priority, Priority]] = {  # (submissions, polls)
    "throughput": (Priority.HIGH, Priority.LOW),
    "latency": (Priority.LOW, Priority.HIGH),
}


class _FromSettings:
    def __repr__(self) -> str:
        return "<client.settings.breaker>"


FROM_SETTINGS: Any = _FromSettings()
"""``breaker``'s default: the client's ``settings.breaker`` (None turns the breaker off)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """How a :class:`~grok_imagine_async.JobScheduler` runs its jobs (``config=``).

    Args:
        max_in_flight: Cap on jobs submitted and not finished. Default: eight times what the
            plan sustains by Little's law.
        poll: The poll schedule while the quota is idle (default: the client's
            ``settings.poll``).
        resubmit: How many times one job may be resubmitted after a retryable failure.
        resubmit_on: Failure classes worth a resubmission (default: only ``TRANSIENT``).
        max_downloads: Concurrent downloads.
        results_buffer: When that many results wait unread, submissions pause (polls go on).
        duration_model: The starting duration model (default: its prior median is the
            client's ``settings.expected_duration``).
        rng: Source of poll jitter (seed it for reproducible simulations).
        favor: What gets the quota first when it is the bottleneck: ``"throughput"``
            (submissions: the batch ends soonest; the default) or ``"latency"`` (polls: each
            job is noticed sooner; the FastAPI integration's default).
        breaker: When the batch pauses on an outage or stops on systematic refusals
            (:class:`~grok_imagine_async.batch.BreakerPolicy`). Default: the client's
            ``settings.breaker``; None: never.

    Raises:
        ValueError: On a count below its minimum or an unknown ``favor``.

    Example:
        >>> config = SchedulerConfig(max_in_flight=8, favor="latency")
    """

    max_in_flight: int | None = None
    poll: PollPolicy | None = None
    resubmit: int = 1
    resubmit_on: Collection[FailureClass] = frozenset({FailureClass.TRANSIENT})
    max_downloads: int = 4
    results_buffer: int = 256
    duration_model: DurationModel | None = None
    rng: random.Random | None = None
    favor: Favor | None = None
    breaker: BreakerPolicy | None = FROM_SETTINGS

    def __post_init__(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.resubmit < 0:
            raise ValueError(f"resubmit must be >= 0, got {self.resubmit}")
        if self.max_downloads < 1 or self.results_buffer < 1:
            raise ValueError("max_downloads and results_buffer must be >= 1")
        if self.favor is not None and self.favor not in PRIORITIES:
            raise ValueError(f"favor must be 'throughput' or 'latency', got {self.favor!r}")
        object.__setattr__(self, "resubmit_on", frozenset(self.resubmit_on))  # kept immutable


class SchedulerOptions(TypedDict, total=False):
    """The keywords of :class:`~grok_imagine_async.JobScheduler` beside ``config=`` (also
    ``generate_many``'s), documented there."""

    max_credits: int | None
    journal: JobStore | str | os.PathLike[str] | None
    download_dir: str | os.PathLike[str] | None
    file_stem: Callable[[str], str] | None
    on_event: SchedulerHook | None


def in_flight_cap(limit: RateLimit, *, time_in_system: float) -> int:
    """The default cap on jobs in flight: eight times Little's law, so a saturated quota
    never idles for lack of started work."""
    jobs_per_second = limit.per_second / REQUESTS_PER_JOB
    return max(2, math.ceil(8.0 * jobs_per_second * time_in_system))


def queue_wait(queued: int, *, requests_per_second: float) -> float:
    """Seconds for the quota to carry ``queued`` jobs, at :data:`REQUESTS_PER_JOB` each."""
    return queued * REQUESTS_PER_JOB / max(requests_per_second, 1e-9)
