"""One scheduler job as OpenTelemetry sees it: a span from queued to finished, and job metrics.

The span (``generate_video``, GenAI conventions) carries the task id, mode, ratio, attempts,
polls, credits and, if it failed, the failure class; its events mark each submission, poll,
resubmission, resumption and download; its children are the job's request spans. Two
histograms come from what the job's polls saw:

- *generation time*: from the submission to the look that found the task finished;
- *detection latency*: from the last look that found it unfinished (or the submission) to the
  look that found it finished, an upper bound on how late a result was noticed.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

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
from . import names
from .timeline import Timeline


@dataclass(slots=True)
class _JobTrace:
    span: Span
    context: Context
    submitted_at: float | None = None
    last_look: float | None = None
    previous_look: float | None = None


@dataclass(slots=True)
class SchedulerTrace:
    """What the telemetry keeps of one scheduler: its live jobs and its latest snapshot."""

    jobs: dict[str, _JobTrace] = field(default_factory=dict)
    statistics: SchedulerStatistics | None = None
    budget: int | None = None


class JobRecorder:
    """Turns scheduler events (and requests sent for jobs) into job spans and job metrics.

    Args:
        record_prompts: Put the prompt on job spans (off by default: prompts may be private).
    """

    def __init__(
        self, tracer: Tracer, meter: Meter, timeline: Timeline, *, record_prompts: bool
    ) -> None:
        self._tracer = tracer
        self._timeline = timeline
        self._record_prompts = record_prompts
        # Weak: a scheduler that is gone takes its unfinished jobs (never-ended spans) with it.
        self.schedulers: weakref.WeakKeyDictionary[Any, SchedulerTrace] = (
            weakref.WeakKeyDictionary()
        )
        self._finished = meter.create_counter(
            names.JOBS_FINISHED,
            unit="{job}",
            description="Jobs finished, by outcome and failure class.",
        )
        self._breaker = meter.create_counter(
            names.BREAKER_EVENTS,
            unit="{event}",
            description=(
                "A batch's pauses (an outage), probes, resumes and stops (systematic "
                "refusals, a server never reached), by transition and reason."
            ),
        )
        self._generation = meter.create_histogram(
            names.GENERATION_DURATION,
            unit="s",
            description="From a task's submission to the poll that found it finished.",
            explicit_bucket_boundaries_advisory=list(names.GENERATION_BUCKETS),
        )
        self._detection = meter.create_histogram(
            names.DETECTION_LATENCY,
            unit="s",
            description=(
                "From the last poll that found a task unfinished (or its submission) to the "
                "poll that found it finished: how late, at most, a result was noticed."
            ),
            explicit_bucket_boundaries_advisory=list(names.DETECTION_BUCKETS),
        )

    def on_event(self, owner: Any, event: JobEvent) -> None:
        """Handle one scheduler event of ``owner``."""
        scheduler = self.schedulers.get(owner)
        if scheduler is None:
            scheduler = self.schedulers[owner] = SchedulerTrace(
                budget=getattr(getattr(owner, "budget", None), "max_credits", None)
            )
        when = self._timeline.to_ns(event.at)
        if isinstance(event, BreakerEvent):  # the batch's course, not one job's life
            attributes: dict[str, AttributeValue] = {names.BREAKER_TRANSITION: event.transition}
            if event.breaker.reason is not None:
                attributes[names.BREAKER_REASON] = event.breaker.reason
            if event.breaker.failure_class is not None:
                attributes[names.JOB_FAILURE_CLASS] = event.breaker.failure_class.value
            self._breaker.add(1, attributes)
            return
        if isinstance(event, JobQueued):
            scheduler.jobs[event.key] = self._start(event.key, when)
            return
        job = scheduler.jobs.get(event.key)
        if job is None:  # queued before the telemetry saw this scheduler
            job = scheduler.jobs[event.key] = self._start(event.key, when)
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

    def on_request(
        self, scheduler: SchedulerTrace, key: str, attempt: RequestAttempt
    ) -> Context | None:
        """Note a request sent for job ``key``; return the context to parent its span in."""
        job = scheduler.jobs.get(key)
        if job is None:
            return None
        if attempt.method == "GET":
            now = self._timeline.now()
            attributes: dict[str, AttributeValue] = {}
            if attempt.status_code is not None:
                attributes[names.HTTP_STATUS] = attempt.status_code
            if attempt.error_type is not None:
                attributes[names.ERROR_TYPE] = attempt.error_type
            else:
                job.previous_look, job.last_look = job.last_look, now
            job.span.add_event(names.EVENT_POLL, attributes, timestamp=self._timeline.to_ns(now))
        return job.context

    def end_unfinished(self) -> int:
        """End the span of every job not finished yet, as ``unfinished``; return how many."""
        ended = 0
        for scheduler in list(self.schedulers.values()):
            jobs, scheduler.jobs = scheduler.jobs, {}
            for job in jobs.values():
                job.span.set_attribute(names.JOB_OUTCOME, "unfinished")
                job.span.end()
                ended += 1
        return ended

    def _start(self, key: str, when: int) -> _JobTrace:
        span = self._tracer.start_span(
            names.OPERATION_NAME,
            kind=SpanKind.INTERNAL,
            attributes={
                names.GEN_AI_OPERATION: names.OPERATION_NAME,
                names.GEN_AI_PROVIDER: names.PROVIDER_NAME,
                names.JOB_KEY: key,
            },
            start_time=when,
        )
        return _JobTrace(span, trace.set_span_in_context(span))

    def _finish(self, job: _JobTrace, result: JobResult, when: int) -> None:
        request = result.request
        outcome = "completed" if result.ok else "failed"
        attributes: dict[str, AttributeValue] = {
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
        metric: dict[str, AttributeValue] = {names.JOB_OUTCOME: outcome}
        if result.failure_class is not None:
            attributes[names.JOB_FAILURE_CLASS] = result.failure_class.value
            attributes[names.ERROR_TYPE] = result.failure_class.value
            metric[names.JOB_FAILURE_CLASS] = result.failure_class.value
            metric[names.ERROR_TYPE] = result.failure_class.value
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
