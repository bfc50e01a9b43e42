"""The gauges: jobs in each state, credits against the budget, and the quota in use.

OpenTelemetry reads observable instruments when it exports, possibly from its own thread,
where a scheduler's ``statistics()`` cannot be called (it reads the event loop's clock). So
the telemetry keeps each scheduler's latest snapshot, taken in the loop at every event and
request, and these callbacks only read those snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .._scheduling.jobs import SchedulerStatistics
from . import names
from .jobs import SchedulerTrace

Snapshots = Callable[[], list[SchedulerTrace]]
Remaining = Callable[[], int | None]


def register_gauges(meter: Meter, snapshots: Snapshots, remaining: Remaining) -> None:
    """Create the observable instruments of ``meter``, reading ``snapshots`` and ``remaining``."""

    def stats() -> list[SchedulerStatistics]:
        return [s.statistics for s in snapshots() if s.statistics is not None]

    def jobs(options: CallbackOptions) -> Iterable[Observation]:
        every = stats()
        for state, count in (
            ("queued", sum(s.queued for s in every)),
            ("submitting", sum(s.submitting for s in every)),
            ("running", sum(s.in_flight for s in every)),
        ):
            yield Observation(count, {names.JOB_STATE: state})

    def credits(options: CallbackOptions) -> Iterable[Observation]:
        every = stats()
        if every:
            yield Observation(sum(s.credits_consumed for s in every))

    def budget(options: CallbackOptions) -> Iterable[Observation]:
        budgets = [s.budget for s in snapshots() if s.budget is not None]
        if budgets:
            yield Observation(sum(budgets))

    def quota_remaining(options: CallbackOptions) -> Iterable[Observation]:
        value = remaining()
        if value is not None:
            yield Observation(value)

    def rate(options: CallbackOptions) -> Iterable[Observation]:
        every = stats()
        if every:
            yield Observation(sum(s.requests_per_minute for s in every))

    def limit(options: CallbackOptions) -> Iterable[Observation]:
        every = stats()
        if every:
            yield Observation(max(s.limit_per_minute for s in every))

    def usage(options: CallbackOptions) -> Iterable[Observation]:
        every = stats()
        ceiling = max((s.limit_per_minute for s in every), default=0.0)
        if ceiling > 0:
            yield Observation(sum(s.requests_per_minute for s in every) / ceiling)

    meter.create_observable_up_down_counter(
        names.JOBS, [jobs], unit="{job}", description="Scheduler jobs in each unfinished state."
    )
    meter.create_observable_gauge(
        names.SCHEDULER_CREDITS,
        [credits],
        unit="{credit}",
        description="Credits the running schedulers have committed (spent or possibly spent).",
    )
    meter.create_observable_gauge(
        names.SCHEDULER_CREDIT_BUDGET,
        [budget],
        unit="{credit}",
        description="The credit budget (max_credits) of the running schedulers that have one.",
    )
    meter.create_observable_gauge(
        names.QUOTA_REMAINING,
        [quota_remaining],
        unit="{request}",
        description="X-RateLimit-Remaining of the latest answer: the server's count.",
    )
    meter.create_observable_gauge(
        names.QUOTA_RATE,
        [rate],
        unit="{request}/min",
        description="Requests per minute the schedulers sent lately (last quarter period).",
    )
    meter.create_observable_gauge(
        names.QUOTA_LIMIT,
        [limit],
        unit="{request}/min",
        description="The plan's request limit per minute.",
    )
    meter.create_observable_gauge(
        names.QUOTA_USAGE,
        [usage],
        unit="1",
        description="Share of the plan's request rate in use (request_rate / limit).",
    )
