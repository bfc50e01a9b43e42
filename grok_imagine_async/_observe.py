"""The instrumentation seam: an :class:`Observer` gets a :class:`RequestAttempt` per request and
every ``JobEvent``; :func:`job_scope` ties a request to its job. No observer: no cost."""

from __future__ import annotations

import contextvars
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import APIStatusError

if TYPE_CHECKING:
    from ._scheduling.jobs import JobEvent, SchedulerHook


@dataclass(frozen=True, slots=True)
class JobScope:
    """The job a request is sent for: its ``key`` (unique per scheduler) in scheduler ``owner``."""

    owner: object
    key: str


_CURRENT_JOB: contextvars.ContextVar[JobScope | None] = contextvars.ContextVar(
    "grok_imagine_job", default=None
)


class _Scope:  # cheaper than a generator-based context manager
    __slots__ = ("_scope", "_token")

    def __init__(self, owner: object, key: str) -> None:
        self._scope = JobScope(owner, key)

    def __enter__(self) -> None:
        self._token = _CURRENT_JOB.set(self._scope)

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT_JOB.reset(self._token)


_OFF: AbstractContextManager[None] = nullcontext()


def job_scope(observer: Observer | None, owner: object, key: str) -> AbstractContextManager[None]:
    """Mark the requests sent inside the block as made for job ``key`` of ``owner``."""
    return _OFF if observer is None else _Scope(owner, key)


@dataclass(slots=True)
class RequestAttempt:
    """One request as sent and answered (or not), handed to :meth:`Observer.on_request` at its end.

    Attributes:
        method: ``"GET"`` or ``"POST"``.
        url: The full URL without the query (never carries the token).
        path: The endpoint path (``/v1/generate``, ``/v1/status``): a low-cardinality name.
        resend_count: 0 for the first send of a call, 1 for its first retry...
        status_code: The HTTP status of the answer, None if none arrived.
        error_type: Why it failed (the status code as text, or our exception's class name such
            as ``"APITimeoutError"``), None if it succeeded.
        started_at: Clock time the request was sent (after its permit).
        duration: Seconds from sending to the end of the answer (or the failure).
        permit_wait: Seconds waited for the rate-limit permit (and a journal's write).
        remaining: ``X-RateLimit-Remaining`` of the answer, if it carried one.
        task_id: The task a status read asked about, if any.
        job: The scheduler job the request was sent for, if any.
    """

    method: str
    url: str
    path: str
    resend_count: int
    status_code: int | None
    error_type: str | None
    started_at: float
    duration: float
    permit_wait: float
    remaining: int | None
    task_id: str | None
    job: JobScope | None


def start_attempt(
    now: float, method: str, url: str, path: str, resend_count: int, task_id: str | None
) -> RequestAttempt:
    """A request that begins at ``now``, waiting for its permit; filled in as it travels."""
    job = _CURRENT_JOB.get()
    return RequestAttempt(
        method, url, path, resend_count, None, None, now, 0.0, 0.0, None, task_id, job
    )


def mark_sent(attempt: RequestAttempt, now: float) -> None:
    """The request leaves at ``now``: what came before was the wait for its permit."""
    attempt.permit_wait, attempt.started_at = now - attempt.started_at, now


def end_attempt(attempt: RequestAttempt, now: float, error: BaseException | None) -> RequestAttempt:
    """The attempt as it ended at ``now``, with ``error`` if it failed."""
    attempt.duration = now - attempt.started_at
    if isinstance(error, APIStatusError):
        attempt.error_type = str(error.status_code)
    elif error is not None:
        attempt.error_type = type(error).__name__
    return attempt


class Observer(Protocol):
    """Receives what the client and its schedulers do (``otel.Telemetry`` is one; pass any as
    ``AsyncGrokImagine(telemetry=...)``); must return quickly and never raise."""

    def on_request(self, attempt: RequestAttempt) -> None:
        """One request was sent and its answer read (or it failed)."""

    def on_job_event(self, owner: Any, event: JobEvent) -> None:
        """The scheduler ``owner`` emitted ``event`` (in the event loop, synchronously)."""


def observed_hook(
    observer: Observer | None, owner: object, hook: SchedulerHook | None
) -> SchedulerHook | None:
    """``hook``, also feeding ``observer`` (if any) every event of the scheduler ``owner``."""
    if observer is None:
        return hook

    def both(event: JobEvent) -> None:
        if hook is not None:
            hook(event)
        observer.on_job_event(owner, event)

    return both
