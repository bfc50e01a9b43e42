"""OpenTelemetry instrumentation (the ``otel`` extra); public as :mod:`grok_imagine_async.otel`.

- :mod:`.names`: every span, attribute and instrument name;
- :mod:`.timeline`: loop times to the wall-clock nanoseconds of OpenTelemetry;
- :mod:`.requests`: HTTP client spans and request metrics;
- :mod:`.jobs`: job spans and job metrics;
- :mod:`.gauges`: jobs by state, credits, quota;
- :mod:`.telemetry`: :class:`Telemetry`, the observer tying them together;
- :mod:`.sdk`: an SDK set up from the ``OTEL_*`` environment variables (the CLI's ``--otel``).

Importing this package needs ``opentelemetry-api``; :mod:`.sdk` also needs the SDK.
"""

from __future__ import annotations

from .telemetry import Telemetry

__all__ = ["Telemetry"]
