"""OpenTelemetry instrumentation (the ``otel`` extra), public as :mod:`grok_imagine_async.otel`:
the names (:mod:`.names`), the observer (:mod:`.telemetry`), an SDK from ``OTEL_*``."""
