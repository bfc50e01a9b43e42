"""The OpenTelemetry observer: request spans, job spans, metrics, from one object."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from .._observe import RequestAttempt
from .._scheduling.jobs import JobEvent
from .._version import __version__
from . import names
from .gauges import register_gauges
from .jobs import JobRecorder, SchedulerTrace
from .requests import RequestRecorder
from .timeline import Timeline

logger = logging.getLogger("grok_imagine_async.otel")


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
        tracer = trace.get_tracer(
            names.INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider
        )
        self._timeline = Timeline()
        self._requests = RequestRecorder(tracer, meter)
        self._jobs = JobRecorder(tracer, meter, self._timeline, record_prompts=record_prompts)
        register_gauges(meter, self._snapshots, lambda: self._requests.last_remaining)
        self._failed = False

    def __repr__(self) -> str:
        return f"Telemetry(schedulers={len(self._jobs.schedulers)})"

    def on_request(self, attempt: RequestAttempt) -> None:
        """Record one request attempt (called by the client's sender)."""
        try:
            parent = None
            scope = attempt.job
            if scope is not None:
                scheduler = self._jobs.schedulers.get(scope.owner)
                if scheduler is not None:
                    parent = self._jobs.on_request(scheduler, scope.key, attempt)
                    self._snapshot(scope.owner, scheduler)
            self._requests.record(attempt, self._timeline.to_ns(self._timeline.now()), parent)
        except Exception:  # telemetry must never break a request
            self._log_failure()

    def on_job_event(self, owner: Any, event: JobEvent) -> None:
        """Record one event of the scheduler ``owner`` (called by the scheduler)."""
        try:
            self._jobs.on_event(owner, event)
            scheduler = self._jobs.schedulers.get(owner)
            if scheduler is not None:
                self._snapshot(owner, scheduler)
        except Exception:  # telemetry must never break a scheduler
            self._log_failure()

    def end_unfinished(self) -> int:
        """End the spans of jobs that have not finished, so an exporter still gets them.

        A batch that was interrupted (Ctrl-C, a cancelled scope) leaves its running jobs'
        spans open, and an open span is never exported. Call this before shutting down the
        tracer provider; each span ends now with ``grok_imagine.job.outcome = "unfinished"``.
        (``grok-imagine batch --otel`` does.)

        Returns:
            How many spans were ended.
        """
        return self._jobs.end_unfinished()

    def _snapshot(self, owner: Any, scheduler: SchedulerTrace) -> None:
        statistics = getattr(owner, "statistics", None)
        if statistics is not None:
            scheduler.statistics = statistics()

    def _snapshots(self) -> list[SchedulerTrace]:
        for _ in range(3):  # the loop thread may be adding a scheduler while we copy
            try:
                return list(self._jobs.schedulers.values())
            except RuntimeError:
                continue
        return []

    def _log_failure(self) -> None:
        if not self._failed:  # once: a broken exporter must not flood the log
            self._failed = True
            logger.exception("telemetry failed; the client goes on without it")
