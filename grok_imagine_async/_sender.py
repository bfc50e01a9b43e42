"""Sending one API call: a permit first, the answer fed back, retries as API.md rule 5 allows.

The client decides *what* to ask; :class:`Sender` decides *how* a request travels: it takes a
rate-limit permit, sends with the bearer token, reports the answer's rate-limit headers to the
limiter, turns the answer into data or one of our exceptions, and retries what may be retried.
A POST whose answer was lost is the one thing it never resends on its own (API.md rule 5):
the task may exist, and a second POST would pay for it twice.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import httpx

import anyio

from . import _http
from ._backoff import RetryPolicy
from ._clock import Clock
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
from ._limits import Limits
from ._models import GenerationRequest
from ._observe import AttemptProbe, Observer
from ._protocol import find_error, has_error_body, read_rate_limit_headers
from ._redact import Redactor

logger = logging.getLogger("grok_imagine_async")

GENERATE_PATH = "/v1/generate"
STATUS_PATH = "/v1/status"

_UNDECODABLE: tuple[type[Exception], ...] = (BadEncoding, *_http.DecodingError)

AmbiguousSubmitPolicy = Literal["raise", "resubmit"]
BeforeSend = Callable[[], Awaitable[None]]


class Sender:
    """Sends API calls for one token through one limiter.

    Args:
        http: Where requests go (an ``AsyncClient`` of httpx2 or httpx).
        base_url: The API root, without a trailing slash.
        api_key: The bearer token. Redacted from every error this class raises.
        limiter: Gives a permit before every send and hears every answer's headers.
        clock: For ``X-RateLimit-Reset`` given as a Unix time.
        retry: The retry schedule.
        rng: Jitter for the retry schedule.
        on_ambiguous_submit: ``"raise"`` (a lost POST answer raises
            :class:`AmbiguousSubmitError`) or ``"resubmit"`` (it is retried like the rest).
        request_options: Extra keyword arguments for each ``http.build_request`` (a timeout).
        limits: Bounds on an answer's size and a request's total time.
        max_wait_hint: The longest server wait hint obeyed (one rate-limit period): a longer
            one ends the call with its error, ``retry_after`` set, instead of sleeping.
        observer: Told of every attempt (telemetry); None costs nothing.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        limiter: RateLimiter,
        clock: Clock,
        retry: RetryPolicy,
        rng: random.Random,
        on_ambiguous_submit: AmbiguousSubmitPolicy,
        request_options: Mapping[str, Any],
        limits: Limits | None = None,
        max_wait_hint: float = float("inf"),
        observer: Observer | None = None,
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._redact = Redactor(api_key)
        # Every request's own headers (the library copies them into each request).
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept-Encoding": ACCEPT_ENCODING}
        self._limiter = limiter
        self._clock = clock
        self._retry = retry
        self._rng = rng
        self.on_ambiguous_submit = on_ambiguous_submit
        self._request_options = dict(request_options)
        self._limits = limits or Limits()
        # A POST's answer carries a task id worth 40 credits: read it for the whole
        # max_request_time, not only the per-read timeout that bounds a poll.
        family = _http.family_of(http) or _http.lib
        given = self._request_options.get("timeout", http.timeout)
        base = family.Timeout(_http.timeout_in(family, given))
        self._post_options = {
            **self._request_options,
            "timeout": family.Timeout(
                connect=base.connect,
                read=self._limits.max_request_time,
                write=base.write,
                pool=base.pool,
            ),
        }
        self._max_wait_hint = max_wait_hint
        self._observer = observer

    def __repr__(self) -> str:
        return f"Sender(base_url={self._base_url!r})"

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
    ) -> Any:
        """Send one API call with retries per API.md rule 5; return the answer's ``data``.

        The ``data`` returned has the token redacted from every string, like every error.

        Args:
            request: The generation a POST carries, for :class:`AmbiguousSubmitError`.
            before_send: Awaited after the permit, right before each send, and shielded with
                the send: a journal's intent is then never recorded for a request that was
                never sent, nor a sent request left without its intent.

        Raises:
            AmbiguousSubmitError: A POST's answer was lost (with ``on_ambiguous_submit="raise"``).
            RateLimitError, ServerError: Also when the server asks to wait longer than one
                rate-limit period (``retry_after`` says how long).
            APIError: The last failure, once retries are spent or not allowed.
        """
        resubmit = self.on_ambiguous_submit == "resubmit"
        is_post = method == "POST"
        attempt = 0
        while True:
            error: APIError
            final: APIError | None = None
            hint: float | None = None
            # Errors are raised after their except block, so that no httpx(2) exception (which
            # holds the request and its Authorization header) rides along as __context__.
            try:
                return await self._attempt(
                    attempt, method, path, priority, params, body, before_send
                )
            except _Unsent as exc:  # the request never left: safe to resend, even a POST
                error = exc.error
            except _Lost as exc:  # sent, answer lost: a POST may have started a task
                error = exc.error
                if is_post and not resubmit:
                    final = self.ambiguous(request, error.message, error)
            except RateLimitError as exc:
                error, hint = exc, exc.retry_after
            except ServerError as exc:
                error, hint = exc, exc.retry_after
                if is_post and not resubmit and not has_error_body(exc.body):
                    final = self.ambiguous(request, str(exc), exc)
            except APIResponseValidationError as exc:
                error = exc
                if is_post and not resubmit:
                    final = self.ambiguous(request, exc.message, exc)
            if final is None and (
                attempt >= self._retry.attempts or (hint is not None and hint > self._max_wait_hint)
            ):
                final = error  # a wait longer than the plan's window: the caller decides
            if final is not None:
                _detach(error)
                raise _detach(final)
            delay = self._retry.delay(attempt, hint=hint, rng=self._rng)
            logger.warning(
                "%s %s failed (%s); retry %d of %d in %.2fs",
                method,
                path,
                _describe(error),
                attempt + 1,
                self._retry.attempts,
                delay,
            )
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
        """One send; with an observer, timed and reported whatever its outcome."""
        if self._observer is None:
            return await self._send_once(method, path, priority, params, body, before_send, None)
        probe = AttemptProbe(self._clock.monotonic(), method, self._base_url, path, attempt, params)
        error: BaseException | None = None
        try:
            return await self._send_once(method, path, priority, params, body, before_send, probe)
        except BaseException as exc:
            error = exc.error if isinstance(exc, (_Unsent, _Lost)) else exc
            raise
        finally:
            self._observer.on_request(probe.finish(self._clock.monotonic(), error))

    async def _send_once(
        self,
        method: str,
        path: str,
        priority: Priority,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        before_send: BeforeSend | None,
        probe: AttemptProbe | None,
    ) -> Any:
        permit = await self._limiter.acquire(priority=priority)
        if before_send is None:
            return await self._bounded_exchange(method, path, permit, params, body, probe)
        # From the recorded intent to the read answer, one shielded step: a cancellation
        # landing in between would leave an intent for a request that was never sent. The
        # step is bounded by ``max_request_time``, so the shield cannot hold forever.
        with anyio.CancelScope(shield=True):
            try:
                await before_send()
            except BaseException:  # nothing sent: the quota it would have used is free again
                self._limiter.give_back(permit)
                raise
            return await self._bounded_exchange(method, path, permit, params, body, probe)

    async def _bounded_exchange(
        self,
        method: str,
        path: str,
        permit: Permit,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        probe: AttemptProbe | None,
    ) -> Any:
        limit = self._limits.max_request_time
        with anyio.move_on_after(limit):
            return await self._exchange(method, path, permit, params, body, probe)
        raise _Lost(
            APITimeoutError(
                f"no complete answer within {limit:g}s (max_request_time)",
                method=method,
                path=path,
            )
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        permit: Permit,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        probe: AttemptProbe | None,
    ) -> Any:
        if probe is not None:  # after the permit and the journal's intent: the request itself
            probe.sent_at = self._clock.monotonic()
        failure: _Unsent | _Lost | APIConnectionError | APIResponseValidationError | None = None
        try:
            outgoing = self._http.build_request(
                method,
                self._base_url + path,
                params=params,
                json=body,
                headers=self._headers,
                **(self._post_options if method == "POST" else self._request_options),
            )
            response = await self._http.send(outgoing, stream=True)
        except _http.ConnectErrors as exc:
            self._limiter.give_back(permit)  # never reached the server: it counted nothing
            kind = (
                APITimeoutError if isinstance(exc, _http.TimeoutException) else APIConnectionError
            )
            failure = _Unsent(kind(self._transport_message(exc), method=method, path=path))
        except _http.RequestErrors + _http.InvalidURL as exc:
            failure = APIConnectionError(self._transport_message(exc), method=method, path=path)
        except _http.DecodingError as exc:  # an in-memory transport decodes as it answers
            failure = APIResponseValidationError(
                f"{method} {path} answered with a body that does not decode "
                f"({self._transport_message(exc)})",
                method=method,
                path=path,
            )
        except _http.TransportError as exc:  # timeouts included: the request may have arrived
            failure = self._lost(exc, method=method, path=path)
        if failure is not None:
            raise failure
        try:
            text = await self._read_text(response, method=method, path=path)
        finally:
            if not response.is_closed:  # read to its end, it closed itself
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        return await self._read_answer(
            response, text, permit=permit, method=method, path=path, probe=probe
        )

    def _lost(self, exc: httpx.TransportError, *, method: str, path: str) -> _Lost:
        """A request that may have reached the server, and its answer lost on the way."""
        kind = APITimeoutError if isinstance(exc, _http.TimeoutException) else APIConnectionError
        return _Lost(kind(self._transport_message(exc), method=method, path=path))

    async def _read_text(self, response: httpx.Response, *, method: str, path: str) -> str:
        """The answer's body as text, read within the size bound."""
        failure: Exception | None = None
        limit = self._limits.max_answer_bytes
        try:
            raw = await read_bounded(response, limit=limit)
        except BodyTooLarge:
            failure = APIResponseValidationError(
                f"{method} {path} answered with more than {limit} bytes (max_answer_bytes)",
                method=method,
                path=path,
            )
        except _UNDECODABLE as exc:
            failure = APIResponseValidationError(
                f"{method} {path} answered with a body that does not decode: {exc}",
                method=method,
                path=path,
            )
        except _http.TransportError as exc:  # timeouts included: the request may have arrived
            failure = self._lost(exc, method=method, path=path)
        if failure is not None:
            raise failure
        # Content-Type parsing (email.message) costs more than the rest of the decoding: only
        # when a charset is named.
        named = "charset" in response.headers.get("content-type", "").lower()
        try:
            return raw.decode((named and response.charset_encoding) or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know: read it as the API's UTF-8
            return raw.decode("utf-8", errors="replace")

    async def _read_answer(
        self,
        response: httpx.Response,
        text: str,
        *,
        permit: Permit,
        method: str,
        path: str,
        probe: AttemptProbe | None = None,
    ) -> Any:
        # One pass over the headers (lower-cased names, repeats joined as ``get`` joins them):
        # three ``Headers.get`` cost twice as much, each scanning them all.
        headers = dict(response.headers.items())
        limits = read_rate_limit_headers(headers, now_unix=self._clock.unix())
        if probe is not None:
            probe.status_code, probe.remaining = response.status_code, limits.remaining
        await self._limiter.observe(
            RateLimitFeedback(
                permit=permit,
                status_code=response.status_code,
                remaining=limits.remaining,
                reset_after=limits.reset_after,
                retry_after=limits.retry_after,
            )
        )
        body = self._decode(text, method=method, path=path)
        wait_hint = limits.wait_hint if response.status_code == 429 else limits.retry_after
        error = find_error(
            response.status_code, body, retry_after=wait_hint, method=method, path=path
        )
        if error is not None:
            raise error
        if not isinstance(body, dict):
            raise APIResponseValidationError(
                f"{method} {path} answered {response.status_code} with a body that is not a JSON "
                "object",
                body=self._redact.text(text, limit=500),
                method=method,
                path=path,
            )
        return body.get("data")

    def _decode(self, text: str, *, method: str, path: str) -> Any:
        """The JSON in ``text`` with the token redacted, or the redacted text if not JSON."""
        if not text:
            return None
        error: APIResponseValidationError | None = None
        try:
            return self._redact.loads(text)
        except RecursionError:
            error = APIResponseValidationError(
                f"{method} {path} answered with JSON nested too deep to read",
                method=method,
                path=path,
            )
        except ValueError:  # not JSON (or nested deeper than MAX_DEPTH)
            pass
        if error is not None:
            raise error
        return self._redact.text(text)

    def _transport_message(self, exc: Exception) -> str:
        # httpx messages name the host and the error; h11's can quote a header value, so the
        # token is redacted before the text is cut.
        text = str(exc) or type(exc).__name__
        return self._redact.text(f"{type(exc).__name__}: {text}", limit=300)


def _detach(error: APIError) -> APIError:
    """``error`` cut from the exception that was being handled when it was made."""
    error.__context__ = None
    error.__suppress_context__ = True
    return error


class _Unsent(Exception):
    """Internal: the request provably never reached the server."""

    def __init__(self, error: APIConnectionError) -> None:
        self.error = error


class _Lost(Exception):
    """Internal: the request was (maybe) sent but no answer arrived."""

    def __init__(self, error: APIConnectionError) -> None:
        self.error = error


def _describe(error: APIError) -> str:
    if isinstance(error, APIStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__
