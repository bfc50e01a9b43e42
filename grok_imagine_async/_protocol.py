"""The API's protocol rules as pure functions: no I/O, called directly by tests.

Covers API.md rules 1 (two places for an error), 2 (status vocabulary), 3 (tolerant parsing)
and 6 (failure classes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ._errors import (
    APIResponseValidationError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._models import FailureClass, Task, TaskStatus

logger = logging.getLogger("grok_imagine_async")

_SUCCESS = frozenset({"completed", "complete", "success", "succeeded", "done"})
_FAILURE = frozenset({"failed", "fail", "failure", "error", "expired", "cancelled", "canceled"})
_PENDING = frozenset(
    {"pending", "queued", "waiting", "queuing", "submitted", "in_queue", "created"}
)
_PROCESSING = frozenset({"processing", "running", "generating", "in_progress", "started"})
_unknown_seen: set[str] = set()


def normalize_status(raw: object) -> TaskStatus:
    """Map a server status string to a :class:`TaskStatus`, case-insensitively (rule 2).

    Unknown values mean "not finished" (``UNKNOWN``) and are logged once per process.
    """
    key = str(raw).strip().lower().replace("-", "_").replace(" ", "_") if raw is not None else ""
    if key in _SUCCESS:
        return TaskStatus.COMPLETED
    if key in _FAILURE:
        return TaskStatus.FAILED
    if key in _PENDING:
        return TaskStatus.PENDING
    if key in _PROCESSING:
        return TaskStatus.PROCESSING
    if key not in _unknown_seen:
        _unknown_seen.add(key)
        logger.warning("unknown task status %r: treating it as not finished", raw)
    return TaskStatus.UNKNOWN


_FAILURE_MARKERS: tuple[tuple[FailureClass, tuple[str, ...]], ...] = (
    (FailureClass.CONTENT_POLICY, ("inappropriate", "content policy", "nsfw", "moderation")),
    (FailureClass.INVALID_INPUT, ("file type not supported", "not supported", "invalid image")),
    (FailureClass.TRANSIENT, ("network error", "try again later", "timeout", "temporar")),
    (FailureClass.GENERATION_FAILED, ("build failed", "generation failed")),
)


def classify_error_message(message: str | None) -> FailureClass:
    """The failure class a task's ``error_message`` indicates (rule 6)."""
    text = (message or "").lower()
    for failure_class, markers in _FAILURE_MARKERS:
        if any(marker in text for marker in markers):
            return failure_class
    return FailureClass.UNKNOWN


def classify_failure(task: Task) -> FailureClass | None:
    """Why ``task`` failed, or None if it succeeded or has not finished.

    A task that says "completed" but carries no video URL is a failure of its own kind
    (``NO_RESULT``, rule 3).
    """
    if task.status is TaskStatus.COMPLETED:
        return None if task.videos else FailureClass.NO_RESULT
    if task.status is TaskStatus.FAILED:
        return classify_error_message(task.error_message)
    return None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _as_urls(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, (list, tuple)):
        return tuple(item.strip() for item in value if isinstance(item, str) and item.strip())
    return ()


def parse_task(data: object, *, task_id: str) -> Task:
    """Build a :class:`Task` from the ``data`` of a status answer, tolerating gaps (rule 3).

    Missing, null or mistyped optional fields become None or empty; a missing ``task_id``
    falls back to the id that was asked for.

    Raises:
        APIResponseValidationError: If ``data`` is not an object or has no status at all.
    """
    if not isinstance(data, Mapping):
        raise APIResponseValidationError(
            f"status answer for {task_id} has no 'data' object", body=repr(data)[:500]
        )
    raw_status = data.get("status")
    if raw_status is None or not str(raw_status).strip():
        raise APIResponseValidationError(
            f"status answer for {task_id} carries no 'status'", body=repr(data)[:500]
        )
    error_message = data.get("error_message")
    request = data.get("request")
    raw_id = data.get("task_id")
    return Task(
        task_id=str(raw_id) if isinstance(raw_id, (str, int)) and str(raw_id) else task_id,
        status=normalize_status(raw_status),
        raw_status=str(raw_status),
        consumed_credits=_as_int(data.get("consumed_credits")),
        created_at=_as_datetime(data.get("created_at")),
        error_message=str(error_message) if error_message not in (None, "") else None,
        request=dict(request) if isinstance(request, Mapping) else None,
        videos=_as_urls(data.get("response")),
    )


def parse_task_id(data: object) -> str | None:
    """The ``task_id`` in a generate answer's ``data``, or None if there is none."""
    if isinstance(data, Mapping):
        task_id = data.get("task_id")
        if isinstance(task_id, (str, int)) and not isinstance(task_id, bool) and str(task_id):
            return str(task_id)
    return None


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
}


def status_error_class(code: int) -> type[APIStatusError]:
    """The exception class for an error ``code`` (HTTP status or body code)."""
    if code in _STATUS_CLASSES:
        return _STATUS_CLASSES[code]
    if code >= 500:
        return ServerError
    return APIStatusError


def find_error(
    http_status: int,
    body: Any,
    *,
    retry_after: float | None = None,
    method: str | None = None,
    path: str | None = None,
) -> APIStatusError | None:
    """The error an answer carries, or None if it is a success (rule 1).

    An answer is an error if its HTTP status is not 2xx *or* its JSON body's ``code`` is
    present and not 200. ``message`` and ``error`` are read from the body in both cases.

    Args:
        http_status: The HTTP status code.
        body: The decoded JSON body, or the raw text when it was not JSON.
        retry_after: Seconds to wait, as read from the headers, carried on the error.
        method: The request's method, for the error's context.
        path: The request's path, for the error's context.
    """
    body_code = _as_int(body.get("code")) if isinstance(body, Mapping) else None
    http_ok = 200 <= http_status < 300
    if http_ok and (body_code is None or body_code == 200):
        return None
    code = http_status if not http_ok else (body_code if body_code is not None else http_status)
    message = error_code = None
    if isinstance(body, Mapping):
        raw_message, raw_error = body.get("message"), body.get("error")
        message = str(raw_message) if raw_message not in (None, "") else None
        error_code = str(raw_error) if raw_error not in (None, "") else None
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:200]
    if message is None:
        message = f"HTTP {http_status}" if not http_ok else f"error code {code} in a 200 answer"
    return status_error_class(code)(
        message,
        status_code=code,
        http_status=http_status,
        error_code=error_code,
        body=body,
        retry_after=retry_after,
        method=method,
        path=path,
    )


def has_error_body(body: Any) -> bool:
    """True if ``body`` is a JSON error object (it names an ``error`` or a non-200 ``code``).

    A POST answered like this provably did not start a task, so it may be retried (rule 5).
    """
    if not isinstance(body, Mapping):
        return False
    code = _as_int(body.get("code"))
    return bool(body.get("error")) or (code is not None and code != 200)
