"""``generate_many``: a scheduler fed from an iterable, its results streamed to the caller."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .._models import GenerationRequest
from .api import SchedulerClient
from .jobs import JobResult, JobSpec
from .options import SchedulerOptions
from .scheduler import JobScheduler

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11


@asynccontextmanager
async def generate_many(
    client: SchedulerClient,
    items: Iterable[GenerationRequest | JobSpec | str]
    | AsyncIterable[GenerationRequest | JobSpec | str],
    *,
    strict: bool = False,
    **options: Unpack[SchedulerOptions],
) -> AsyncIterator[AsyncIterator[JobResult]]:
    """Run ``items`` through a :class:`JobScheduler` and stream their results.

    See :meth:`AsyncGrokImagine.generate_many`. Leaving the block early (``break``, an
    exception, cancellation) stops every job's task at once; with a journal they resume on
    the next run. ``strict`` is :meth:`JobScheduler.feed`'s.
    """
    scheduler = JobScheduler(client, stream_results=True, **options)
    async with scheduler:
        scheduler.feed(items, strict=strict)
        results = scheduler.results()
        try:
            yield results
        finally:
            await results.aclose()
            scheduler.cancel()
