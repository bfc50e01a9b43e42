"""A job's life as Server-Sent Events: the text format, and the answer streaming one job."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import StreamingResponse

from .._errors import ConfigurationError, SchedulerClosedError
from .._scheduling.jobs import Job, JobState
from ._errors import http_error_for
from ._jobs import JobRegistry

HEARTBEAT = ": keep-alive\n\n"  # a comment clients ignore; it keeps proxies from closing


def sse_event(data: Any, *, event: str | None = None, event_id: str | None = None) -> str:
    """One Server-Sent Event whose ``data`` is ``data`` as compact JSON.

    Example:
        >>> sse_event({"status": "running"}, event="status")
        'event: status\\ndata: {"status":"running"}\\n\\n'
    """
    named = {"event": event, "id": event_id}
    lines = [f"{name}: {_one_line(value)}" for name, value in named.items() if value is not None]
    # Compact JSON has no raw newline (they are escaped), so it is always one data line.
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(lines) + "\n\n"


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


async def _job_events(
    jobs: JobRegistry, job: Job, render: Callable[[Job], Mapping[str, Any]], heartbeat: float
) -> AsyncIterator[str]:
    seen, count = job.status, 0
    if not seen.is_final:
        yield sse_event(render(job), event="status", event_id="0")
    try:
        while not seen.is_final:
            # No yield inside the cancel scope: the consumer may stop iterating at any yield.
            with anyio.move_on_after(heartbeat):
                await jobs.wait_changed(job, seen)
            count += 1
            if job.status is not seen:
                seen = job.status
                if not seen.is_final:
                    yield sse_event(render(job), event="status", event_id=str(count))
            elif seen is JobState.RUNNING:
                yield sse_event(render(job), event="progress", event_id=str(count))
            else:
                yield HEARTBEAT
    except SchedulerClosedError as exc:
        problem = http_error_for(exc)
        yield sse_event({"error": problem.code, "detail": problem.detail}, event="error")
        return
    yield sse_event(render(job), event="done", event_id=str(count + 1))


def event_stream_response(
    jobs: JobRegistry,
    job: Job,
    *,
    render: Callable[[Job], Mapping[str, Any]],
    heartbeat: float = 15.0,
) -> StreamingResponse:
    """A ``text/event-stream`` answer following ``job`` (from ``jobs``) until it finishes.

    Events: ``status`` on each change of state, ``progress`` every ``heartbeat`` seconds while
    it runs, then one ``done`` (or one ``error`` if the app stops first), each carrying
    ``render(job)`` as JSON; comment lines keep an idle stream open through proxies.
    """
    if not heartbeat > 0:  # NaN refused too
        raise ConfigurationError(f"heartbeat must be positive seconds, got {heartbeat!r}")
    return StreamingResponse(
        _job_events(jobs, job, render, heartbeat),
        media_type="text/event-stream",
        # No caching, and no buffering by nginx-like proxies: events must arrive as sent.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
