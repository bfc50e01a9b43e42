"""How an app answers errors over HTTP: one JSON body, its handlers, its OpenAPI, a body cap.

Every error the integration answers has the body ``{"detail": ..., "error": <code>}``
(:class:`ErrorBody`), whatever raised it: one of our exceptions (:func:`error_response`, from
:func:`~grok_imagine_async.fastapi.http_error_for`), a request that failed validation (422,
naming the fields, never echoing their input), a body that is not JSON (400), an
``HTTPException`` of the app's own (its status), or a body over the cap
(:class:`BodyLimitMiddleware`, 413). :func:`error_responses` documents them in the app's
OpenAPI schema, so clients generated from it can handle each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import GrokImagineError
from ._errors import http_error_for

logger = logging.getLogger("grok_imagine_async.fastapi")

DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""The request body :class:`BodyLimitMiddleware` accepts by default: a prompt of 2,000
characters and a few image URLs take about 3 kB."""

_MAX_FIELDS = 20  # problems listed in a 422: a body of a million bad keys gets 20 lines
_MAX_TEXT = 200  # characters of one field name or problem, which may come from the input
_BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's own 400 (not UTF-8...)


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
_STATUSES: dict[int, tuple[str, bool]] = {  # status: (description, may carry Retry-After)
    400: ("The request body is not valid JSON (`malformed_body`)", False),
    402: ("The credit budget for videos is used up (`budget_exceeded`)", False),
    404: ("No such resource, e.g. an unknown job id (`not_found`)", False),
    413: ("The request body is larger than the app accepts (`body_too_large`)", False),
    422: ("Invalid input, or a prompt or image the video service refused", False),
    429: ("Too many jobs wait to start (`too_many_pending`): retry after Retry-After", True),
    502: ("The video service failed, or did not confirm the job", False),
    503: ("Video generation is unavailable or the service is busy (`unavailable`...)", True),
    504: (
        "The video service did not answer in time, or the video was not ready (`not_ready`)",
        False,
    ),
}
# 500 is not among them: an internal error is a bug or a misconfiguration, not an answer.


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with the :class:`ErrorBody` model.

    Pass it to a route (``@app.post("/videos", responses=error_responses())``) or merge it
    into your own mapping, so the schema documents what the route can answer.

    Args:
        *statuses: The statuses to document (default: every one the integration answers:
            400, 402, 404, 413, 422, 429, 502, 503 and 504).

    Raises:
        ValueError: If a status is not one the integration answers.

    Example:
        >>> sorted(error_responses(404, 422))
        [404, 422]
    """
    unknown = set(statuses) - set(_STATUSES)
    if unknown:
        raise ValueError(f"not an error status of the integration: {sorted(unknown)}")
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses or tuple(_STATUSES):
        description, retry = _STATUSES[status]
        answers[status] = {"model": ErrorBody, "description": description}
        if retry:
            answers[status]["headers"] = _RETRY_AFTER
    return answers


def error_response(exc: BaseException, **extra: Any) -> JSONResponse:
    """The JSON error answer for ``exc`` (see :func:`http_error_for`), with ``extra`` fields.

    The body is ``{"detail": ..., "error": <code>, **extra}``, plus ``Retry-After`` when
    waiting helps. Answers of 500 and above are logged, without a traceback or the token.
    """
    problem = http_error_for(exc)
    if problem.status_code >= 500:
        logger.warning(
            "answering %d %s for %s: %s",
            problem.status_code,
            problem.code,
            type(exc).__name__,
            exc if isinstance(exc, GrokImagineError) else "(not shown)",
        )
    return _answer(
        problem.status_code, problem.code, problem.detail, headers=problem.headers, **extra
    )


def install_error_handlers(app: Starlette) -> None:
    """Answer every error in the :class:`ErrorBody` format, never a 500 with a stack trace.

    - our exceptions (:class:`~grok_imagine_async.GrokImagineError`): :func:`error_response`,
      422, 402, 429, 502, 503 or 504;
    - a request that fails validation: 422 ``invalid_request``, naming each field at fault
      in ``fields`` without its value (FastAPI's default echoes the input: a 20 MiB prompt
      would come back whole);
    - a body that is not JSON: 400 ``malformed_body``;
    - an ``HTTPException`` (the app's own, an unknown path, a wrong method): its status and
      detail, with a code from the status (``not_found``, ``method_not_allowed``...).

    Call it when building the app (handlers are fixed once it serves), and document the
    statuses with :func:`error_responses`.
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
        return _malformed()
    fields = [
        FieldProblem(
            field=_clip(".".join(str(part) for part in error.get("loc", ()))),
            problem=_clip(str(error.get("msg", "invalid"))),
        )
        for error in errors[:_MAX_FIELDS]
    ]
    named = ", ".join(dict.fromkeys(f.field for f in fields))
    more = f" and {len(errors) - _MAX_FIELDS} more" if len(errors) > _MAX_FIELDS else ""
    return _answer(
        422,
        "invalid_request",
        f"invalid request: {named}{more}",
        fields=[f.model_dump() for f in fields],
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
        return _malformed()
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    try:
        phrase = HTTPStatus(exc.status_code).phrase  # "Not Found" -> "not_found"
    except ValueError:  # a status of the app's own invention
        phrase = "HTTP error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    return _answer(exc.status_code, code, detail, headers=exc.headers)


def _malformed() -> JSONResponse:
    return _answer(400, "malformed_body", "the request body is not valid JSON")


def _answer(
    status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"detail": detail, "error": code, **extra}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 ``body_too_large``, before the app
    reads them: the declared ``Content-Length``, and the bytes of a streamed (chunked) body
    as they arrive, are counted.

    The body (at most ``max_bytes``) is read before the app runs, then handed to it as one
    piece: endpoints that must stream a large upload need a route of their own outside it.

    Args:
        app: The ASGI app to protect.
        max_bytes: The largest body accepted (default :data:`DEFAULT_MAX_BODY_BYTES`).

    Example:
        >>> from fastapi import FastAPI
        >>> app = FastAPI()
        >>> app.add_middleware(BodyLimitMiddleware, max_bytes=64 * 1024)
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay(message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self.max_bytes} bytes"
        # The connection is closed after: the rest of the body is not read.
        answer = _answer(413, "body_too_large", detail, headers={"Connection": "close"})
        await answer(scope, receive, send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives ``first``, then what the real one gives."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
