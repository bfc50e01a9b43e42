"""The lifespan of the FastAPI integration and the dependencies that hand its resources out."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any

import anyio
from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from .._client import AsyncGrokImagine
from .._errors import ConfigurationError
from .._http import HTTPClient
from .._journal.memory import MemoryJobStore
from .._journal.sqlite import open_journal
from .._limiting.protocol import RateLimiter
from .._observe import Observer
from .._scheduling.config import FROM_SETTINGS, SchedulerConfig
from .._scheduling.jobs import JobStore, SchedulerHook
from .._scheduling.scheduler import JobScheduler
from .._settings import Settings
from ._jobs import DEFAULT_MAX_JOBS, DEFAULT_MAX_QUEUED, JobRegistry

STATE_ATTRIBUTE = "grok_imagine"


@dataclass(frozen=True, slots=True)
class GrokImagineResources:
    """What :func:`grok_imagine_lifespan` opened for an app (``app.state.grok_imagine``)."""

    client: AsyncGrokImagine
    scheduler: JobScheduler
    jobs: JobRegistry


@asynccontextmanager
async def grok_imagine_lifespan(
    app: Starlette,
    *,
    settings: Settings | None = None,
    http_client: HTTPClient | None = None,
    limiter: RateLimiter | None = None,
    client_factory: Callable[[], AsyncGrokImagine] | None = None,
    journal: JobStore | str | os.PathLike[str] | None = None,
    max_credits: int | None = None,
    redis_url: str | None = None,
    redis_namespace: str = "app",
    redis_lease: float = 10.0,
    max_jobs: int = DEFAULT_MAX_JOBS,
    max_queued: int = DEFAULT_MAX_QUEUED,
    on_event: SchedulerHook | None = None,
    telemetry: bool | Observer | None = None,
    scheduler_config: SchedulerConfig | None = None,
    download_dir: str | os.PathLike[str] | None = None,
    file_stem: Callable[[str], str] | None = None,
) -> AsyncIterator[None]:
    """Open the app's client and scheduler for the app's lifetime; a FastAPI ``lifespan``.

    ``FastAPI(lifespan=grok_imagine_lifespan)``, or ``async with grok_imagine_lifespan(app,
    ...): yield`` from your own. Meanwhile ``app.state.grok_imagine`` holds the
    :class:`GrokImagineResources` that :data:`GrokClient`, :data:`GrokScheduler` and
    :data:`GrokJobs` hand to handlers. Jobs in flight at shutdown are not waited for: with a
    journal they resume when next looked up; without one, each is logged with its task id.

    Args:
        settings: The client's settings (default: :meth:`~grok_imagine_async.Settings.from_env`).
        http_client: An ``AsyncClient`` of httpx2 or httpx to send through (not closed here).
        client_factory: Builds the client instead, at startup (closed at shutdown). Excludes
            ``settings``, ``http_client``, ``limiter`` and ``telemetry``.
        journal: A :class:`~grok_imagine_async.abc.JobStore` or a SQLite file path, so jobs
            survive a restart (default: in memory). One per process.
        max_credits: Credit budget of the app (of all its workers with ``redis_url``).
        redis_url: Share one Redis with the other workers: quota, jobs and budget. Excludes
            ``journal``; an unreachable Redis fails the startup.
        redis_namespace: Separates apps sharing one token and one Redis.
        redis_lease: Seconds a worker may go silent before its jobs are adopted.
        max_jobs: Finished jobs to remember by id.
        max_queued: Jobs allowed to wait for a submission slot before new ones get a 429.
        scheduler_config: How the scheduler runs; ``favor`` defaults to ``"latency"`` here and
            ``breaker`` to the client's with ``warmup_until="running"`` and no stop on refusals.
        file_stem: The stem of a job's video files, from its id (default: the id).

    Raises:
        ConfigurationError: At startup, if no API key is given or found, or a setting is bad; also
            if ``client_factory`` comes with client settings, or ``redis_url`` with ``journal``.
    """
    client_settings = (settings, http_client, limiter, telemetry)
    if client_factory is not None and any(s is not None for s in client_settings):
        raise ConfigurationError("pass either client_factory or client settings, not both")
    if redis_url is not None and journal is not None:
        raise ConfigurationError("pass either redis_url (a shared job store) or journal, not both")
    if redis_url is not None:
        try:
            from ..redis import RedisJobStore, RedisRateLimiter
        except ImportError as exc:
            raise ConfigurationError(str(exc)) from None
    async with AsyncExitStack() as stack:
        if client_factory is not None:
            client = client_factory()  # with its own limiter (a RedisRateLimiter is shared)
        else:
            settings = settings or Settings.from_env()
            if redis_url is not None and limiter is None:
                limiter = await stack.enter_async_context(
                    RedisRateLimiter(redis_url, limit=settings.rate_limit, api_key=settings.api_key)
                )
            client = AsyncGrokImagine(
                settings=settings, http_client=http_client, limiter=limiter, telemetry=telemetry
            )
        stack.push_async_callback(client.aclose)
        store: JobStore
        if redis_url is not None:
            store = RedisJobStore(
                redis_url,
                api_key=client.settings.api_key,
                namespace=redis_namespace,
                max_credits=max_credits,
                lease=redis_lease,
                limiter=client.limiter if isinstance(client.limiter, RedisRateLimiter) else None,
            )
            await stack.enter_async_context(store)
        else:
            store = await open_journal(journal) or MemoryJobStore()
            if store is not journal:
                stack.push_async_callback(store.aclose)  # after the scheduler stops
        config = scheduler_config or SchedulerConfig()
        jobs = JobRegistry(
            store,
            max_jobs=max_jobs,
            max_queued=max_queued,
            max_credits=max_credits,
            forget_finished=redis_url is None and journal is None,  # a store in memory
            limiter=client.limiter,
        )
        breaker = config.breaker
        if breaker is FROM_SETTINGS and client.settings.breaker is not None:
            # Users send their own prompts: the first ones must not wait for a completed task,
            # and one user's refused prompts must not stop the service for everyone.
            breaker = replace(
                client.settings.breaker, warmup_until="running", stop_after_refusals=None
            )
        # Each user waits on their own job: tell them as soon as it is done.
        config = replace(config, favor=config.favor or "latency", breaker=breaker)
        scheduler = JobScheduler(
            client,
            config,
            journal=store,
            # A shared store reserves the budget in Redis, for every worker.
            max_credits=None if redis_url is not None else max_credits,
            download_dir=download_dir,
            file_stem=file_stem,
            on_event=on_event,
        )
        body_error: Exception | None = None
        async with anyio.create_task_group() as group:
            # In a task of its own: a fatal error there (a revoked token) stops the scheduler,
            # not the whole server. Stopped, it logs the task id of each paid job in flight.
            await group.start(jobs.run, scheduler)
            setattr(app.state, STATE_ATTRIBUTE, GrokImagineResources(client, scheduler, jobs))
            try:
                yield
            except Exception as exc:  # re-raised below as is, not in an ExceptionGroup
                body_error = exc
            finally:
                # At once, not when the runner next runs: no POST may start after this.
                scheduler.cancel()
                jobs.close()
                delattr(app.state, STATE_ATTRIBUTE)
        if body_error is not None:
            raise body_error


def _dependency(name: str) -> Callable[[HTTPConnection], Awaitable[Any]]:
    """A dependency handing out the attribute ``name`` of the app's resources."""

    async def dependency(connection: HTTPConnection) -> Any:
        resources = getattr(connection.app.state, STATE_ATTRIBUTE, None)
        if resources is None:
            raise RuntimeError(
                "grok_imagine_lifespan is not running for this app: create it with "
                "FastAPI(lifespan=grok_imagine_lifespan) or enter it from your own lifespan"
            )
        return getattr(resources, name)

    return dependency


GrokClient = Annotated[AsyncGrokImagine, Depends(_dependency("client"))]
"""A handler parameter receiving the app's client: ``async def h(client: GrokClient)``."""
GrokScheduler = Annotated[JobScheduler, Depends(_dependency("scheduler"))]
"""A handler parameter receiving the app's scheduler."""
GrokJobs = Annotated[JobRegistry, Depends(_dependency("jobs"))]
"""A handler parameter receiving the app's job registry."""
