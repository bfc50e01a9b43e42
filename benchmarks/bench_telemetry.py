"""Benchmark of what telemetry costs per request, on and off, side by side.

Run from the repository root::

    python -m benchmarks.bench_telemetry

Needs the ``emulator`` and ``otel-prometheus`` extras (for the SDK). Writes
``benchmarks/results/telemetry.md`` and prints it.

1. **Per request.** One coroutine calls ``get_task`` 500 times in a row through an
   ``httpx.MockTransport`` that answers at once (no network, so the client's own cost is all
   there is) and a limiter that grants at once. Rows: httpx alone on the same transport, with
   ``params=`` and with the query written in the URL as the client writes it (the floor), the
   client with telemetry off, on with the API's no-op providers (the ``otel`` extra
   without an SDK), and on with the SDK (spans through a ``BatchSpanProcessor`` into an exporter
   that drops them, metrics into an ``InMemoryMetricReader``). CPU time of the process; each
   row is run 60 times, interleaved with the others, and the least is shown (other processes'
   load only ever adds time, and this machine is shared).
2. **The pieces alone.** What the seam costs when off (the scheduler's ``job_scope`` around
   each request; the sender's one ``None`` check is below measuring), and the observer call
   itself on a ready-made attempt, with no-op providers and with the SDK: 20,000 calls each,
   least of 5 runs. These are exact where the end-to-end rows are within the machine's noise.
3. **Per job.** ``generate_many`` of 500 jobs on the in-process emulator, on the virtual-time
   loop (no sleeping): CPU seconds per job with telemetry off and on (SDK), which adds the job
   spans, their events and the statistics snapshots behind the gauges.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks._open_limiter import OpenLimiter
from grok_imagine_async import AsyncGrokImagine
from grok_imagine_async._observe import RequestAttempt, job_scope
from grok_imagine_async.otel import Telemetry
from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "telemetry.md"
TOKEN = "bench-token"
REQUESTS = 500
ROUNDS = 60
CALLS = 20_000
JOBS = 500
_QUERY = {"task_id": "task_1"}
ANSWER = {
    "code": 200,
    "message": "success",
    "data": {"task_id": "task_1", "status": "processing", "consumed_credits": 40},
}


class _Drop(SpanExporter):
    """Receives every span and keeps none: the cost of recording, not of shipping."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=ANSWER, headers={"X-RateLimit-Remaining": "999"})


def _sdk() -> tuple[Telemetry, Callable[[], None]]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    def close() -> None:
        reader.get_metrics_data()
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider), close


def _noop() -> tuple[Telemetry, Callable[[], None]]:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    return Telemetry(
        tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    ), lambda: None


async def _client_run(telemetry: Telemetry | None) -> float:
    http = httpx.AsyncClient(transport=httpx.MockTransport(_answer), base_url="https://api.test")
    client = AsyncGrokImagine(
        api_key=TOKEN, http_client=http, limiter=OpenLimiter(), telemetry=telemetry
    )
    async with http:
        await client.get_task("task_1")  # warm caches outside the timing
        started = time.process_time()
        for _ in range(REQUESTS):
            await client.get_task("task_1")
        return (time.process_time() - started) / REQUESTS


async def _httpx_run(*, written: bool = False) -> float:
    """httpx alone: ``get(path, params=...)`` as one writes it, or (``written``) with the query
    already in the URL, as the client writes it (which spares httpx a second URL parse)."""
    url, params = ("/v1/status?task_id=task_1", None) if written else ("/v1/status", _QUERY)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(_answer), base_url="https://api.test"
    ) as http:
        await http.get(url, params=params)
        started = time.process_time()
        for _ in range(REQUESTS):
            response = await http.get(url, params=params)
            response.json()
        return (time.process_time() - started) / REQUESTS


def per_request() -> list[tuple[str, float]]:
    """Least CPU seconds per request of each configuration, over the rounds."""

    def off() -> Awaitable[float]:
        return _client_run(None)

    def on_noop() -> Awaitable[float]:
        telemetry, _ = _noop()
        return _client_run(telemetry)

    rows: dict[str, Callable[[], Awaitable[float]]] = {
        "httpx alone, `params=`": _httpx_run,
        "httpx alone, query written in the URL (the floor)": lambda: _httpx_run(written=True),
        "client, telemetry off": off,
        "client, telemetry on, no SDK (no-op providers)": on_noop,
    }
    samples: dict[str, list[float]] = {name: [] for name in [*rows, "client, telemetry on, SDK"]}
    for _ in range(ROUNDS):
        for name, run in rows.items():
            samples[name].append(anyio.run(run))
        telemetry, close = _sdk()
        samples["client, telemetry on, SDK"].append(anyio.run(_client_run, telemetry))
        close()
    # The least of many interleaved runs: load from other processes only ever adds time.
    return [(name, min(values)) for name, values in samples.items()]


def pieces() -> list[tuple[str, float]]:
    """Least CPU seconds per call of the seam's parts, over 5 runs of CALLS calls."""
    attempt = RequestAttempt(
        method="GET",
        url="https://api.test/v1/status",
        path="/v1/status",
        resend_count=0,
        status_code=200,
        error_type=None,
        started_at=0.0,
        duration=0.001,
        permit_wait=0.0,
        remaining=999,
        task_id="task_1",
        job=None,
    )
    owner = object()

    async def scope(observer: Telemetry | None) -> float:
        started = time.process_time()
        for _ in range(CALLS):
            with job_scope(observer, owner, "key"):
                pass
        return (time.process_time() - started) / CALLS

    async def observe(telemetry: Telemetry) -> float:
        started = time.process_time()
        for _ in range(CALLS):
            telemetry.on_request(attempt)
        return (time.process_time() - started) / CALLS

    found: dict[str, list[float]] = {"off: job_scope enter + exit": []}
    found["on: job_scope enter + exit"] = []
    found["on: Telemetry.on_request, no-op providers"] = []
    found["on: Telemetry.on_request, SDK"] = []
    for _ in range(5):
        found["off: job_scope enter + exit"].append(anyio.run(scope, None))
        found["on: job_scope enter + exit"].append(anyio.run(scope, _noop()[0]))
        found["on: Telemetry.on_request, no-op providers"].append(anyio.run(observe, _noop()[0]))
        telemetry, close = _sdk()
        found["on: Telemetry.on_request, SDK"].append(anyio.run(observe, telemetry))
        close()
    return [(name, min(values)) for name, values in found.items()]


def _job_run(telemetry: Telemetry | None) -> float:
    async def main() -> float:
        emu = Emulator(EmulatorConfig(tokens={TOKEN: "enterprise"}, seed=1, duration_sigma=0.3))
        client = AsyncGrokImagine(
            api_key=TOKEN,
            http_client=emu.client(token=None),
            plan="enterprise",
            telemetry=telemetry,
        )
        started = time.process_time()
        async with client.generate_many([f"clip {i}" for i in range(JOBS)]) as results:
            done = [r async for r in results]
        assert len(done) == JOBS
        assert all(r.ok for r in done)
        return (time.process_time() - started) / JOBS

    return run_virtual(main)


def per_job() -> list[tuple[str, float]]:
    """Least CPU seconds per job of 3 runs, telemetry off and on."""
    off: list[float] = []
    on: list[float] = []
    for _ in range(3):
        off.append(_job_run(None))
        telemetry, close = _sdk()
        on.append(_job_run(telemetry))
        close()
    return [("telemetry off", min(off)), ("telemetry on, SDK", min(on))]


def render(
    requests: list[tuple[str, float]],
    parts: list[tuple[str, float]],
    jobs: list[tuple[str, float]],
) -> str:
    off = dict(requests)["client, telemetry off"]
    lines = [
        "# Telemetry overhead",
        "",
        f"`python -m benchmarks.bench_telemetry` — Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared, loaded).",
        "",
        f"## Per request (CPU time, least of {ROUNDS} runs of {REQUESTS:,} `get_task` calls, "
        "instant transport)",
        "",
        "| configuration | µs per request | vs. telemetry off |",
        "|---|---:|---:|",
    ]
    for name, seconds in requests:
        delta = seconds - off
        versus = "—" if name == "client, telemetry off" else f"{delta * 1e6:+.1f} µs"
        lines.append(f"| {name} | {seconds * 1e6:.1f} | {versus} |")
    lines += [
        "",
        f"## The pieces alone (CPU time, least of 5 runs of {CALLS:,} calls)",
        "",
        "| piece | µs per call |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds * 1e6:.2f} |" for name, seconds in parts]
    lines += [
        "",
        f"## Per job (CPU time, least of 3 runs of {JOBS} jobs, emulator in process, virtual time)",
        "",
        "| configuration | CPU ms per job |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds * 1e3:.2f} |" for name, seconds in jobs]
    return "\n".join(lines) + "\n"


def main() -> int:
    requests = per_request()
    parts = pieces()
    jobs = per_job()
    text = render(requests, parts, jobs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
