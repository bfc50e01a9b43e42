"""Sending one API call: a permit first, the answer fed back, retries as API.md rule 5 allows
(never a POST whose answer was lost: the task may exist, and a second would pay twice)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

if TYPE_CHECKING:
    import httpx

import anyio

from . import _http
from ._clock import Clock, running_loop
from ._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
    ServerError,
)
from ._http import ACCEPT_ENCODING, BadEncoding, BodyTooLarge, read_bounded
from ._limiting.protocol import Permit, Priority, RateLimiter, RateLimitFeedback
from ._models import GenerationRequest
from ._observe import Observer, end_attempt, mark_sent, start_attempt
from ._protocol import find_error, has_error_body, read_rate_limit_headers
from ._redact import Redactor
from ._settings import Settings

logger = logging.getLogger("grok_imagine_async")

GENERATE_PATH = "/v1/generate"
STATUS_PATH = "/v1/status"

_UNDECODABLE: tuple[type[Exception], ...] = (BadEncoding, *_http.DecodingError)
_FAILURES: tuple[type[Exception], ...]
_FAILURES = (BodyTooLarge, *_UNDECODABLE, *_http.TransportError, *_http.InvalidURL)
_TOO_DEEP = object()
_UNSHIELDED = contextlib.nullcontext()  # reusable: no scope per request without an intent
_UNCANCEL = sys.version_info >= (3, 11)  # Task.uncancel(), for one timer of many deadlines
# The headers an answer is read for, by their raw lower-cased name: decoding all costs more.
_HEADERS = "x-ratelimit-remaining x-ratelimit-reset retry-after content-type content-encoding"
_READ_HEADERS = {name.encode(): name for name in _HEADERS.split()}

AmbiguousSubmitPolicy = Literal["raise", "resubmit"]
BeforeSend = Callable[[], Awaitable[None]]


class Sender:
    """Sends API calls for one token (redacted from every error and answer) through one limiter;
    a server wait hint beyond the limiter's period ends the call instead of sleeping."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        limiter: RateLimiter,
        *,
        clock: Clock,
        rng: random.Random,
        on_ambiguous_submit: AmbiguousSubmitPolicy,
        request_options: Mapping[str, Any],
        observer: Observer | None,
    ) -> None:
        self._http = http
        self._base_url = settings.base_url
        self._redact = Redactor(settings.api_key)
        self._headers = {"Authorization": f"Bearer {settings.api_key}"}
        if http.headers.get("accept-encoding") != ACCEPT_ENCODING:  # replacing it costs per request
            self._headers["Accept-Encoding"] = ACCEPT_ENCODING
        self._limiter = limiter
        self._clock = clock
        self._retry = settings.retry
        self._rng = rng
        self.on_ambiguous_submit = on_ambiguous_submit
        self._limits = settings.limits
        self._max_wait_hint = limiter.limit.period
        self._observer = observer
        self._deadlines = _Deadlines()
        # A POST's answer carries a task id worth 40 credits: read it for the whole
        # max_request_time, not only the per-read timeout that bounds a poll.
        family = _http.family_of(http) or _http.lib
        options = dict(request_options)
        base = family.Timeout(_http.timeout_in(family, options.get("timeout", http.timeout)))
        read = self._limits.max_request_time
        post = family.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)
        self._options = {"GET": options, "POST": {**options, "timeout": post}}

    async def request(
        self,
        method: str,
        path: str,
        *,
        priority: Priority,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        request: GenerationRequest | None = None,
        before_send: BeforeSend | None = None,
        on_unsent: Callable[[APIConnectionError], None] | None = None,
    ) -> Any:
        """The answer's ``data`` (token redacted), retried; raises the last :class:`APIError`.
        ``before_send`` is awaited before each send, shielded with it (a journal's intent);
        ``on_unsent`` is called with the error of an attempt that failed before its request
        left (a refused connection): its intent was never sent, whatever ends the retries."""
        guard = method == "POST" and self.on_ambiguous_submit != "resubmit"
        attempt = 0
        while True:
            error: APIError
            hint: float | None = None
            # Errors are raised after their except block, so that no httpx(2) exception (which
            # holds the request and its Authorization header) rides along as __context__.
            try:
                return await self._attempt(
                    attempt, method, path, priority, params, body, before_send
                )
            except _Failed as exc:  # unsent: safe to resend, even a POST; else maybe a task
                error, maybe_task = exc.error, exc.sent
                if not exc.sent and on_unsent is not None:
                    on_unsent(exc.error)
            except (RateLimitError, ServerError) as exc:
                error, hint = exc, exc.retry_after
                maybe_task = isinstance(exc, ServerError) and not has_error_body(exc.body)
            except APIResponseValidationError as exc:
                error, maybe_task = exc, True
            final: APIError | None = None
            if guard and maybe_task:
                reason = str(error) if isinstance(error, ServerError) else error.message
                final = self.ambiguous(request, reason, error)
            elif attempt >= self._retry.attempts or (
                hint is not None and hint > self._max_wait_hint
            ):
                final = error
            if final is not None:
                for cut in (error, final):  # from the exception being handled when made
                    cut.__context__ = None
                    cut.__suppress_context__ = True
                raise final
            delay = self._retry.delay(attempt, hint=hint, rng=self._rng)
            failed = type(error).__name__
            if isinstance(error, APIStatusError):
                failed = f"HTTP {error.status_code}"
            retry = f"retry {attempt + 1} of {self._retry.attempts} in {delay:.2f}s"
            logger.warning("%s %s failed (%s); %s", method, path, failed, retry)
            await anyio.sleep(delay)
            attempt += 1

    def ambiguous(
        self, request: GenerationRequest | None, reason: str, cause: BaseException | None
    ) -> AmbiguousSubmitError:
        """The error for a submission that may or may not have started a task."""
        error = AmbiguousSubmitError(
            f"the generation may or may not have started ({self._redact.text(reason)}); it "
            "was not resent, to avoid paying twice",
            request=request,
            path=GENERATE_PATH,
        )
        error.__cause__ = cause
        return error

    async def _attempt(
        self,
        attempt: int,
        method: str,
        path: str,
        priority: Priority,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        before_send: BeforeSend | None,
    ) -> Any:
        probe = None
        if self._observer is not None:
            now = self._clock.monotonic()
            task_id = params.get("task_id") if params else None
            probe = start_attempt(now, method, self._base_url + path, path, attempt, task_id)
        error: BaseException | None = None
        limit = self._limits.max_request_time
        response = None
        try:
            permit = await self._limiter.acquire(priority=priority)
            # From the recorded intent to the read answer, one shielded step (bounded by
            # max_request_time): a cancellation in between would leave an intent never sent.
            with _UNSHIELDED if before_send is None else anyio.CancelScope(shield=True):
                if before_send is not None:
                    try:
                        await before_send()
                    except BaseException:  # nothing sent: the quota it would have used is free
                        self._limiter.give_back(permit)
                        raise
                with self._deadlines.bound(limit):  # ends the block early at the deadline
                    if probe is not None:  # after the permit and the journal's intent
                        mark_sent(probe, self._clock.monotonic())
                    failure: Exception | None = None
                    try:
                        outgoing = self._http.build_request(
                            method,
                            # The query as either library writes it (urlencode), but parsed once.
                            f"{self._base_url}{path}?{urlencode(params)}"
                            if params
                            else self._base_url + path,
                            json=body,
                            headers=self._headers,
                            **self._options[method],
                        )
                        response = await self._http.send(outgoing, stream=True)
                        headers = _read_headers(response.headers)
                        raw = await read_bounded(
                            response,
                            limit=self._limits.max_answer_bytes,
                            content_encoding=headers.get("content-encoding", ""),
                        )
                    except _FAILURES as exc:
                        sent = response is not None
                        failure = self._failure(exc, method, path, permit, sent=sent)
                    if failure is not None:
                        raise failure
                    assert response is not None
                    status = response.status_code
                    feedback = read_rate_limit_headers(
                        headers, permit=permit, status_code=status, now_unix=self._clock.unix()
                    )
                    if probe is not None:
                        probe.status_code, probe.remaining = status, feedback.remaining
                    await self._limiter.observe(feedback)
                    return self._read(response, raw, headers, feedback, method, path)
                message = f"no complete answer within {limit:g}s (max_request_time)"
                raise _Failed(APITimeoutError(message, method=method, path=path), sent=True)
        except BaseException as exc:
            error = exc.error if isinstance(exc, _Failed) else exc
            raise
        finally:
            if response is not None and not response.is_closed:  # read to its end, closed
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            if probe is not None and self._observer is not None:
                self._observer.on_request(end_attempt(probe, self._clock.monotonic(), error))

    def _failure(
        self, exc: Exception, method: str, path: str, permit: Permit, *, sent: bool
    ) -> Exception:
        if isinstance(exc, BodyTooLarge):
            big = f"{method} {path} answered with more than {exc.limit} bytes (max_answer_bytes)"
            return APIResponseValidationError(big, method=method, path=path)
        # httpx messages name the host and the error; h11's can quote a header value, so the
        # token is redacted before the text is cut.
        name = type(exc).__name__
        text = self._redact.text(f"{name}: {str(exc) or name}", limit=300)
        if isinstance(exc, _UNDECODABLE):  # an in-memory transport decodes as it answers
            undecodable = f"{method} {path} answered with a body that does not decode ({text})"
            return APIResponseValidationError(undecodable, method=method, path=path)
        kind = APITimeoutError if isinstance(exc, _http.TimeoutException) else APIConnectionError
        if not sent and isinstance(exc, _http.ConnectErrors):
            self._limiter.give_back(permit)  # never reached the server: it counted nothing
            return _Failed(kind(text, method=method, path=path), sent=False)
        if not sent and isinstance(exc, _http.RequestErrors + _http.InvalidURL):
            return APIConnectionError(text, method=method, path=path)  # could not be written
        # Timeouts included: the request may have arrived, and its answer is lost.
        return _Failed(kind(text, method=method, path=path), sent=True)

    def _read(
        self,
        response: httpx.Response,
        raw: bytes,
        headers: dict[str, str],
        feedback: RateLimitFeedback,
        method: str,
        path: str,
    ) -> Any:
        """The answer's ``data``, or the error it carries."""
        # Content-Type parsing (email.message) costs more than the rest: only for a charset.
        charset = "charset" in headers.get("content-type", "").lower() and response.charset_encoding
        try:
            text = raw.decode(charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know: read it as the API's UTF-8
            text = raw.decode("utf-8", errors="replace")
        body: Any = None
        if text:
            try:
                body = self._redact.loads(text)
            except RecursionError:  # raised below, not here: no RecursionError frames attached
                body = _TOO_DEEP
            except ValueError:  # not JSON (or nested deeper than MAX_DEPTH)
                body = self._redact.text(text)
        if body is _TOO_DEEP:
            too_deep = f"{method} {path} answered with JSON nested too deep to read"
            raise APIResponseValidationError(too_deep, method=method, path=path)
        status = response.status_code
        hint = feedback.retry_after  # a refusal for rate without one: the window's reset
        if hint is None and status == 429:
            hint = feedback.reset_after
        error = find_error(status, body, retry_after=hint, method=method, path=path)
        if error is not None:
            raise error
        if not isinstance(body, dict):
            not_object = f"{method} {path} answered {status} with a body that is not a JSON object"
            raise APIResponseValidationError(
                not_object, body=self._redact.text(text, limit=500), method=method, path=path
            )
        return body.get("data")


class _Deadlines:
    """A sender's ``max_request_time`` bounds on one asyncio timer (benchmarks/README.md: a
    timer or an anyio scope per request costs as much as the rest of the sender)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: dict[_Bound, float] = {}  # in deadline order: one limit for all
        self._timer: asyncio.TimerHandle | None = None

    def bound(self, seconds: float) -> _Bound | anyio.CancelScope:
        """A context cancelled, and left quietly, once ``seconds`` have passed in it."""
        loop = running_loop()
        if loop is None or not _UNCANCEL:  # trio, or no Task.uncancel(): anyio's
            return anyio.CancelScope(deadline=anyio.current_time() + seconds)
        if loop is not self._loop:  # another loop (tests): the last one's timer went with it
            self._loop, self._due, self._timer = loop, {}, None
        bound = _Bound(self._due, asyncio.current_task(loop))
        self._due[bound] = deadline = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        return bound

    def _expire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        while self._due:
            bound, deadline = next(iter(self._due.items()))
            if deadline > now:
                self._timer = self._loop.call_at(deadline, self._expire)
                return
            del self._due[bound]
            bound.expired = True  # still inside (it leaves _due on exit): cancel it there
            bound.task.cancel()


class _Bound:
    """One request's deadline: its task cancelled, told apart by ``uncancel`` as in
    ``asyncio.timeout``."""

    __slots__ = ("_cancelling", "_due", "expired", "task")
    task: Any  # an asyncio.Task, whose cancelling() and uncancel() Python 3.10 lacks

    def __init__(self, due: dict[_Bound, float], task: Any) -> None:
        self._due = due
        self.expired = False
        self.task = task  # the caller's: bound() is called where the block is entered

    def __enter__(self) -> None:
        self._cancelling = self.task.cancelling()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        self._due.pop(self, None)
        ours = self.expired and self.task.uncancel() <= self._cancelling
        return ours and kind is asyncio.CancelledError


def _read_headers(headers: httpx.Headers) -> dict[str, str]:
    """The headers of :data:`_READ_HEADERS` in ``headers``, repeats joined as ``get`` joins them."""
    found: dict[str, str] = {}
    try:
        for key, value in headers.raw:
            name = _READ_HEADERS.get(key.lower())
            if name is not None:
                text = value.decode("ascii")
                found[name] = f"{found[name]}, {text}" if name in found else text
    except UnicodeDecodeError:  # not ASCII: decoded as the library decodes them all
        return {name: headers[name] for name in _READ_HEADERS.values() if name in headers}
    return found


class _Failed(Exception):
    """An attempt's failure to send or to read (``sent``: the server may have its request)."""

    def __init__(self, error: APIConnectionError, *, sent: bool) -> None:
        self.error = error
        self.sent = sent
