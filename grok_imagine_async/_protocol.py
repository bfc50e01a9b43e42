"""The API's protocol rules as pure functions (API.md rules 1-4; rule 6 is in ``_models``)."""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import re
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
from ._http import BadURL, lib
from ._limiting.protocol import Permit, RateLimitFeedback
from ._models import Task, TaskStatus

logger = logging.getLogger("grok_imagine_async")

_STATUSES = {  # rule 2's spellings, after lower-casing and "-"/" " to "_"
    word: status
    for status, words in (
        (TaskStatus.COMPLETED, "completed complete success succeeded done"),
        (TaskStatus.FAILED, "failed fail failure error expired cancelled canceled"),
        (TaskStatus.PENDING, "pending queued waiting queuing submitted in_queue created"),
        (TaskStatus.PROCESSING, "processing running generating in_progress started"),
    )
    for word in words.split()
}
MAX_UNKNOWN_REMEMBERED = 100  # unknown statuses logged once: a bounded LRU memo per process
MAX_INT = 10**15  # numbers beyond this (credits, codes) are not believable: read as missing


def normalize_status(raw: object) -> TaskStatus:
    """Map a server status to a :class:`TaskStatus` (rule 2); an unknown one means not finished
    (``UNKNOWN``) and is logged once per process."""
    status = _STATUSES.get(raw) if isinstance(raw, str) else None  # most: a spelling as is
    if status is None and raw is not None:
        status = _STATUSES.get(str(raw).strip().lower().replace("-", "_").replace(" ", "_"))
    if status is None:
        _warn_unknown(str(raw)[:100])
        return TaskStatus.UNKNOWN
    return status


@functools.lru_cache(maxsize=MAX_UNKNOWN_REMEMBERED)
def _warn_unknown(shown: str) -> None:
    logger.warning("unknown task status %r: treating it as not finished", shown)


def _as_int(value: object) -> int | None:
    """``value`` as a believable whole number, or None (never raises, whatever the server sent)."""
    if type(value) is int and -MAX_INT <= value <= MAX_INT:  # most: no conversion, no bool
        return value
    if isinstance(value, str):  # a longer one means nothing, even if int("9" * 400) works
        value = _parse_number(value) if len(value) <= 32 else None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else None  # False for inf and nan
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT:
        return value
    return None


def _as_datetime(value: object) -> datetime | None:
    try:
        if isinstance(value, str):
            return _iso_datetime(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        pass
    return None


@functools.lru_cache(maxsize=256)  # a task's every poll carries the same created_at
def _iso_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _as_urls(value: object, *, task_id: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return ()
    urls = tuple(item.strip() for item in value if isinstance(item, str) and item.strip())
    for url in urls:
        if not is_fetchable_url(url):
            raise APIResponseValidationError(
                f"status answer for {task_id} holds a result URL that is not a valid http(s) "
                f"URL: {url[:100]!r}"
            )
    return urls


_CONTROL_OR_SPACE = re.compile("[\x00-\x20\x7f]")
# A plain http(s) URL (a host with a letter, so no IPv4 to check; printable ASCII) parses in
# httpx and httpx2 alike, and matching costs a fortieth of parsing; no backtracking possible.
# Case spelled out: under (?i) each character costs twice as much to match.
_PLAIN_HTTP_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://[0-9.-]*[A-Za-z][A-Za-z0-9.-]*(?::[0-9]{1,5})?(?:[/?#][!-~]*)?"
)
_PLAIN_LENGTH = 2000


def is_fetchable_url(url: str) -> bool:
    """True if ``url`` is an absolute http(s) URL with a host that httpx can request."""
    if len(url) <= _PLAIN_LENGTH and _PLAIN_HTTP_URL.fullmatch(url):
        return True  # the URLs of every ordinary answer, without parsing them
    if _CONTROL_OR_SPACE.search(url):
        return False
    try:
        parsed = lib.URL(url)
    except BadURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def parse_task(data: Any, *, task_id: str) -> Task:
    """Build a :class:`Task` from the ``data`` of a status answer (rule 3): optional fields that
    are missing or mistyped become None or empty, a missing ``task_id`` the one asked for.

    Raises:
        APIResponseValidationError: If ``data`` is not an object or has no status at all.
    """
    raw_status = data.get("status") if isinstance(data, dict) else None
    if raw_status is None or not str(raw_status).strip():
        what = "carries no 'status'" if isinstance(data, dict) else "has no 'data' object"
        raise APIResponseValidationError(
            f"status answer for {task_id} {what}", body=repr(data)[:500]
        )
    error_message, request = data.get("error_message"), data.get("request")
    return Task(  # pydantic-core checks the fields in half what model_construct takes in Python
        task_id=(parse_task_id(data) or task_id)[:200],
        status=normalize_status(raw_status),
        raw_status=str(raw_status)[:200],
        consumed_credits=_as_int(data.get("consumed_credits")),
        created_at=_as_datetime(data.get("created_at")),
        error_message=str(error_message) if error_message not in (None, "") else None,
        request=dict(request) if isinstance(request, dict) else None,
        videos=_as_urls(data.get("response"), task_id=task_id),
    )


def parse_task_id(data: object) -> str | None:
    """The ``task_id`` (a string or a number) in an answer's ``data``, or None."""
    task_id = data.get("task_id") if isinstance(data, dict) else None
    if type(task_id) is str:  # most: no conversion
        return task_id or None
    if isinstance(task_id, bool) or not isinstance(task_id, (str, int)):
        return None
    return str(task_id) or None


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
}


def find_error(
    http_status: int,
    body: Any,
    *,
    retry_after: float | None = None,
    method: str | None = None,
    path: str | None = None,
) -> APIStatusError | None:
    """The error an answer carries (a non-2xx status, or a body ``code`` present and not 200),
    or None if it is a success (rule 1). ``body`` is the decoded JSON, or the raw text.

    Raises:
        APIResponseValidationError: If a 2xx answer's ``code`` is present but unreadable.
    """
    raw_code = body.get("code") if isinstance(body, dict) else None
    body_code = None if raw_code is None else _as_int(raw_code)
    http_ok = 200 <= http_status < 300
    if http_ok and raw_code is not None and body_code is None:
        # A success status whose body says "code": "inf": neither success nor a readable error.
        raise APIResponseValidationError(
            f"answer carries an unreadable code {str(raw_code)[:40]!r}",
            body=repr(body)[:500],
            method=method,
            path=path,
        )
    if http_ok and (body_code is None or body_code == 200):
        return None
    code = body_code if http_ok and body_code is not None else http_status
    message = error_code = None
    if isinstance(body, dict):
        raw_message, raw_error = body.get("message"), body.get("error")
        message = str(raw_message) if raw_message not in (None, "") else None
        error_code = str(raw_error) if raw_error not in (None, "") else None
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:200]
    if message is None:
        message = f"HTTP {http_status}" if not http_ok else f"error code {code} in a 200 answer"
    kind = _STATUS_CLASSES.get(code, ServerError if code >= 500 else APIStatusError)
    return kind(
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
    """True if ``body`` names an ``error`` or a non-200 ``code``: a POST answered so provably
    started no task, so it may be retried (rule 5)."""
    if not isinstance(body, dict):
        return False
    code = _as_int(body.get("code"))
    return bool(body.get("error")) or (code is not None and code != 200)


def _parse_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # spaces around it allowed
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_remaining(value: str | None) -> int | None:
    """``X-RateLimit-Remaining`` as a non-negative int, or None if absent or unreadable."""
    number = _parse_number(value)  # below 1: 0, as max(0, int()) without its call
    return None if number is None else int(number) if number >= 1.0 else 0


def parse_reset(value: str | None, *, now_unix: float) -> float | None:
    """``X-RateLimit-Reset`` (seconds, or a Unix time above 10**9) as seconds from now."""
    number = _parse_number(value)
    if number is None:
        return None
    seconds = number - now_unix if number > 1e9 else number
    return seconds if seconds > 0.0 else 0.0  # max() without its call: read on every answer


def parse_retry_after(value: str | None, *, now_unix: float) -> float | None:
    """``Retry-After`` (seconds, leniently a Unix time, or an HTTP date) as seconds from now."""
    seconds = parse_reset(value, now_unix=now_unix)
    if seconds is not None or value is None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return None if when.tzinfo is None else max(0.0, when.timestamp() - now_unix)


def read_rate_limit_headers(
    headers: Mapping[str, str], *, permit: Permit, status_code: int, now_unix: float
) -> RateLimitFeedback:
    """The limiter's feedback from one answer: ``X-RateLimit-Remaining``, ``X-RateLimit-Reset``
    and ``Retry-After`` of lower-cased (or case-insensitive) ``headers``, in seconds from now
    (rule 4); unreadable values become None."""
    retry_after = headers.get("retry-after")  # absent from most answers
    return RateLimitFeedback(  # positional: keywords cost twice as much, on every answer
        permit,
        status_code,
        parse_remaining(headers.get("x-ratelimit-remaining")),
        parse_reset(headers.get("x-ratelimit-reset"), now_unix=now_unix),
        None if retry_after is None else parse_retry_after(retry_after, now_unix=now_unix),
    )
