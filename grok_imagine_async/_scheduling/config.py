"""How a scheduler runs its jobs: :class:`SchedulerConfig` (``config=``)."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from .._backoff import PollPolicy
from .._errors import ConfigurationError
from .._limiting.protocol import Priority
from .._models import FailureClass
from .breaker import BreakerPolicy
from .durations import DurationModel

PRIORITIES: dict[str, tuple[Priority, Priority]] = {  # (submissions, polls)
    "throughput": (Priority.HIGH, Priority.LOW),
    "latency": (Priority.LOW, Priority.HIGH),
}


class _FromSettings:
    def __repr__(self) -> str:
        return "<client.settings.breaker>"

    def __reduce__(self) -> str:
        return "FROM_SETTINGS"  # pickled and copied as the one sentinel, compared by identity


FROM_SETTINGS: Any = _FromSettings()  # breaker=: the client's settings.breaker


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """How a :class:`~grok_imagine_async.JobScheduler` runs its jobs (``config=``).

    Args:
        max_in_flight: Cap on jobs submitted and not finished. Default: eight times what the
            plan sustains by Little's law.
        poll: The poll schedule while the quota is idle (default: ``settings.poll``).
        resubmit: How many times one job may be resubmitted after a retryable failure.
        resubmit_on: Failure classes worth a resubmission (default: only ``TRANSIENT``).
        max_downloads: Downloads at a time, when the scheduler has a ``download_dir``.
        results_buffer: When that many results wait unread, submissions pause (polls go on).
        duration_model: The starting duration model (default: its prior median is
            ``settings.expected_duration``).
        rng: Source of poll jitter (seed it for reproducible simulations).
        favor: What gets the quota first when it is the bottleneck: ``"throughput"``
            (submissions; the default) or ``"latency"`` (polls; FastAPI's default).
        breaker: When the batch pauses on an outage or stops on systematic refusals
            (:class:`~grok_imagine_async.batch.BreakerPolicy`). Default:
            ``settings.breaker``; None: never.

    Raises:
        ConfigurationError: On a count below its minimum or an unknown ``favor``.
    """

    max_in_flight: int | None = None
    poll: PollPolicy | None = None
    resubmit: int = 1
    resubmit_on: Collection[FailureClass] = frozenset({FailureClass.TRANSIENT})
    max_downloads: int = 4
    results_buffer: int = 256
    duration_model: DurationModel | None = None
    rng: random.Random | None = None
    favor: Literal["throughput", "latency"] | None = None
    breaker: BreakerPolicy | None = FROM_SETTINGS

    def __post_init__(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.resubmit < 0:
            raise ConfigurationError(f"resubmit must be >= 0, got {self.resubmit}")
        if self.max_downloads < 1 or self.results_buffer < 1:
            raise ConfigurationError("max_downloads and results_buffer must be >= 1")
        if self.favor is not None and self.favor not in PRIORITIES:
            raise ConfigurationError(f"favor must be 'throughput' or 'latency', got {self.favor!r}")
        object.__setattr__(self, "resubmit_on", frozenset(self.resubmit_on))  # kept immutable
