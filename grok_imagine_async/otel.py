"""OpenTelemetry traces and metrics for the client and its schedulers (the ``otel`` extra).

``AsyncGrokImagine(telemetry=True)`` uses the global providers; pass
``telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)`` to choose them. The names of the
spans, attributes and instruments are in the observability guide.
"""

from __future__ import annotations

try:
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "grok_imagine_async.otel needs the OpenTelemetry API: "
        f'pip install "grok-imagine-async[otel]" ({exc})'
    ) from exc

from ._public import set_module as _set_module
from ._telemetry import OPERATION_NAME, PROVIDER_NAME, Telemetry

__all__ = ["OPERATION_NAME", "PROVIDER_NAME", "Telemetry"]

_set_module(globals(), __all__)
