"""``generate_many``: a scheduler fed from an iterable, its results streamed to the caller."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import anyio

from .._models import GenerationRequest
from .._progress import Progress, ProgressHook, report_progress
from .api import SchedulerClient
from .jobs import (
    JobEvent,
    JobFinished,
    JobResult,
    JobResumed,
    JobSpec,
    JobStore,
    JobSubmitted,
    SchedulerHook,
    SchedulerStatistics,
)
from .options import SchedulerConfig
from .scheduler import JobScheduler


@asynccontextmanager
async def generate_many(
    client: SchedulerClient,
    items: Iterable[GenerationRequest | JobSpec | str]
    | AsyncIterable[GenerationRequest | JobSpec | str],
    config: SchedulerConfig | None = None,
    *,
    max_credits: int | None = None,
    journal: JobStore | str | os.PathLike[str] | None = None,
    download_dir: str | os.PathLike[str] | None = None,
    file_stem: Callable[[str], str] | None = None,
    on_event: SchedulerHook | None = None,
    strict: bool = False,
    on_progress: ProgressHook | None = None,
) -> AsyncIterator[JobResults]:
    """Run ``items`` through a :class:`JobScheduler` and stream their results (see
    :meth:`AsyncGrokImagine.generate_many`)."""
    reporter = None
    if on_progress is not None:
        reporter = _Reporter(on_progress, on_event)
        on_event = reporter.observe
    scheduler = JobScheduler(
        client,
        config,
        max_credits=max_credits,
        journal=journal,
        download_dir=download_dir,
        file_stem=file_stem,
        on_event=on_event,
        stream_results=True,
    )
    async with scheduler, anyio.create_task_group() as group:
        scheduler.feed(items, strict=strict)
        if reporter is not None:
            median = lambda: scheduler.statistics().predicted_duration  # noqa: E731
            # Once a second for 30 s generations; faster on a faster server.
            group.start_soon(reporter.run, median, client.settings.expected_duration / 30)
        results = JobResults(scheduler)
        try:
            yield results
        finally:
            await results.aclose()
            scheduler.cancel()
            group.cancel_scope.cancel()


class JobResults(AsyncIterator[JobResult]):
    """What ``generate_many`` yields: each :class:`JobResult` as its job finishes, and the
    batch's :meth:`statistics` meanwhile.

    Example:
        >>> async with client.generate_many(jobs) as results:  # doctest: +SKIP
        ...     async for result in results:
        ...         done = results.statistics().completed
    """

    def __init__(self, scheduler: JobScheduler) -> None:
        self._scheduler = scheduler
        self._stream = scheduler.results()

    def __aiter__(self) -> JobResults:
        return self

    async def __anext__(self) -> JobResult:
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        """Stop the stream (leaving the ``generate_many`` block does it too)."""
        await self._stream.aclose()

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot of the batch's counters (:class:`SchedulerStatistics`)."""
        return self._scheduler.statistics()


class _Reporter:
    """Calls ``on_progress`` per job: 0 at its submission (None if resumed: age unknown), on
    each move while it runs, 1 at its end."""

    def __init__(self, hook: ProgressHook, on_event: Callable[[JobEvent], None] | None) -> None:
        self._hook = hook
        self._on_event = on_event
        self._running: dict[str, tuple[Progress, float | None]] = {}  # key: (shown, created)

    def observe(self, event: JobEvent) -> None:
        key = event.key
        if isinstance(event, (JobSubmitted, JobResumed)):
            shown = self._running.get(key, (Progress(), None))[0]  # kept over a resubmission
            created = event.at if isinstance(event, JobSubmitted) else None
            self._running[key] = (shown, created)
            report_progress(self._hook, key, shown.value if created is not None else None)
        elif isinstance(event, JobFinished):
            self._running.pop(key, None)
            report_progress(self._hook, key, 1.0)
        if self._on_event is not None:
            self._on_event(event)

    async def run(self, median: Callable[[], float], interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            now, typical = anyio.current_time(), median()
            for key, (shown, created) in list(self._running.items()):
                before = shown.value
                if created is not None and shown.running(now - created, typical) != before:
                    report_progress(self._hook, key, shown.value)
