"""Every error an app answers as one JSON body, ``{"detail": ..., "error": <code>}``; the
mapping from our exceptions is the pure function :func:`http_error_for`."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import (
    AmbiguousSubmitError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    GrokImagineError,
    InvalidRequestError,
    JournalError,
    RateLimitError,
    SchedulerClosedError,
    TaskFailedError,
    WaitTimeoutError,
)
from .._models import FailureClass

logger = logging.getLogger("grok_imagine_async.fastapi")


class BacklogFullError(GrokImagineError):
    """Raised when an app refuses a new job because ``queued`` jobs already wait for a
    submission slot; trying again after ``retry_after`` seconds is likely to succeed."""

    def __init__(self, *, queued: int, retry_after: float) -> None:
        self.queued, self.retry_after = queued, retry_after
        super().__init__(f"{queued} video jobs are already waiting to start; try again later")


class ProviderDownError(GrokImagineError):
    """Raised when an app refuses a new job because its breaker says the service is failing.

    Attributes:
        reason: ``"outage"``, ``"unanswered"``, ``"unreachable"`` or ``"refused"``.
        retry_after: Seconds until the next probe, if known.
    """

    def __init__(self, *, reason: str, retry_after: float | None) -> None:
        self.reason, self.retry_after = reason, retry_after
        super().__init__(f"the video service is failing systematically ({reason})")


@dataclass(frozen=True, slots=True)
class HTTPProblem:
    """How to answer an HTTP caller for one exception (see :func:`http_error_for`).

    Attributes:
        code: A stable, machine-readable error code (e.g. ``"budget_exceeded"``).
        detail: A message safe to show the caller.
        retry_after: Seconds for a ``Retry-After`` header, if waiting can help.
    """

    status_code: int
    code: str
    detail: str
    retry_after: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, rounded up) when set, else nothing."""
        wait = self.retry_after
        return {} if wait is None else {"Retry-After": str(max(1, math.ceil(wait)))}


_UPSTREAM = "the video service failed"
_DOWN = {
    "outage": "the video service is failing right now; new videos are not started until it "
    "works again",
    "unanswered": "the video service is not answering; new videos are not started until it does",
    "unreachable": "the video service cannot be reached; new videos cannot be started",
    "refused": "the video service refused every recent video; new ones are not started",
}
# Advice to the programmer, e.g. "(pass allow_unlisted=True ...)": no HTTP caller can act on it.
_PYTHON_ADVICE = re.compile(r"\s*\(pass [^()]*\)")
_TASK_FAILED = {  # failure class: (status, detail); the caller's prompt or image is a 422
    FailureClass.CONTENT_POLICY: (422, "the prompt or image was refused by the video service"),
    FailureClass.INVALID_INPUT: (422, "the video service cannot use this input"),
    FailureClass.TRANSIENT: (502, f"{_UPSTREAM} for now; try again later"),
}
# (exception, status, code, detail, Retry-After unless the exception has one), first match wins.
_Answer = tuple[type[BaseException], int, str, str | Callable[[Any], str], float | None]
_ANSWERS: tuple[_Answer, ...] = (
    (InvalidRequestError, 422, "invalid_request", lambda e: _PYTHON_ADVICE.sub("", str(e)), None),
    (BacklogFullError, 429, "too_many_pending", str, 1.0),
    (ProviderDownError, 503, "upstream_down", lambda e: _DOWN.get(e.reason, _DOWN["outage"]), 30.0),
    (JournalError, 503, "store_unavailable", "the job store is not available right now", 5.0),
    (RateLimitError, 503, "upstream_rate_limited", "the video service is busy", 60.0),
    (BudgetExceededError, 402, "budget_exceeded", "the credit budget for videos is used up", None),
    (SchedulerClosedError, 503, "unavailable", "video generation is not available right now", None),
    # A handler's bounded wait: the job goes on.
    (WaitTimeoutError, 504, "not_ready", "the video was not ready in time; ask again later", None),
    (BadRequestError, 422, "rejected_by_upstream", "the video service rejected this request", None),
    (APITimeoutError, 504, "upstream_timeout", "the video service did not answer in time", None),
    (AmbiguousSubmitError, 502, "ambiguous_submit", "the video service did not confirm the "
     "job; it was not sent again, to avoid paying twice", None),
    # The operator's problem, not the caller's: say nothing about credentials.
    (AuthenticationError, 502, "upstream_error", _UPSTREAM, None),
    (ConfigurationError, 500, "internal_error", "the server is not configured correctly", None),
    (APIStatusError, 502, "upstream_error", lambda e: f"{_UPSTREAM} (HTTP {e.status_code})", None),
    (APIError, 502, "upstream_error", _UPSTREAM, None),
)  # fmt: skip


def http_error_for(exc: BaseException) -> HTTPProblem:
    """The HTTP answer for ``exc``, as the FastAPI guide lists them (else a 500 ``internal_error``);
    its ``detail`` never carries the token, a stack trace, upstream text or advice for programmers.

    Example:
        >>> http_error_for(BudgetExceededError(max_credits=80, committed_credits=80)).status_code
        402
    """
    if isinstance(exc, TaskFailedError):
        failed = _TASK_FAILED.get(exc.failure_class, (502, f"{_UPSTREAM} to generate this video"))
        return HTTPProblem(failed[0], exc.failure_class.value, failed[1])
    for kind, status, code, detail, retry in _ANSWERS:
        if isinstance(exc, kind):
            if retry is not None and (told := getattr(exc, "retry_after", None)) is not None:
                retry = told  # 0 included: the service said now, not "unknown"
            text = detail if isinstance(detail, str) else detail(exc)
            return HTTPProblem(status, code, text, retry)
    return HTTPProblem(500, "internal_error", "internal server error")


DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""The request body :class:`BodyLimitMiddleware` accepts by default."""

_MAX_FIELDS = 20  # problems listed in a 422: a body of a million bad keys gets 20 lines
_MAX_TEXT = 200  # characters of one field name or problem, which may come from the input
_BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's own 400 (not UTF-8...)
_MALFORMED = (400, "malformed_body", "the request body is not valid JSON")
_PHRASES = {status.value: status.phrase for status in HTTPStatus}  # 404: "Not Found" (not_found)


class FieldProblem(BaseModel):
    """One field of a request that failed validation, without the value it was given."""

    field: str = Field(description="Where, e.g. 'body.prompt' or 'query.timeout'")
    problem: str = Field(description="What is wrong with it")


class ErrorBody(BaseModel):
    """The JSON body of every error answer of the integration."""

    model_config = ConfigDict(extra="allow")  # e.g. the job ``id`` a handler adds

    detail: str = Field(description="What went wrong, safe to show (no token, no stack trace)")
    error: str = Field(description="A stable, machine-readable code, e.g. 'budget_exceeded'")
    fields: list[FieldProblem] | None = Field(
        default=None, description="For a request that failed validation: the fields at fault"
    )


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds after which trying again is likely to succeed",
        "schema": {"type": "integer"},
    }
}
# No 500: that is a bug, not an answer.
_STATUSES = {
    400: "The request body is not valid JSON (`malformed_body`)",
    402: "The credit budget for videos is used up (`budget_exceeded`)",
    404: "No such resource, e.g. an unknown job id (`not_found`)",
    413: "The request body is larger than the app accepts (`body_too_large`)",
    422: "Invalid input, or a prompt or image the video service refused",
    429: "Too many jobs wait to start (`too_many_pending`): retry after Retry-After",
    502: "The video service failed, or did not confirm the job",
    503: "Video generation is unavailable or the service is busy (`unavailable`...)",
    504: "The video service did not answer in time, or the video was not ready (`not_ready`)",
}
_MAY_RETRY = {status for _, status, _, _, retry in _ANSWERS if retry is not None}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: each status (default: every one the integration
    answers) with the :class:`ErrorBody` model, e.g. ``responses=error_responses(404, 422)``.

    Raises:
        ConfigurationError: If a status is not one the integration answers.
    """
    if unknown := set(statuses) - set(_STATUSES):
        raise ConfigurationError(f"not an error status of the integration: {sorted(unknown)}")
    return {
        status: {"model": ErrorBody, "description": _STATUSES[status]}
        | ({"headers": _RETRY_AFTER} if status in _MAY_RETRY else {})
        for status in statuses or _STATUSES
    }


def error_response(exc: BaseException, **extra: Any) -> JSONResponse:
    """The :class:`ErrorBody` answer for ``exc`` (see :func:`http_error_for`) with ``extra``
    fields; 5xx answers are logged, without a traceback or the token."""
    problem = http_error_for(exc)
    if problem.status_code >= 500:
        shown = exc if isinstance(exc, GrokImagineError) else "(not shown)"
        kind = type(exc).__name__
        logger.warning("answering %d %s for %s: %s", problem.status_code, problem.code, kind, shown)
    return _answer(problem.status_code, problem.code, problem.detail, problem.headers, **extra)


def install_error_handlers(app: Starlette) -> None:
    """Answer every error of ``app`` as an :class:`ErrorBody`, never a stack trace.

    Our exceptions as :func:`error_response`; a failed validation 422 naming each field in
    ``fields`` without its value; a body that is not JSON 400 ``malformed_body``; an
    ``HTTPException`` its status, with a code from it (``not_found``...).
    """
    app.add_exception_handler(GrokImagineError, _ours)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_exception)


async def _ours(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return _answer(*_MALFORMED)
    fields = [
        {
            "field": _clip(".".join(map(str, error.get("loc", ())))),
            "problem": _clip(str(error.get("msg", "invalid"))),
        }
        for error in errors[:_MAX_FIELDS]
    ]
    named = ", ".join(dict.fromkeys(f["field"] for f in fields))
    more = f" and {len(errors) - _MAX_FIELDS} more" if len(errors) > _MAX_FIELDS else ""
    return _answer(422, "invalid_request", f"invalid request: {named}{more}", fields=fields)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
        return _answer(*_MALFORMED)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    phrase = _PHRASES.get(exc.status_code, "HTTP error")  # else a status of the app's invention
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    return _answer(exc.status_code, code, detail, headers=exc.headers)


def _answer(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"detail": detail, "error": code, **extra}, status, headers)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (default :data:`DEFAULT_MAX_BODY_BYTES`) with
    413 ``body_too_large`` before the app reads them, declared or chunked. The body is read
    whole before the app runs: a route streaming large uploads needs its own app.

    Example:
        >>> from fastapi import FastAPI
        >>> FastAPI().add_middleware(BodyLimitMiddleware, max_bytes=64 * 1024)
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 0:
            raise ConfigurationError(f"max_bytes must be >= 0, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        body, more = bytearray(), not too_large
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                return await self.app(scope, _replay(message, receive), send)
            body += message.get("body", b"")
            too_large = len(body) > self.max_bytes
            more = message.get("more_body", False) and not too_large
        if too_large:  # the connection is closed after: the rest of the body is not read
            detail = f"the request body is larger than {self.max_bytes} bytes"
            answer = _answer(413, "body_too_large", detail, headers={"Connection": "close"})
            return await answer(scope, receive, send)
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        return await self.app(scope, _replay(whole, receive), send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives ``first``, then what the real one gives."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
