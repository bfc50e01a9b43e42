"""The OpenTelemetry observer of :mod:`grok_imagine_async.otel` (request and job spans, metrics),
and an SDK set up from ``OTEL_*`` for ``grok-imagine batch``. The observability guide lists every
name: standard ones follow the OpenTelemetry conventions, ours start with ``grok_imagine.``."""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from ._models import CREDITS_PER_GENERATION
from ._observe import RequestAttempt
from ._scheduling.jobs import (
    BreakerEvent,
    JobEvent,
    JobFinished,
    JobQueued,
    JobResubmitting,
    JobResumed,
    JobSubmitted,
    SchedulerStatistics,
)
from ._version import __version__

logger = logging.getLogger("grok_imagine_async.otel")

OPERATION_NAME = "generate_video"
"""``gen_ai.operation.name`` (and the name) of the job spans, as xai-sdk names it."""
PROVIDER_NAME = "grok_imagine"
"""``gen_ai.provider.name`` of the job spans."""

_SCOPE = "grok_imagine_async"  # the instrumentation scope of the tracer and the meter
_STATUS = "http.response.status_code"
_ERROR = "error.type"
_TEMPLATE = "url.template"
_RESPONSE_ID = "gen_ai.response.id"  # the task id
_TASK_ID = "grok_imagine.task.id"
_OUTCOME = "grok_imagine.job.outcome"
_FAILURE = "grok_imagine.job.failure_class"
_ATTEMPTS = "grok_imagine.job.attempts"
_JOB_STATES = {"queued": "queued", "submitting": "submitting", "running": "in_flight"}

Attributes = dict[str, AttributeValue]


def _present(attributes: Mapping[str, AttributeValue | None]) -> Attributes:
    """``attributes`` without the unknown (None) ones."""
    return {name: value for name, value in attributes.items() if value is not None}


@dataclass(slots=True)
class _JobTrace:
    span: Span
    context: Context
    submitted_at: float | None = None
    last_look: float | None = None
    previous_look: float | None = None


@dataclass(slots=True)
class _SchedulerTrace:
    """One scheduler's live jobs, and its latest snapshot for the gauges (exporters' threads
    cannot run ``statistics()``)."""

    jobs: dict[str, _JobTrace] = field(default_factory=dict)
    statistics: SchedulerStatistics | None = None
    budget: int | None = None


class Telemetry:
    """Records the client's requests and its schedulers' jobs as OpenTelemetry spans and metrics.

    Pass it as ``AsyncGrokImagine(telemetry=...)``; the observability guide names every span,
    attribute and instrument. Never recorded: the API token, and the prompt unless asked.

    Args:
        tracer_provider: Where spans go (default: the global one).
        meter_provider: Where metrics go (default: the global one).
        record_prompts: Put each job's prompt on its span (``grok_imagine.request.prompt``).
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        record_prompts: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._record_prompts, self._failed = record_prompts, False
        self._wall0, self._loop0 = 0, cast("float | None", None)  # loop time -> epoch ns
        self._servers: dict[str, tuple[str, int]] = {}
        self._last_remaining: int | None = None
        # Weak: a scheduler that is gone takes its unfinished jobs (never-ended spans) with it.
        self._schedulers = weakref.WeakKeyDictionary[Any, _SchedulerTrace]()
        self._duration, self._generation, self._detection = (
            meter.create_histogram(
                name, unit="s", description=text, explicit_bucket_boundaries_advisory=buckets
            )
            for name, text, buckets in (
                ("http.client.request.duration",
                 "Duration of HTTP client requests to the Grok Imagine API.",
                 [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]),
                ("grok_imagine.generation.duration",
                 "From a task's submission to the poll that found it finished.",
                 [5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200]),
                ("grok_imagine.generation.detection_latency",
                 "From the last poll that found a task unfinished (or its submission) to the "
                 "poll that found it finished: how late, at most, a result was noticed.",
                 [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300]),
            )
        )  # fmt: skip
        self._requests, self._rate_limited, self._credits, self._finished, self._breaker = (
            meter.create_counter(name, unit=unit, description=text)
            for name, unit, text in (
                ("grok_imagine.client.requests", "{request}",
                 "API requests sent, by endpoint and outcome (retries included)."),
                ("grok_imagine.client.rate_limited", "{response}",
                 "HTTP 429 answers: the server refused a request for rate."),
                ("grok_imagine.credits.consumed", "{credit}",
                 "Credits spent: 40 per task the server created."),
                ("grok_imagine.jobs.finished", "{job}",
                 "Jobs finished, by outcome and failure class."),
                ("grok_imagine.scheduler.breaker.events", "{event}",
                 "A batch's pauses (an outage), probes, resumes and stops (systematic "
                 "refusals, a server never reached), by transition and reason."),
            )
        )  # fmt: skip
        self._register_gauges(meter)

    def __repr__(self) -> str:
        return f"Telemetry(schedulers={len(self._schedulers)})"

    def on_request(self, attempt: RequestAttempt) -> None:
        """Record one request attempt (called by the client's sender)."""
        try:
            scope, job, now = attempt.job, None, anyio.current_time()
            if scope is not None and (scheduler := self._schedulers.get(scope.owner)) is not None:
                job = scheduler.jobs.get(scope.key)
                self._snapshot(scope.owner, scheduler)
            end_ns = self._to_ns(now)
            if job is not None and attempt.method == "GET":  # a poll of the job
                if attempt.error_type is None:
                    job.previous_look, job.last_look = job.last_look, now
                attributes = _present({_STATUS: attempt.status_code, _ERROR: attempt.error_type})
                job.span.add_event("poll", attributes, timestamp=end_ns)
            server = self._servers.get(attempt.url)
            if server is None:
                parts = urlsplit(attempt.url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                server = self._servers[attempt.url] = (parts.hostname or "", port)
            measured: dict[str, AttributeValue | None] = {
                "http.request.method": attempt.method,
                "server.address": server[0],
                "server.port": server[1],
                _TEMPLATE: attempt.path,
                _STATUS: attempt.status_code,
                _ERROR: attempt.error_type,
            }
            spanned = {
                **measured,
                "url.full": attempt.url,
                "http.request.resend_count": attempt.resend_count or None,
                _TASK_ID: attempt.task_id,
                "grok_imagine.rate_limit.remaining": attempt.remaining,
                "grok_imagine.rate_limit.permit_wait": attempt.permit_wait,
            }
            common = _present(measured)
            if attempt.remaining is not None:
                self._last_remaining = attempt.remaining
            span = self._tracer.start_span(
                f"{attempt.method} {attempt.path}",
                context=None if job is None else job.context,
                kind=SpanKind.CLIENT,
                attributes=_present(spanned),
                start_time=end_ns - int(attempt.duration * 1e9),
            )
            if attempt.error_type is not None:
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=end_ns)
            self._duration.record(attempt.duration, common)
            self._requests.add(1, common)
            if attempt.status_code == 429:
                self._rate_limited.add(1, {_TEMPLATE: attempt.path})
            if attempt.method == "POST" and attempt.error_type is None:
                self._credits.add(CREDITS_PER_GENERATION)  # a task was created: it is paid for
        except Exception:  # telemetry must never break a request
            self._log_failure()

    def on_job_event(self, owner: Any, event: JobEvent) -> None:
        """Record one event of the scheduler ``owner`` (called by the scheduler)."""
        try:
            scheduler = self._schedulers.get(owner)
            if scheduler is None:
                budget = getattr(getattr(owner, "budget", None), "max_credits", None)
                scheduler = self._schedulers[owner] = _SchedulerTrace(budget=budget)
            self._job_event(scheduler, event)
            self._snapshot(owner, scheduler)
        except Exception:  # telemetry must never break a scheduler
            self._log_failure()

    def end_unfinished(self) -> int:
        """End the spans of unfinished jobs now (outcome ``"unfinished"``: an open span is never
        exported) and return how many. Call it before shutting the tracer provider down."""
        ended = 0
        for scheduler in list(self._schedulers.values()):
            jobs, scheduler.jobs = scheduler.jobs, {}
            for job in jobs.values():
                job.span.set_attribute(_OUTCOME, "unfinished")
                job.span.end()
                ended += 1
        return ended

    def _job_event(self, scheduler: _SchedulerTrace, event: JobEvent) -> None:
        when = self._to_ns(event.at)
        if isinstance(event, BreakerEvent):  # the batch's course, not one job's life
            failure = event.breaker.failure_class
            breaker = {
                "grok_imagine.breaker.transition": event.transition,
                "grok_imagine.breaker.reason": event.breaker.reason,
                _FAILURE: failure.value if failure is not None else None,
            }
            self._breaker.add(1, _present(breaker))
            return
        job = None if isinstance(event, JobQueued) else scheduler.jobs.get(event.key)
        if job is None:  # queued, or queued before the telemetry saw this scheduler
            span = self._tracer.start_span(
                OPERATION_NAME,
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": OPERATION_NAME,
                    "gen_ai.provider.name": PROVIDER_NAME,
                    "grok_imagine.job.key": event.key,
                },
                start_time=when,
            )
            job = scheduler.jobs[event.key] = _JobTrace(span, trace.set_span_in_context(span))
        if isinstance(event, JobSubmitted | JobResumed):
            job.span.set_attribute(_RESPONSE_ID, event.task_id)
        if isinstance(event, JobSubmitted):
            submit: Attributes = {_TASK_ID: event.task_id, _ATTEMPTS: event.attempt}
            job.span.add_event("submit", submit, timestamp=when)
            job.submitted_at, job.last_look, job.previous_look = event.at, event.at, None
        elif isinstance(event, JobResumed):
            job.span.add_event("resume", {_TASK_ID: event.task_id}, timestamp=when)
            job.submitted_at = job.last_look = job.previous_look = None
        elif isinstance(event, JobResubmitting):
            job.span.add_event("resubmit", {_FAILURE: event.failure_class.value}, timestamp=when)
        if not isinstance(event, JobFinished) or (result := event.result) is None:
            return
        del scheduler.jobs[event.key]
        request = result.request
        outcome = "completed" if result.ok else "failed"
        attributes: dict[str, AttributeValue | None] = {
            "grok_imagine.request.mode": request.mode,
            "grok_imagine.request.ratio": request.ratio,
            "grok_imagine.request.image_count": len(request.images or ()),
            "grok_imagine.request.prompt": request.prompt if self._record_prompts else None,
            _OUTCOME: outcome,
            _ATTEMPTS: result.attempts,
            "grok_imagine.job.polls": result.polls,
            "grok_imagine.job.credits": result.credits,
            "grok_imagine.job.from_journal": result.from_journal,
            _RESPONSE_ID: result.task_id,
        }
        metric: Attributes = {_OUTCOME: outcome}
        if result.failure_class is not None:
            metric[_FAILURE] = metric[_ERROR] = result.failure_class.value
            attributes.update(metric)
            job.span.set_status(Status(StatusCode.ERROR))
        job.span.set_attributes(_present(attributes))
        if result.files:
            files = {"grok_imagine.download.files": len(result.files)}
            job.span.add_event("download", files, timestamp=when)
        job.span.end(end_time=when)
        self._finished.add(1, metric)
        # Only a task seen finishing by a poll of this run says when it finished: from the
        # last look that found it unfinished (detection latency), or from its submission.
        seen = result.task is not None and not result.from_journal
        if seen and job.last_look is not None and job.previous_look is not None:
            self._detection.record(job.last_look - job.previous_look, metric)
            if job.submitted_at is not None:
                self._generation.record(job.last_look - job.submitted_at, metric)

    def _register_gauges(self, meter: Meter) -> None:
        """The observable instruments: they only read the snapshots taken in the loop."""

        def traces() -> list[_SchedulerTrace]:
            for _ in range(3):  # the loop thread may be adding a scheduler while we copy
                with suppress(RuntimeError):
                    return list(self._schedulers.values())
            return []

        def stats() -> list[SchedulerStatistics]:
            return [s.statistics for s in traces() if s.statistics is not None]

        def total(values: Callable[[], list[float]]) -> Callable[[], float | None]:
            return lambda: sum(every) if (every := values()) else None

        def usage() -> float | None:
            every = stats()
            ceiling = max((s.limit_per_minute for s in every), default=0.0)
            return sum(s.requests_per_minute for s in every) / ceiling if ceiling > 0 else None

        def observe(read: Callable[[], float | None]) -> Callable[[CallbackOptions], Any]:
            return lambda options: [] if (value := read()) is None else [Observation(value)]

        def jobs(options: CallbackOptions) -> Iterable[Observation]:
            every = stats()
            for state, name in _JOB_STATES.items():
                count = sum(getattr(s, name) for s in every)
                yield Observation(count, {"grok_imagine.job.state": state})

        meter.create_observable_up_down_counter(
            "grok_imagine.jobs",
            [jobs],
            unit="{job}",
            description="Scheduler jobs in each unfinished state.",
        )
        for name, read, unit, description in (
            ("grok_imagine.scheduler.credits",
             total(lambda: [s.credits_consumed for s in stats()]), "{credit}",
             "Credits the running schedulers have committed (spent or possibly spent)."),
            ("grok_imagine.scheduler.credit_budget",
             total(lambda: [s.budget for s in traces() if s.budget is not None]), "{credit}",
             "The credit budget (max_credits) of the running schedulers that have one."),
            ("grok_imagine.rate_limit.remaining", lambda: self._last_remaining, "{request}",
             "X-RateLimit-Remaining of the latest answer: the server's count."),
            ("grok_imagine.rate_limit.request_rate",
             total(lambda: [s.requests_per_minute for s in stats()]), "{request}/min",
             "Requests per minute the schedulers sent lately (last quarter period)."),
            ("grok_imagine.rate_limit.limit",
             lambda: max((s.limit_per_minute for s in stats()), default=None), "{request}/min",
             "The plan's request limit per minute."),
            ("grok_imagine.rate_limit.usage", usage, "1",
             "Share of the plan's request rate in use (request_rate / limit)."),
        ):  # fmt: skip
            meter.create_observable_gauge(name, [observe(read)], unit=unit, description=description)

    def _snapshot(self, owner: Any, scheduler: _SchedulerTrace) -> None:
        statistics = getattr(owner, "statistics", None)
        if statistics is not None:
            scheduler.statistics = statistics()

    def _to_ns(self, at: float) -> int:
        """Loop time ``at`` in epoch nanoseconds: span durations are the loop's (virtual in a
        simulation); re-anchored on a new event loop."""
        if self._loop0 is None or at < self._loop0 - 1.0:
            self._wall0, self._loop0 = time.time_ns(), anyio.current_time()
        return self._wall0 + int((at - self._loop0) * 1e9)

    def _log_failure(self) -> None:
        if not self._failed:  # once: a broken exporter must not flood the log
            self._failed = True
            logger.exception("telemetry failed; the client goes on without it")


def _exporters(variable: str, group: str) -> list[Any]:
    """The exporter classes named by ``variable`` (default ``otlp``; ``none`` for none)."""
    found = []
    for name in os.environ.get(variable, "otlp").split(","):
        if (name := name.strip()) in ("", "none"):
            continue
        matches = list(entry_points(group=group, name=name))
        if not matches:
            package = "opentelemetry-exporter-otlp" if name.startswith("otlp") else "its package"
            raise ImportError(
                f"needs the OpenTelemetry exporter named {name!r} by ${variable}: pip install "
                f"{package}, or set {variable}=console (or none)"
            )
        found.append(matches[0].load())
    return found


@contextmanager
def telemetry_from_environment(service_name: str) -> Iterator[Telemetry]:
    """A :class:`Telemetry` exporting as the ``OTEL_*`` variables say (as the SDK's
    auto-configuration does, for its own providers only); flushed at the end.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` (or the resource) has one.

    Raises:
        ModuleNotFoundError: The SDK is not installed.
        ImportError: An exporter the variables name is not installed (the message says which).
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    span_exporters = _exporters("OTEL_TRACES_EXPORTER", "opentelemetry_traces_exporter")
    metric_exporters = _exporters("OTEL_METRICS_EXPORTER", "opentelemetry_metrics_exporter")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    tracer_provider = TracerProvider(resource=resource)
    for span_exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter()))
    made = [metric_exporter() for metric_exporter in metric_exporters]
    # Some entry points (prometheus) give a reader, which is pulled rather than pushed.
    readers = [m if isinstance(m, MetricReader) else PeriodicExportingMetricReader(m) for m in made]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield telemetry
    finally:
        telemetry.end_unfinished()  # an interrupted batch still shows its jobs in flight
        tracer_provider.shutdown()  # flushes: the last spans of the batch are not lost
        meter_provider.shutdown()
