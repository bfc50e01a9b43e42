"""In-memory OpenTelemetry SDK pipelines for the telemetry tests (never the global providers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grok_imagine_async.otel import Telemetry


@dataclass
class Pipeline:
    """A tracer and a meter provider whose output the test can read."""

    spans_exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, **options: Any) -> Telemetry:
        return Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = self.spans_exporter.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Each instrument's points as (attributes, value or (count, sum))."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = (point.count, point.sum)
                        points.append((dict(point.attributes), value))
        return found


def total(points: Sequence[tuple[dict[str, Any], Any]], match: dict[str, Any] | None = None) -> Any:
    """Sum of the values (or histogram counts) of the points whose attributes include ``match``."""
    wanted = match or {}
    selected = [
        value
        for attributes, value in points
        if all(attributes.get(k) == v for k, v in wanted.items())
    ]
    return sum(v[0] if isinstance(v, tuple) else v for v in selected)


def every_attribute(spans: Sequence[ReadableSpan]) -> list[Any]:
    """Every attribute value of the spans and their events, and the span and event names."""
    values: list[Any] = []
    for span in spans:
        values.append(span.name)
        values.extend((span.attributes or {}).values())
        for event in span.events:
            values.append(event.name)
            values.extend((event.attributes or {}).values())
    return values
