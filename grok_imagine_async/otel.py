"""OpenTelemetry traces and metrics for the client and its schedulers (the ``otel`` extra).

Turn it on with one argument::

    client = AsyncGrokImagine(telemetry=True)  # the global tracer and meter providers

or pass providers explicitly (tests, several pipelines in one process)::

    from grok_imagine_async.otel import Telemetry

    client = AsyncGrokImagine(telemetry=Telemetry(tracer_provider=tp, meter_provider=mp))

Only ``opentelemetry-api`` is required; the SDK and exporters are yours to choose. The names
of every span, attribute and instrument are in the README's "Observability" section and in
:mod:`grok_imagine_async._telemetry.names`.
"""

from __future__ import annotations

try:
    import opentelemetry.trace  # noqa: F401  (the API is installed, or say which extra)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "grok_imagine_async.otel needs the OpenTelemetry API: "
        f'pip install "grok-imagine-async[otel]" ({exc})'
    ) from exc

from ._public import set_module as _set_module
from ._telemetry.names import OPERATION_NAME, PROVIDER_NAME
from ._telemetry.telemetry import Telemetry

__all__ = ["OPERATION_NAME", "PROVIDER_NAME", "Telemetry"]

_set_module(globals(), __all__)
