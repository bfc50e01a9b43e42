"""The OpenTelemetry observer: request spans, job spans and metrics, from one object.

A request becomes an HTTP CLIENT span made after the fact from the sender's
:class:`RequestAttempt`, parented to its job's ``generate_video`` span (GenAI conventions),
whose events mark each submission, poll, resubmission, resumption and download. Two histograms
come from a job's polls: *generation time* (submission to the look that found the task
finished) and *detection latency* (the last look finding it unfinished to that look: how late,
at most, a result was noticed).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from .._models import CREDITS_PER_GENERATION
from .._observe import RequestAttempt
from .._scheduling.jobs import (
    BreakerEvent,
    JobEvent,
    JobFinished,
    JobQueued,
    JobResubmitting,
    JobResult,
    JobResumed,
    JobSubmitted,
    SchedulerStatistics,
)
from .._version import __version__
from . import names

logger = logging.getLogger("grok_imagine_async.otel")

Attributes = dict[str, AttributeValue]


@dataclass(slots=True)
class _JobTrace:
    span: Span
    context: Context
    submitted_at: float | None = None
    last_look: float | None = None
    previous_look: float | None = None


@dataclass(slots=True)
class _SchedulerTrace:
    """What is kept of one scheduler: its live jobs, and its latest snapshot for the gauges
    (OpenTelemetry may read them from its own thread, where ``statistics()`` cannot run)."""

    jobs: dict[str, _JobTrace] = field(default_factory=dict)
    statistics: SchedulerStatistics | None = None
    budget: int | None = None


class Telemetry:
    """Records the client's requests and its schedulers' jobs as OpenTelemetry spans and metrics.

    Pass it as ``AsyncGrokImagine(telemetry=Telemetry(...))`` (``telemetry=True`` builds one
    with the global providers). Every request becomes a CLIENT span under its job's
    ``generate_video`` span; see the README's "Observability" section for every name.
    Only ``opentelemetry-api`` is needed here: bring the SDK and exporters yourself.

    Never recorded: the API token (it is in no URL, attribute or event), and the prompt
    unless ``record_prompts=True``.

    Args:
        tracer_provider: Where spans go (default: the global one, set by your SDK setup).
        meter_provider: Where metrics go (default: the global one).
        record_prompts: Put each job's prompt on its span (``grok_imagine.request.prompt``).

    Example:
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> telemetry = Telemetry(
        ...     tracer_provider=TracerProvider(), meter_provider=MeterProvider()
        ... )
        >>> client = AsyncGrokImagine(api_key="...", telemetry=telemetry)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        record_prompts: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(
            names.INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider
        )
        self._record_prompts = record_prompts
        self._failed = False
        # The anchor of loop times to epoch nanoseconds.
        self._wall0, self._loop0 = 0, cast("float | None", None)
        self._servers: dict[str, tuple[str, int]] = {}
        self._last_remaining: int | None = None
        # Weak: a scheduler that is gone takes its unfinished jobs (never-ended spans) with it.
        self._schedulers: weakref.WeakKeyDictionary[Any, _SchedulerTrace] = (
            weakref.WeakKeyDictionary()
        )
        self._duration, self._generation, self._detection = (
            meter.create_histogram(
                name, unit="s", description=text, explicit_bucket_boundaries_advisory=list(buckets)
            )
            for name, text, buckets in (
                (
                    names.HTTP_CLIENT_DURATION,
                    "Duration of HTTP client requests to the Grok Imagine API.",
                    names.HTTP_DURATION_BUCKETS,
                ),
                (
                    names.GENERATION_DURATION,
                    "From a task's submission to the poll that found it finished.",
                    names.GENERATION_BUCKETS,
                ),
                (
                    names.DETECTION_LATENCY,
                    "From the last poll that found a task unfinished (or its submission) to the "
                    "poll that found it finished: how late, at most, a result was noticed.",
                    names.DETECTION_BUCKETS,
                ),
            )
        )
        self._requests, self._rate_limited, self._credits, self._finished, self._breaker = (
            meter.create_counter(name, unit=unit, description=text)
            for name, unit, text in (
                (
                    names.REQUESTS,
                    "{request}",
                    "API requests sent, by endpoint and outcome (retries included).",
                ),
                (
                    names.RATE_LIMITED,
                    "{response}",
                    "HTTP 429 answers: the server refused a request for rate.",
                ),
                (names.CREDITS, "{credit}", "Credits spent: 40 per task the server created."),
                (names.JOBS_FINISHED, "{job}", "Jobs finished, by outcome and failure class."),
                (
                    names.BREAKER_EVENTS,
                    "{event}",
                    "A batch's pauses (an outage), probes, resumes and stops (systematic "
                    "refusals, a server never reached), by transition and reason.",
                ),
            )
        )
        self._register_gauges(meter)

    def __repr__(self) -> str:
        return f"Telemetry(schedulers={len(self._schedulers)})"

    def on_request(self, attempt: RequestAttempt) -> None:
        """Record one request attempt (called by the client's sender)."""
        try:
            parent = None
            scope = attempt.job
            scheduler = None if scope is None else self._schedulers.get(scope.owner)
            if scope is not None and scheduler is not None:
                parent = self._job_request(scheduler, scope.key, attempt)
                self._snapshot(scope.owner, scheduler)
            self._record_request(attempt, self._to_ns(anyio.current_time()), parent)
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
        """End the spans of jobs that have not finished, so an exporter still gets them.

        An interrupted batch leaves its running jobs' spans open, and an open span is never
        exported: call this before shutting the tracer provider down (``grok-imagine batch
        --otel`` does). Each span ends now with ``grok_imagine.job.outcome = "unfinished"``.

        Returns:
            How many spans were ended.
        """
        ended = 0
        for scheduler in list(self._schedulers.values()):
            jobs, scheduler.jobs = scheduler.jobs, {}
            for job in jobs.values():
                job.span.set_attribute(names.JOB_OUTCOME, "unfinished")
                job.span.end()
                ended += 1
        return ended

    # -- requests ------------------------------------------------------------------------------

    def _record_request(self, attempt: RequestAttempt, end_ns: int, parent: Context | None) -> None:
        server = self._servers.get(attempt.url)
        if server is None:
            parts = urlsplit(attempt.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            server = self._servers[attempt.url] = (parts.hostname or "", port)
        common: Attributes = {
            names.HTTP_METHOD: attempt.method,
            names.SERVER_ADDRESS: server[0],
            names.SERVER_PORT: server[1],
            names.URL_TEMPLATE: attempt.path,
        }
        if attempt.status_code is not None:
            common[names.HTTP_STATUS] = attempt.status_code
        if attempt.error_type is not None:
            common[names.ERROR_TYPE] = attempt.error_type
        span_attributes = {**common, names.URL_FULL: attempt.url}
        if attempt.resend_count:
            span_attributes[names.HTTP_RESEND_COUNT] = attempt.resend_count
        if attempt.task_id is not None:
            span_attributes[names.TASK_ID] = attempt.task_id
        if attempt.remaining is not None:
            span_attributes[names.RATE_LIMIT_REMAINING] = attempt.remaining
            self._last_remaining = attempt.remaining
        span_attributes[names.PERMIT_WAIT] = attempt.permit_wait
        span = self._tracer.start_span(
            f"{attempt.method} {attempt.path}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=span_attributes,
            start_time=end_ns - int(attempt.duration * 1e9),
        )
        if attempt.error_type is not None:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)
        self._duration.record(attempt.duration, common)
        self._requests.add(1, common)
        if attempt.status_code == 429:
            self._rate_limited.add(1, {names.URL_TEMPLATE: attempt.path})
        if attempt.method == "POST" and attempt.error_type is None:
            self._credits.add(CREDITS_PER_GENERATION)  # a task was created: it is paid for

    def _job_request(
        self, scheduler: _SchedulerTrace, key: str, attempt: RequestAttempt
    ) -> Context | None:
        """Note a request sent for job ``key`` (a poll, if a GET); its span's parent."""
        job = scheduler.jobs.get(key)
        if job is None:
            return None
        if attempt.method == "GET":
            now = anyio.current_time()
            attributes: Attributes = {}
            if attempt.status_code is not None:
                attributes[names.HTTP_STATUS] = attempt.status_code
            if attempt.error_type is not None:
                attributes[names.ERROR_TYPE] = attempt.error_type
            else:
                job.previous_look, job.last_look = job.last_look, now
            job.span.add_event(names.EVENT_POLL, attributes, timestamp=self._to_ns(now))
        return job.context

    # -- jobs ----------------------------------------------------------------------------------

    def _job_event(self, scheduler: _SchedulerTrace, event: JobEvent) -> None:
        when = self._to_ns(event.at)
        if isinstance(event, BreakerEvent):  # the batch's course, not one job's life
            attributes: Attributes = {names.BREAKER_TRANSITION: event.transition}
            if event.breaker.reason is not None:
                attributes[names.BREAKER_REASON] = event.breaker.reason
            if event.breaker.failure_class is not None:
                attributes[names.JOB_FAILURE_CLASS] = event.breaker.failure_class.value
            self._breaker.add(1, attributes)
            return
        job = None if isinstance(event, JobQueued) else scheduler.jobs.get(event.key)
        if job is None:  # queued, or queued before the telemetry saw this scheduler
            span = self._tracer.start_span(
                names.OPERATION_NAME,
                kind=SpanKind.INTERNAL,
                attributes={
                    names.GEN_AI_OPERATION: names.OPERATION_NAME,
                    names.GEN_AI_PROVIDER: names.PROVIDER_NAME,
                    names.JOB_KEY: event.key,
                },
                start_time=when,
            )
            job = scheduler.jobs[event.key] = _JobTrace(span, trace.set_span_in_context(span))
        if isinstance(event, JobSubmitted):
            job.span.set_attribute(names.GEN_AI_RESPONSE_ID, event.task_id)
            job.span.add_event(
                names.EVENT_SUBMIT,
                {names.TASK_ID: event.task_id, names.JOB_ATTEMPTS: event.attempt},
                timestamp=when,
            )
            job.submitted_at = job.last_look = event.at
            job.previous_look = None
        elif isinstance(event, JobResumed):
            job.span.set_attribute(names.GEN_AI_RESPONSE_ID, event.task_id)
            job.span.add_event(names.EVENT_RESUME, {names.TASK_ID: event.task_id}, timestamp=when)
            job.submitted_at = job.last_look = job.previous_look = None
        elif isinstance(event, JobResubmitting):
            job.span.add_event(
                names.EVENT_RESUBMIT,
                {names.JOB_FAILURE_CLASS: event.failure_class.value},
                timestamp=when,
            )
        elif isinstance(event, JobFinished) and event.result is not None:
            del scheduler.jobs[event.key]
            self._finish(job, event.result, when)

    def _finish(self, job: _JobTrace, result: JobResult, when: int) -> None:
        request = result.request
        outcome = "completed" if result.ok else "failed"
        attributes: Attributes = {
            names.REQUEST_MODE: request.mode,
            names.REQUEST_RATIO: request.ratio,
            names.REQUEST_IMAGES: len(request.images or ()),
            names.JOB_OUTCOME: outcome,
            names.JOB_ATTEMPTS: result.attempts,
            names.JOB_POLLS: result.polls,
            names.JOB_CREDITS: result.credits,
            names.JOB_FROM_JOURNAL: result.from_journal,
        }
        if self._record_prompts:
            attributes[names.REQUEST_PROMPT] = request.prompt
        if result.task_id is not None:
            attributes[names.GEN_AI_RESPONSE_ID] = result.task_id
        metric: Attributes = {names.JOB_OUTCOME: outcome}
        if result.failure_class is not None:
            failure = result.failure_class.value
            metric[names.JOB_FAILURE_CLASS] = metric[names.ERROR_TYPE] = failure
            attributes.update(metric)
            job.span.set_status(Status(StatusCode.ERROR))
        job.span.set_attributes(attributes)
        if result.files:
            job.span.add_event(
                names.EVENT_DOWNLOAD, {names.DOWNLOAD_FILES: len(result.files)}, timestamp=when
            )
        job.span.end(end_time=when)
        self._finished.add(1, metric)
        # Only a task seen finishing by a poll of this run says when it finished.
        seen = result.task is not None and not result.from_journal
        if seen and job.last_look is not None and job.previous_look is not None:
            self._detection.record(job.last_look - job.previous_look, metric)
            if job.submitted_at is not None:
                self._generation.record(job.last_look - job.submitted_at, metric)

    # -- gauges and time -----------------------------------------------------------------------

    def _register_gauges(self, meter: Meter) -> None:
        """The observable instruments: they only read the snapshots taken in the loop."""

        def traces() -> list[_SchedulerTrace]:
            for _ in range(3):  # the loop thread may be adding a scheduler while we copy
                try:
                    return list(self._schedulers.values())
                except RuntimeError:
                    continue
            return []

        def stats() -> list[SchedulerStatistics]:
            return [s.statistics for s in traces() if s.statistics is not None]

        def total(read: Callable[[SchedulerStatistics], float]) -> Callable[[], float | None]:
            return lambda: sum(map(read, every)) if (every := stats()) else None

        def budget() -> int | None:
            budgets = [s.budget for s in traces() if s.budget is not None]
            return sum(budgets) if budgets else None

        def usage() -> float | None:
            every = stats()
            ceiling = max((s.limit_per_minute for s in every), default=0.0)
            return sum(s.requests_per_minute for s in every) / ceiling if ceiling > 0 else None

        def observe(read: Callable[[], float | None]) -> Callable[[CallbackOptions], Any]:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                value = read()
                return [] if value is None else [Observation(value)]

            return callback

        def jobs(options: CallbackOptions) -> Iterable[Observation]:
            every = stats()
            for state, count in (
                ("queued", sum(s.queued for s in every)),
                ("submitting", sum(s.submitting for s in every)),
                ("running", sum(s.in_flight for s in every)),
            ):
                yield Observation(count, {names.JOB_STATE: state})

        meter.create_observable_up_down_counter(
            names.JOBS, [jobs], unit="{job}", description="Scheduler jobs in each unfinished state."
        )
        for name, read, unit, description in (
            (
                names.SCHEDULER_CREDITS,
                total(lambda s: s.credits_consumed),
                "{credit}",
                "Credits the running schedulers have committed (spent or possibly spent).",
            ),
            (
                names.SCHEDULER_CREDIT_BUDGET,
                budget,
                "{credit}",
                "The credit budget (max_credits) of the running schedulers that have one.",
            ),
            (
                names.QUOTA_REMAINING,
                lambda: self._last_remaining,
                "{request}",
                "X-RateLimit-Remaining of the latest answer: the server's count.",
            ),
            (
                names.QUOTA_RATE,
                total(lambda s: s.requests_per_minute),
                "{request}/min",
                "Requests per minute the schedulers sent lately (last quarter period).",
            ),
            (
                names.QUOTA_LIMIT,
                lambda: max((s.limit_per_minute for s in stats()), default=None),
                "{request}/min",
                "The plan's request limit per minute.",
            ),
            (
                names.QUOTA_USAGE,
                usage,
                "1",
                "Share of the plan's request rate in use (request_rate / limit).",
            ),
        ):
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
