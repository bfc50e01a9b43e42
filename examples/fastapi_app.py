"""A small video service on FastAPI: many users, one rate-limited client, no polling handlers.

Endpoints:

- ``POST /videos`` starts a generation and answers 202 with the job's id at once;
  ``?wait=true&timeout=20`` waits up to that long and answers 200 with the videos if they are
  ready by then (still 202 with the id if not).
- ``GET /videos/{id}`` tells the job's status, an estimated progress, and the video URLs.
- ``GET /videos/{id}/events`` streams the job's changes as Server-Sent Events until it is done.
- ``GET /healthz`` answers 200 while jobs can run (``"degraded"``, naming the trouble, while
  the video service fails systematically or the shared job store is unavailable), 503 once
  the video scheduler stopped (a revoked token, a crash, the video service never reached) or
  while the rate limiter grants nothing to requests that wait (``"limiter": "stalled"``):
  point your orchestrator's health check at it to restart the worker. While the video
  service fails systematically, ``POST /videos`` answers 503 with ``Retry-After``.
- ``GET /metrics`` serves quota, credits, jobs and latencies to Prometheus (with the
  ``otel-prometheus`` extra).

Errors are JSON ``{"detail": ..., "error": <code>}``, each documented in the OpenAPI schema
(``/docs``): 400 for a body that is not JSON, 413 for one over 64 KiB, 422 for bad input (the
fields named, their values never echoed) or a refused prompt, 402 when the credit budget is
spent, 404 for an unknown job, 429 when too many jobs are waiting, 502/503/504 when the video
service fails. Never a stack trace, never the API token.

Run it from a clone (``pip install ".[fastapi]" uvicorn``; the package is not on PyPI yet)::

    export GROK_IMAGINE_API_KEY=...        # and GROK_IMAGINE_PLAN=pro if you have it
    uvicorn fastapi_app:app --app-dir examples --timeout-graceful-shutdown 5

or against the local emulator, no account needed, with the environment it prints (its quota
and speed included, so that the app paces itself and polls at the emulator's pace)::

    grok-imagine emulator --port 8001 --time-scale 10 &
    GROK_IMAGINE_API_KEY=test-token GROK_IMAGINE_BASE_URL=http://127.0.0.1:8001 \\
        GROK_IMAGINE_PLAN=100/6s GROK_IMAGINE_TIME_SCALE=10 \\
        uvicorn fastapi_app:app --app-dir examples

    curl -X POST localhost:8000/videos -H 'content-type: application/json' \\
        -d '{"prompt": "a paper boat on a river"}'
    curl -N localhost:8000/videos/<id>/events

Several workers (``uvicorn --workers 4``, replicas, hosts) act as one client of the token when
they share a Redis: set ``GROK_IMAGINE_REDIS_URL=redis://localhost:6379/0`` (and
``GROK_IMAGINE_REDIS_NAMESPACE`` to keep another app of the same token apart). The quota, the
credit budget and the jobs are then shared: any worker answers for any job, and the jobs of a
worker that dies are taken over by the others, never paid twice.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from grok_imagine_async import GenerationRequest, Job
from grok_imagine_async.fastapi import (
    BodyLimitMiddleware,
    GrokJobs,
    JobRegistry,
    error_response,
    error_responses,
    event_stream_response,
    grok_imagine_lifespan,
    http_error_for,
    install_error_handlers,
)

DEFAULT_WAIT = 20.0
"""Seconds ``?wait=true`` waits unless told otherwise."""
MAX_WAIT = 60.0
"""The longest wait a caller may ask for: a handler must not hold a connection for minutes."""


class VideoRequest(BaseModel):
    """What a user asks for."""

    # The library's own rule (no ``spicy`` with images) in the schema too, so that clients
    # generated from it, and fuzzers, know it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "not": {
                "required": ["mode", "images"],
                "properties": {"mode": {"const": "spicy"}, "images": {"minItems": 1}},
            }
        },
    )

    prompt: str = Field(
        min_length=1, max_length=2000, pattern=r"\S", examples=["a paper boat on a river"]
    )
    mode: Literal["fun", "normal", "spicy"] = "normal"
    ratio: Literal["1:1", "2:3", "3:2"] = "1:1"
    images: list[HttpUrl] = Field(default_factory=list, max_length=4)

    def to_generation(self) -> GenerationRequest:
        """The library's request (its own rules apply too, e.g. no ``spicy`` with images)."""
        images = [str(url) for url in self.images] or None
        return GenerationRequest(
            prompt=self.prompt, mode=self.mode, ratio=self.ratio, images=images
        )


class VideoError(BaseModel):
    """Why a job failed."""

    code: str
    detail: str


class VideoJob(BaseModel):
    """A job as users see it."""

    id: str
    status: Literal["queued", "submitting", "running", "completed", "failed"]
    progress: float | None = Field(
        description="Estimated share done, 0 to 1 (the API reports none); null if unknown"
    )
    videos: list[str] = Field(description="Video URLs once completed (valid about 24 hours)")
    error: VideoError | None = None
    status_url: str
    events_url: str


def describe(job: Job) -> VideoJob:
    """The public view of ``job``: no task id, no upstream message beyond the failure reason."""
    result = job.result
    error = None
    if result is not None and result.error is not None:
        problem = http_error_for(result.error)
        error = VideoError(code=problem.code, detail=problem.detail)
    return VideoJob(
        id=job.key,
        status=job.status.value,
        progress=job.progress,
        videos=list(result.videos) if result is not None else [],
        error=error,
        status_url=f"/videos/{job.key}",
        events_url=f"/videos/{job.key}/events",
    )


def create_app(*, heartbeat: float = 15.0, metrics: bool = True, **grok_options: Any) -> FastAPI:
    """Build the app.

    Args:
        heartbeat: Seconds between keep-alive (or progress) events on an idle event stream.
        metrics: Serve ``GET /metrics`` for Prometheus (when the ``otel-prometheus`` extra is
            installed; see :func:`add_metrics`).
        **grok_options: Passed to :func:`grok_imagine_lifespan` (``settings``, ``journal``,
            ``max_credits``, ``redis_url``, ``http_client``...); by default everything comes
            from the ``GROK_IMAGINE_*`` environment variables (``$GROK_IMAGINE_REDIS_URL``
            for ``redis_url``, ``$GROK_IMAGINE_REDIS_NAMESPACE`` for ``redis_namespace``).
    """
    redis_url = os.environ.get("GROK_IMAGINE_REDIS_URL")
    if redis_url and "journal" not in grok_options:
        grok_options.setdefault("redis_url", redis_url)
        # Apps of one token on one Redis share jobs and budget unless their namespaces differ.
        grok_options.setdefault(
            "redis_namespace", os.environ.get("GROK_IMAGINE_REDIS_NAMESPACE") or "app"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Your own startup and shutdown go around this block.
        async with grok_imagine_lifespan(app, **grok_options):
            yield

    app = FastAPI(title="Videos", lifespan=lifespan)
    install_error_handlers(app)  # every error as {"detail", "error"}, documented below
    app.add_middleware(BodyLimitMiddleware)  # 413 past 64 KiB, before anything reads the body
    if metrics and "client_factory" not in grok_options:
        grok_options.setdefault("telemetry", add_metrics(app))

    async def find(jobs: JobRegistry, video_id: str) -> Job:
        job = await jobs.get(video_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such video job")
        return job

    @app.post(
        "/videos",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=VideoJob,
        responses={
            200: {"model": VideoJob, "description": "Finished within the wait"},
            **error_responses(400, 402, 413, 422, 429, 502, 503, 504),
        },
    )
    async def create_video(
        body: VideoRequest,
        jobs: GrokJobs,
        response: Response,
        wait: bool = False,
        wait_for: Annotated[float, Query(alias="timeout", gt=0, le=MAX_WAIT)] = DEFAULT_WAIT,
    ) -> Any:
        """Start a video; with ``wait=true``, wait up to ``timeout`` seconds for it."""
        job = await jobs.submit(body.to_generation())
        response.headers["Location"] = f"/videos/{job.key}"
        if wait:
            with anyio.move_on_after(wait_for):
                await jobs.wait_finished(job)
            result = job.result
            if result is not None and result.error is not None:
                return error_response(result.error, id=job.key)
            if result is not None:
                response.status_code = status.HTTP_200_OK
        return describe(job)

    @app.get("/healthz", responses=error_responses(503))
    async def health(jobs: GrokJobs, response: Response) -> dict[str, str]:
        """200 while this worker can run jobs, naming what is in trouble (``"degraded"``: the
        video service failing, the shared job store); 503 once its scheduler stopped (a
        revoked token, the video service never reached) or while its rate limiter grants
        nothing to requests that wait (``"limiter": "stalled"``): restart it."""
        found = jobs.health()
        body = {
            "status": "ok" if found.detail == "ok" else "degraded",
            "provider": found.provider,
            "store": found.store,
            "limiter": found.limiter,
            "detail": found.detail,
        }
        if not found.serving or found.limiter == "stalled":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            body.update(status="failing", error="unavailable")  # also an error body
        return body

    @app.get(
        "/videos/{video_id}", response_model=VideoJob, responses=error_responses(404, 422, 503)
    )
    async def get_video(video_id: str, jobs: GrokJobs) -> VideoJob:
        """The job's status, estimated progress and, once completed, its video URLs."""
        return describe(await find(jobs, video_id))

    @app.get(
        "/videos/{video_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}},
            **error_responses(404, 422, 503),
        },
    )
    async def video_events(video_id: str, jobs: GrokJobs) -> StreamingResponse:
        """Server-Sent Events: ``status``/``progress`` until one ``done`` (or ``error``)."""
        job = await find(jobs, video_id)
        return event_stream_response(
            jobs,
            job,
            render=lambda j: describe(j).model_dump(mode="json"),
            heartbeat=heartbeat,
        )

    return app


# -- /metrics: quota, credits, jobs and latencies for Prometheus -------------------------------


def add_metrics(app: FastAPI) -> Any:
    """Serve ``GET /metrics`` in Prometheus' text format; return the client's telemetry.

    The client's OpenTelemetry metrics (``grok_imagine_*``, ``http_client_request_duration``)
    go through the OpenTelemetry Prometheus exporter into a registry of this app's own. Spans go
    to the global tracer provider: set one up (``opentelemetry-instrument``, or your own SDK
    code) to see them. Without the ``otel-prometheus`` extra, there is no ``/metrics`` and the
    client records nothing (None is returned).
    """
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from grok_imagine_async.otel import Telemetry
    except ImportError:
        return None
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:  # sync: collecting runs in a worker thread
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Telemetry(meter_provider=provider)


app = create_app()
"""The app ``uvicorn fastapi_app:app`` serves (the client is built at startup, from the env)."""
