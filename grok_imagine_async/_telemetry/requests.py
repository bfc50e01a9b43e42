"""One API request as OpenTelemetry sees it: an HTTP client span and the request metrics.

The span follows the HTTP client conventions (``{method} {url.template}``, kind CLIENT,
``http.request.resend_count`` on retries, ``error.type`` on failure). It is made after the
fact from the sender's :class:`~grok_imagine_async._observe.RequestAttempt`, with the times the
sender measured, and parented to its job's span when a scheduler sent it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from .._models import CREDITS_PER_GENERATION
from .._observe import RequestAttempt
from . import names


class RequestRecorder:
    """Records request spans and the request metrics (duration, count, 429s, credits)."""

    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self._tracer = tracer
        self._duration = meter.create_histogram(
            names.HTTP_CLIENT_DURATION,
            unit="s",
            description="Duration of HTTP client requests to the Grok Imagine API.",
            explicit_bucket_boundaries_advisory=list(names.HTTP_DURATION_BUCKETS),
        )
        self._requests = meter.create_counter(
            names.REQUESTS,
            unit="{request}",
            description="API requests sent, by endpoint and outcome (retries included).",
        )
        self._rate_limited = meter.create_counter(
            names.RATE_LIMITED,
            unit="{response}",
            description="HTTP 429 answers: the server refused a request for rate.",
        )
        self._credits = meter.create_counter(
            names.CREDITS,
            unit="{credit}",
            description="Credits spent: 40 per task the server created.",
        )
        self._servers: dict[str, tuple[str, int]] = {}
        self.last_remaining: int | None = None

    def record(self, attempt: RequestAttempt, end_ns: int, parent: Context | None) -> None:
        """Record ``attempt``, which ended at ``end_ns``, under ``parent`` (None: current)."""
        host, port = self._server(attempt.url)
        common: dict[str, AttributeValue] = {
            names.HTTP_METHOD: attempt.method,
            names.SERVER_ADDRESS: host,
            names.SERVER_PORT: port,
            names.URL_TEMPLATE: attempt.path,
        }
        if attempt.status_code is not None:
            common[names.HTTP_STATUS] = attempt.status_code
        if attempt.error_type is not None:
            common[names.ERROR_TYPE] = attempt.error_type
        span_attributes = dict(common)
        span_attributes[names.URL_FULL] = attempt.url
        if attempt.resend_count:
            span_attributes[names.HTTP_RESEND_COUNT] = attempt.resend_count
        if attempt.task_id is not None:
            span_attributes[names.TASK_ID] = attempt.task_id
        if attempt.remaining is not None:
            span_attributes[names.RATE_LIMIT_REMAINING] = attempt.remaining
            self.last_remaining = attempt.remaining
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

    def _server(self, url: str) -> tuple[str, int]:
        server = self._servers.get(url)
        if server is None:
            parts = urlsplit(url)
            default_port = 443 if parts.scheme == "https" else 80
            server = (parts.hostname or "", parts.port or default_port)
            self._servers[url] = server
        return server
