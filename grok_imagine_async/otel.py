"""OpenTelemetry traces and metrics for the client and its schedulers (the ``otel`` extra).

``AsyncGrokImagine(telemetry=True)`` uses the global providers; pass
``telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)`` to choose them. The names of the
spans, attributes and instruments are in the observability guide.
"""

from __future__ import annotations

from ._public import require_extra as _require_extra
from ._public import set_module as _set_module

_require_extra(__name__, "opentelemetry.trace", "the OpenTelemetry API", "otel")

from ._telemetry import OPERATION_NAME, PROVIDER_NAME, Telemetry

__all__ = ["OPERATION_NAME", "PROVIDER_NAME", "Telemetry"]

_set_module(globals(), __all__)
