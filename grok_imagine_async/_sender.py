"""Sending one API call: a permit first, the answer fed back, retries as API.md rule 5 allows.

The client decides *what* to ask; :class:`Sender` decides *how* a request travels: it takes a
rate-limit permit, sends with the bearer token, reports the answer's rate-limit headers to the
limiter, turns the answer into data or one of our exceptions, and retries what may be retried.
A POST whose answer was lost is the one thing it never resends on its own (API.md rule 5):
the task may exist, and a second POST would pay for it twice.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import anyio
import httpx

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
from ._headers import read_rate_limit_headers
from ._limiting.protocol import Permit, Priority, RateLimiter, RateLimitFeedback
from ._models import GenerationRequest
from ._protocol import find_error, has_error_body

logger = logging.getLogger("grok_imagine_async")

GENERATE_PATH = "/v1/generate"
STATUS_PATH = "/v1/status"

AmbiguousSubmitPolicy = Literal["raise", "resubmit"]
BeforeSend = Callable[[], Awaitable[None]]


class Sender:
    """Sends API calls for one token through one limiter.

    Args:
        http: Where requests go.
        base_url: The API root, without a trailing slash.
        api_key: The bearer token. Redacted from every error this class raises.
        limiter: Gives a permit before every send and hears every answer's headers.
        clock: For ``X-RateLimit-Reset`` given as a Unix time.
        retry: The retry schedule.
        rng: Jitter for the retry schedule.
        on_ambiguous_submit: ``"raise"`` (a lost POST answer raises
            :class:`AmbiguousSubmitError`) or ``"resubmit"`` (it is retried like the rest).
        request_options: Extra keyword arguments for each ``http.request`` (a timeout).
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
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._api_key = api_key
        self._limiter = limiter
        self._clock = clock
        self._retry = retry
        self._rng = rng
        self.on_ambiguous_submit = on_ambiguous_submit
        self._request_options = dict(request_options)

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

        Args:
            request: The generation a POST carries, for :class:`AmbiguousSubmitError`.
            before_send: Awaited after the permit, right before each send, and shielded with
                the send: a journal's intent is then never recorded for a request that was
                never sent, nor a sent request left without its intent.

        Raises:
            AmbiguousSubmitError: A POST's answer was lost (with ``on_ambiguous_submit="raise"``).
            APIError: The last failure, once retries are spent or not allowed.
        """
        resubmit = self.on_ambiguous_submit == "resubmit"
        is_post = method == "POST"
        attempt = 0
        while True:
            error: APIError
            hint: float | None = None
            try:
                return await self._send_once(method, path, priority, params, body, before_send)
            except _Unsent as exc:  # the request never left: safe to resend, even a POST
                error = exc.error
            except _Lost as exc:  # sent, answer lost: a POST may have started a task
                if is_post and not resubmit:
                    raise self.ambiguous(request, exc.error.message, exc.error) from None
                error = exc.error
            except RateLimitError as exc:
                error, hint = exc, exc.retry_after
            except ServerError as exc:
                if is_post and not resubmit and not has_error_body(exc.body):
                    raise self.ambiguous(request, str(exc), exc) from None
                error, hint = exc, exc.retry_after
            except APIResponseValidationError as exc:
                if is_post and not resubmit:
                    raise self.ambiguous(request, exc.message, exc) from None
                error = exc
            if attempt >= self._retry.attempts:
                raise error
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
            f"the generation may or may not have started ({reason}); it was not resent, to "
            "avoid paying twice",
            request=request,
            path=GENERATE_PATH,
        )
        error.__cause__ = cause
        return error

    async def _send_once(
        self,
        method: str,
        path: str,
        priority: Priority,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        before_send: BeforeSend | None,
    ) -> Any:
        permit = await self._limiter.acquire(priority=priority)
        if before_send is None:
            return await self._exchange(method, path, permit, params, body)
        # From the recorded intent to the read answer, one shielded step: a cancellation
        # landing in between would leave an intent for a request that was never sent.
        with anyio.CancelScope(shield=True):
            await before_send()
            return await self._exchange(method, path, permit, params, body)

    async def _exchange(
        self,
        method: str,
        path: str,
        permit: Permit,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                self._base_url + path,
                params=params,
                json=body,
                headers={"Authorization": f"Bearer {self._api_key}"},
                **self._request_options,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            kind = (
                APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
            )
            raise _Unsent(kind(_transport_message(exc), method=method, path=path)) from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise APIConnectionError(_transport_message(exc), method=method, path=path) from None
        except httpx.TimeoutException as exc:
            raise _Lost(
                APITimeoutError(_transport_message(exc), method=method, path=path)
            ) from None
        except httpx.TransportError as exc:
            raise _Lost(
                APIConnectionError(_transport_message(exc), method=method, path=path)
            ) from None
        return await self._read_answer(response, permit=permit, method=method, path=path)

    async def _read_answer(
        self, response: httpx.Response, *, permit: Permit, method: str, path: str
    ) -> Any:
        limits = read_rate_limit_headers(response.headers, now_unix=self._clock.unix())
        await self._limiter.observe(
            RateLimitFeedback(
                permit=permit,
                status_code=response.status_code,
                remaining=limits.remaining,
                reset_after=limits.reset_after,
                retry_after=limits.retry_after,
            )
        )
        text = response.text
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        wait_hint = limits.wait_hint if response.status_code == 429 else limits.retry_after
        error = find_error(
            response.status_code, body, retry_after=wait_hint, method=method, path=path
        )
        if error is not None:
            raise self._redacted(error)
        if not isinstance(body, dict):
            raise APIResponseValidationError(
                f"{method} {path} answered {response.status_code} with a body that is not a JSON "
                "object",
                body=self._redact_text(text[:500]),
                method=method,
                path=path,
            )
        return body.get("data")

    def _redact_text(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key in text else text

    def _redacted(self, error: APIStatusError) -> APIStatusError:
        if self._api_key in error.message or self._api_key in repr(error.body):
            error.message = self._redact_text(error.message)
            error.args = (error.message,)
            error.body = self._redact_text(repr(error.body))
        return error


class _Unsent(Exception):
    """Internal: the request provably never reached the server."""

    def __init__(self, error: APIConnectionError) -> None:
        self.error = error


class _Lost(Exception):
    """Internal: the request was (maybe) sent but no answer arrived."""

    def __init__(self, error: APIConnectionError) -> None:
        self.error = error


def _transport_message(exc: httpx.HTTPError) -> str:
    # httpx messages name the host and the error, never headers; keep them short.
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _describe(error: APIError) -> str:
    if isinstance(error, APIStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__
