"""An OpenTelemetry SDK set up from the ``OTEL_*`` variables, for ``grok-imagine batch --otel``.

As the SDK's auto-configuration does, for its own providers only: the exporters named by
``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` (default ``otlp``, ``none`` for none),
found through their entry points; they and the resource read their own variables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any

from .telemetry import Telemetry

SDK_HINT = (
    'needs the OpenTelemetry SDK and an exporter: pip install "grok-imagine-async[otel]" '
    "opentelemetry-sdk opentelemetry-exporter-otlp"
)
_GROUPS = {
    "OTEL_TRACES_EXPORTER": "opentelemetry_traces_exporter",
    "OTEL_METRICS_EXPORTER": "opentelemetry_metrics_exporter",
}


def _exporters(variable: str) -> list[Any]:
    """The classes named by ``variable``, loaded from their entry points."""
    names = [n.strip() for n in os.environ.get(variable, "otlp").split(",") if n.strip()]
    found = []
    for name in names:
        if name == "none":
            continue
        matches = list(entry_points(group=_GROUPS[variable], name=name))
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
    """A :class:`Telemetry` exporting as the ``OTEL_*`` variables say; flushed at the end.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` (or the resource
            attributes) name one.

    Raises:
        ImportError: The SDK, or an exporter the variables name, is not installed (the
            message says what to install).
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ImportError(f"{SDK_HINT} ({exc})") from None
    span_exporters = _exporters("OTEL_TRACES_EXPORTER")
    metric_exporters = _exporters("OTEL_METRICS_EXPORTER")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    tracer_provider = TracerProvider(resource=resource)
    for span_exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter()))
    readers = []
    for metric_exporter in metric_exporters:
        made = metric_exporter()
        # Some entry points (prometheus) give a reader, which is pulled rather than pushed.
        readers.append(made if isinstance(made, MetricReader) else
                       PeriodicExportingMetricReader(made))  # fmt: skip
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield telemetry
    finally:
        telemetry.end_unfinished()  # an interrupted batch still shows its jobs in flight
        tracer_provider.shutdown()  # flushes: the last spans of the batch are not lost
        meter_provider.shutdown()
