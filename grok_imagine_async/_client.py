"""The async client: one token, one limiter, typed calls to the two API endpoints."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import httpx
    from typing_extensions import Unpack

import anyio

from . import _http
from ._backoff import PollPolicy, RetryPolicy
from ._clock import DEFAULT_CLOCK, Clock
from ._download import Downloader, HostPolicy
from ._errors import (
    APIConnectionError,
    APIResponseValidationError,
    ConfigurationError,
    InvalidRequestError,
    TaskFailedError,
    WaitTimeoutError,
)
from ._limiting.local import LocalRateLimiter
from ._limiting.plans import Plan, RateLimit
from ._limiting.protocol import Priority, RateLimiter
from ._models import GenerationRequest, Task
from ._observe import Observer
from ._progress import Progress, ProgressHook, report_progress
from ._protocol import parse_task, parse_task_id
from ._scheduling import scheduler
from ._scheduling.config import SchedulerConfig
from ._scheduling.durations import DurationModel
from ._scheduling.jobs import JobSpec
from ._scheduling.scheduler import JobResults, SchedulerOptions
from ._sender import GENERATE_PATH, STATUS_PATH, AmbiguousSubmitPolicy, Sender
from ._settings import Limits, Settings, prompt_problem

logger = logging.getLogger("grok_imagine_async")

_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


class AsyncGrokImagine:
    """Async client for the Grok Imagine video API: every request goes through the rate limiter.
    Use it as an async context manager, or call :meth:`aclose`.

    Args:
        settings: Instead of ``api_key``, ``base_url``, ``plan``, ``retry``, ``poll`` and
            ``limits`` (resolved by :meth:`Settings.from_env`, ``GROK_IMAGINE_*`` filling in).
        plan: ``"free"`` (default), ``"pro"``, ``"enterprise"``, a :class:`Plan`, a
            :class:`RateLimit` or a quota as text (``"100/6s"``): the default limiter's quota.
        http_client: An ``httpx2`` or ``httpx`` ``AsyncClient`` to send through (its
            ``base_url`` the default), never closed by us. Default: our own (httpx2 if installed).
        limiter: A :class:`RateLimiter` shared with other clients of the token (default: a new
            :class:`LocalRateLimiter` for ``plan``).
        timeout: Per-request timeout (seconds or a ``Timeout``); default 30 s, 10 s to connect.
        on_ambiguous_submit: When a submission's answer is lost: ``"raise"`` (default)
            :class:`AmbiguousSubmitError`, never paying twice, or ``"resubmit"``.
        clock: Where time comes from (default: the event loop's clock).
        download_hosts: Private hosts videos may come from (``["*"]``: any; the API's always).
        telemetry: ``True``: OpenTelemetry on the global providers (the ``otel`` extra), or an
            :class:`Observer` such as ``otel.Telemetry``.
        rng: Source of the retry and poll jitter (seed it for reproducible simulations).

    Raises:
        ConfigurationError: If no API key is found, or a setting or ``http_client`` is invalid.

    Example:
        >>> async def main() -> None:
        ...     async with AsyncGrokImagine(plan="pro") as client:
        ...         task = await client.generate_and_wait("a lighthouse at dawn", ratio="3:2")
        ...         paths = await client.download(task, "videos")
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        plan: str | Plan | RateLimit | None = None,
        http_client: _http.HTTPClient | None = None,
        limiter: RateLimiter | None = None,
        timeout: _http.Timeout = _UNSET,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        on_ambiguous_submit: AmbiguousSubmitPolicy = "raise",
        clock: Clock | None = None,
        limits: Limits | None = None,
        download_hosts: Iterable[str] = (),
        telemetry: bool | Observer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        family = None if http_client is None else _http.check_client(http_client)
        if settings is None:
            if base_url is None and http_client is not None and str(http_client.base_url):
                base_url = str(http_client.base_url)
            settings = Settings.from_env(
                api_key=api_key, base_url=base_url, plan=plan, retry=retry, poll=poll, limits=limits
            )
        elif any(v is not None for v in (api_key, base_url, plan, retry, poll, limits)):
            raise ConfigurationError(
                "pass either settings or api_key, base_url, plan, retry, poll, limits"
            )
        self._settings = settings
        hosts = HostPolicy(api_url=settings.base_url, extra=download_hosts)
        if on_ambiguous_submit not in ("raise", "resubmit"):
            raise ConfigurationError(
                f"on_ambiguous_submit must be 'raise' or 'resubmit', got {on_ambiguous_submit!r}"
            )
        self._rng = rng if rng is not None else random.Random()
        self._durations = DurationModel(prior_median=settings.expected_duration)
        if limiter is None:
            limiter = LocalRateLimiter(settings.rate_limit, clock=clock)
        self._limiter = limiter
        if telemetry is True:
            try:
                from .otel import Telemetry
            except ImportError as exc:
                raise ConfigurationError(str(exc)) from None
            telemetry = Telemetry()
        self._telemetry = None if telemetry is False else telemetry
        request_options: dict[str, Any] = {}
        self._owns_http = family is None
        if family is None:
            default = _http.DEFAULT_TIMEOUT if timeout is _UNSET else timeout
            self._http = _http.new_client(_http.lib, timeout=default)
        else:
            self._http = cast("httpx.AsyncClient", http_client)  # either family: one API
            if timeout is not _UNSET:  # else the caller's client keeps its own timeout
                request_options["timeout"] = _http.timeout_in(family, timeout)
        self._sender = Sender(
            self._http,
            settings,
            limiter,
            clock=clock or DEFAULT_CLOCK,
            rng=self._rng,
            on_ambiguous_submit=on_ambiguous_submit,
            request_options=request_options,
            observer=self._telemetry,
        )
        self._downloader = Downloader(self._http, hosts, settings, self._rng)

    async def __aenter__(self) -> AsyncGrokImagine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections this client opened (not a caller-supplied client)."""
        if self._owns_http:  # closing twice is harmless
            await self._http.aclose()

    def __repr__(self) -> str:
        return (
            f"AsyncGrokImagine(base_url={self._settings.base_url!r}, "
            f"rate_limit={self._limiter.limit.text})"
        )

    @property
    def settings(self) -> Settings:
        """The settings this client keeps to (the quota is its limiter's: ``limiter.limit``)."""
        return self._settings

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter every request of this client goes through."""
        return self._limiter

    @property
    def telemetry(self) -> Observer | None:
        """Where this client and its schedulers report requests and jobs, if anywhere."""
        return self._telemetry

    @property
    def on_ambiguous_submit(self) -> AmbiguousSubmitPolicy:
        """What happens when a submission's answer is lost (``"raise"`` or ``"resubmit"``)."""
        return self._sender.on_ambiguous_submit

    async def generate(
        self,
        prompt: str,
        *,
        mode: str = "normal",
        ratio: str = "1:1",
        images: Sequence[str] | str | None = None,
        allow_unlisted: bool = False,
    ) -> str:
        """Start one generation (``POST /v1/generate``, 40 credits) and return its task id; the
        arguments are :class:`GenerationRequest`'s.

        Raises:
            InvalidRequestError: If the prompt, mode, ratio or images are invalid.
            AmbiguousSubmitError: If the answer was lost and the task may exist (not resent).
            APIError: Any other failure, after retries where they are safe (see the errors guide).
        """
        if isinstance(prompt, str):  # before validation copies a prompt of any size
            self._check_prompt(prompt)
        return await self.submit(
            GenerationRequest(
                prompt=prompt, mode=mode, ratio=ratio, images=images, allow_unlisted=allow_unlisted
            )
        )

    def _check_prompt(self, prompt: str) -> None:
        if (problem := prompt_problem(prompt, self._settings.limits)) is not None:
            raise InvalidRequestError(f"invalid request: {problem}", problems=(problem,))

    async def submit(self, request: GenerationRequest) -> str:
        """Start the generation described by ``request`` and return its task id.

        Raises:
            AmbiguousSubmitError, APIError: As :meth:`generate`.
        """
        return await self._submit(request)

    async def _submit(
        self,
        request: GenerationRequest,
        *,
        priority: Priority = Priority.SUBMIT,
        before_send: Callable[[], Awaitable[None]] | None = None,
        on_unsent: Callable[[APIConnectionError], None] | None = None,
    ) -> str:
        """:meth:`submit`, with a scheduler's ``before_send`` (its journal intent, run after the
        permit and shielded with the send) and ``on_unsent`` (an attempt that never left)."""
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"submit() takes a GenerationRequest, got {type(request).__name__}")
        self._check_prompt(request.prompt)
        data = await self._sender.request(
            "POST",
            GENERATE_PATH,
            priority=priority,
            body=request.payload(),
            request=request,
            before_send=before_send,
            on_unsent=on_unsent,
        )
        task_id = parse_task_id(data)
        if task_id is None:  # a success answer without an id: the task may well exist
            raise self._sender.ambiguous(request, "the generate answer carried no task_id", None)
        logger.debug("submitted task %s", task_id)
        return task_id

    async def get_task(self, task_id: str, *, priority: Priority = Priority.POLL) -> Task:
        """Read a task's current state (``GET /v1/status``), retried where needed.

        Args:
            priority: Its place in the rate limiter's queue.

        Raises:
            ConfigurationError: If ``task_id`` is not a non-empty string.
            NotFoundError: If the server does not know the task.
            APIError: Any other failure, after retries.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ConfigurationError(f"task_id must be a non-empty string, got {task_id!r}")
        data = await self._sender.request(
            "GET", STATUS_PATH, priority=priority, params={"task_id": task_id}
        )
        try:
            return parse_task(data, task_id=task_id)
        except APIResponseValidationError as exc:
            exc.method, exc.path = "GET", STATUS_PATH
            raise

    async def wait(
        self,
        task_id: str,
        *,
        poll: PollPolicy | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (expiry must name the paid task)
    ) -> Task:
        """Poll a task until it finishes; return it if it succeeded.

        Args:
            poll: The schedule of the polls after the first (default: the client's).
            timeout: Seconds to wait at most (default: none); the task goes on after it.

        Raises:
            TaskFailedError: If the task failed, or completed without a video URL.
            WaitTimeoutError: If ``timeout`` passed first.
            APIError: If a status request failed after its retries.
        """
        return await self._wait(task_id, poll, timeout, None)

    async def generate_and_wait(
        self,
        prompt: str,
        *,
        mode: str = "normal",
        ratio: str = "1:1",
        images: Sequence[str] | str | None = None,
        allow_unlisted: bool = False,
        poll: PollPolicy | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (expiry must name the paid task)
        on_progress: ProgressHook | None = None,
    ) -> Task:
        """:meth:`generate`, then :meth:`wait` for the result.

        Args:
            timeout: Seconds from the call to give up waiting (default: none). The POST is
                never cut; :class:`WaitTimeoutError` carries the task id.
            on_progress: Called as ``on_progress(task_id, progress)`` after each poll with an
                estimate from 0 to 1 that never goes back (1 at the end).

        Raises:
            TaskFailedError, WaitTimeoutError, InvalidRequestError, APIError: As those do.
        """
        called = anyio.current_time()  # the deadline counts the submission's time too
        task_id = await self.generate(
            prompt, mode=mode, ratio=ratio, images=images, allow_unlisted=allow_unlisted
        )
        return await self._wait(task_id, poll, timeout, called, on_progress)

    async def _wait(
        self,
        task_id: str,
        poll: PollPolicy | None,
        timeout: float | None,  # noqa: ASYNC109 (expiry must name the paid task)
        since: float | None,
        on_progress: ProgressHook | None = None,
    ) -> Task:
        """Poll ``task_id`` until it finishes; ``since``: when the caller created it (None: not
        just now), from which the deadline, progress and the duration model count."""
        task: Task | None = None
        policy = poll or self._settings.poll
        started = anyio.current_time()
        deadline = math.inf if timeout is None else (started if since is None else since) + timeout
        progress, running_at = Progress(), 0.0  # the age at the last poll finding it running
        just_created = since is not None
        with anyio.CancelScope(deadline=deadline):
            if just_created:
                await anyio.sleep(policy.gap(0.0, rng=self._rng))
            while True:
                task = await self.get_task(task_id)
                age = anyio.current_time() - started
                if task.is_terminal:
                    if just_created and task.succeeded:
                        self._durations.observe(running_at, age)
                    report_progress(on_progress, task_id, progress.finished())
                    if not task.succeeded:
                        raise TaskFailedError(task)
                    return task
                running_at = age
                estimate = progress.running(age if just_created else None, self._durations.median)
                report_progress(on_progress, task_id, estimate)
                await anyio.sleep(policy.gap(age, rng=self._rng))
        assert timeout is not None
        raise WaitTimeoutError(
            task_id, last_status=task.status if task is not None else None, timeout=timeout
        )

    def generate_many(
        self,
        requests: Iterable[GenerationRequest | JobSpec | str]
        | AsyncIterable[GenerationRequest | JobSpec | str],
        config: SchedulerConfig | None = None,
        *,
        strict: bool = False,
        on_progress: ProgressHook | None = None,
        **options: Unpack[SchedulerOptions],
    ) -> AbstractAsyncContextManager[JobResults]:
        """Generate many videos, yielding a :class:`~grok_imagine_async.batch.JobResults` that
        streams each :class:`JobResult` as its job finishes (``statistics()``: its counters).

        A failed job, or an invalid item (unless ``strict``), is a result with ``ok`` False.
        What stops the batch (a rejected token, an unwritable journal, an error of
        ``requests``) raises when the block exits, after the paid jobs ended, unrecorded ones
        in ``pending_tasks``. Leaving the block early stops every job.

        Args:
            requests: Any iterable or async iterable of :class:`GenerationRequest`,
                :class:`JobSpec` or prompt strings, read lazily.
            config: A :class:`~grok_imagine_async.batch.SchedulerConfig`.
            strict: End the batch at the first invalid item (an :class:`InvalidRequestError`
                whose ``item`` is its 1-based position), instead of a failed result for it.
            on_progress: Called as ``on_progress(key, progress)`` per job: 0 at its task's
                creation, then :attr:`Job.progress` about once a second, 1 at its end.
            **options: :class:`JobScheduler`'s ``max_credits``, ``journal``,
                ``download_dir``, ``file_stem`` and ``on_event``.

        Example:
            >>> async def main(client: AsyncGrokImagine) -> None:
            ...     async with client.generate_many(["a kite", "an owl"], max_credits=80) as out:
            ...         async for result in out:
            ...             print(result.key, result.ok, result.videos)
        """
        return scheduler.generate_many(
            self, requests, config, strict=strict, on_progress=on_progress, **options
        )

    async def download(
        self, task: Task, dest: str | os.PathLike[str], *, stem: str | None = None
    ) -> list[Path]:
        """Stream a task's videos atomically into the folder ``dest`` as ``<stem>.mp4`` (or
        ``<stem>_<n>.mp4``; ``stem``: the sanitised task id by default), without token or quota.

        Returns:
            The paths written, in the order of ``task.videos``.

        Raises:
            ConfigurationError: If ``task`` has no video, or a URL that is not http(s).
            DownloadError: If a download was refused, too large, or could not be saved.
            APIError: If a download failed after retries.
        """
        return await self._downloader.download(task, Path(dest), stem=stem)
