"""The jobs an app's handlers started, findable by id after the scheduler is done with them.

A :class:`~grok_imagine_async.JobScheduler` forgets a job once it finishes, but a web app is
asked about a job (``GET /videos/{id}``) long after. :class:`JobRegistry` keeps the handles,
bounded: unfinished jobs always (the scheduler's own backpressure bounds them), finished ones up
to ``max_jobs``, least recently looked at dropped first. It also tells waiters when a job
changes, from the scheduler's events, so a handler can wait for a job or stream its progress
(:attr:`Job.progress <grok_imagine_async.Job.progress>`) without polling anything.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from .._errors import BacklogFullError, BudgetExceededError, SchedulerClosedError
from .._models import CREDITS_PER_GENERATION, GenerationRequest
from .._scheduling.capacity import queue_wait
from .._scheduling.jobs import (
    Job,
    JobEvent,
    JobResult,
    JobSpec,
    JobState,
    JobStore,
)
from .._scheduling.scheduler import JobScheduler

DEFAULT_MAX_JOBS = 10_000
"""Finished jobs a :class:`JobRegistry` remembers (a few kB each)."""
DEFAULT_MAX_QUEUED = 256
"""Jobs allowed to wait for a submission slot before new ones are refused (HTTP 429)."""


@dataclass(slots=True)
class _Entry:
    job: Job | None  # None while the scheduler is accepting it
    changed: anyio.Event | None = None  # created by the first waiter


class JobRegistry:
    """Jobs started through an app's scheduler, by id, with change notification.

    Made by :func:`~grok_imagine_async.fastapi.grok_imagine_lifespan` and handed to handlers by
    the ``GrokJobs`` dependency; a handler starts a job with :meth:`submit`, finds it again with
    :meth:`get`, and waits on it with :meth:`wait_finished` or :meth:`wait_changed`.

    Ids are random (``uuid4().hex``): a caller cannot guess another caller's job.

    Args:
        max_jobs: Finished jobs to remember; beyond it the least recently used are forgotten
            (:meth:`get` then finds them only in the journal, if there is one).
        max_queued: Jobs allowed to wait for a submission slot; :meth:`submit` refuses more.
        journal: The scheduler's journal, if any: :meth:`get` looks up ids it forgot there.
        new_id: Makes job ids (default: ``uuid4().hex``).
    """

    def __init__(
        self,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        journal: JobStore | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        if max_jobs < 1 or max_queued < 1:
            raise ValueError("max_jobs and max_queued must be >= 1")
        self._max_jobs = max_jobs
        self._max_queued = max_queued
        self._journal = journal
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._scheduler: JobScheduler | None = None
        self._closed = False
        self._lookup_lock = anyio.Lock()

    def attach(self, scheduler: JobScheduler) -> None:
        """Start serving jobs of ``scheduler`` (whose ``on_event`` must call :meth:`observe`)."""
        self._scheduler = scheduler

    def close(self) -> None:
        """Stop: refuse new jobs, and wake every waiter with :class:`SchedulerClosedError`."""
        self._closed = True
        for entry in self._entries.values():
            self._wake(entry)

    @property
    def closed(self) -> bool:
        """True once the scheduler stopped (shutdown, or a fatal error)."""
        return self._closed

    def __len__(self) -> int:
        return len(self._entries)

    # -- starting and finding jobs ---------------------------------------------------------

    async def submit(self, request: GenerationRequest | str) -> Job:
        """Start a job for ``request`` and return its handle; ``job.key`` is its new id.

        Returns as soon as the job is queued; the scheduler submits it through the rate limiter.

        Raises:
            InvalidRequestError: If ``request`` is a prompt string that is not valid.
            BudgetExceededError: If the credit budget cannot pay for one more job.
            BacklogFullError: If ``max_queued`` jobs already wait to be submitted.
            SchedulerClosedError: If the scheduler no longer runs.
        """
        scheduler = self._running()
        stats = scheduler.statistics()
        if stats.queued >= self._max_queued:
            # Time for the quota to carry the queue ahead of this job, at the planned cost per job.
            wait = queue_wait(stats.queued, requests_per_second=stats.limit_per_minute / 60.0)
            raise BacklogFullError(queued=stats.queued, retry_after=math.ceil(wait))
        budget = scheduler.budget
        # Queued jobs will each cost a generation (those being sent are held already): a job
        # that cannot be paid beside them is refused now rather than accepted to fail.
        if budget.max_credits is not None and not budget.can_afford(stats.queued + 1):
            raise BudgetExceededError(
                max_credits=budget.max_credits,
                committed_credits=budget.committed + CREDITS_PER_GENERATION * stats.queued,
            )
        key = self._new_id()
        return await self._admit(key, request)

    async def get(self, job_id: str) -> Job | None:
        """The job with id ``job_id``, or None if unknown.

        An id this registry forgot (or that a previous run of the app started) is looked up in
        the journal, if there is one, and picked up again: a finished job is answered from the
        journal, an unfinished one resumes polling its task, without paying again.

        Raises:
            SchedulerClosedError: If the id must be resumed but the scheduler no longer runs.
        """
        entry = self._entries.get(job_id)
        if entry is not None:
            self._entries.move_to_end(job_id)
            return entry.job
        if self._journal is None or self._closed:
            return None
        async with self._lookup_lock:  # two lookups of one id must not both resume it
            entry = self._entries.get(job_id)
            if entry is not None:
                return entry.job
            record = await self._journal.load(job_id)
            if record is None:
                return None
            try:
                return await self._admit(job_id, JobSpec(record.request, job_id))
            except ValueError:  # the scheduler runs it already (submitted there directly)
                return None

    def unfinished(self) -> list[Job]:
        """The jobs not finished yet, oldest first."""
        return [
            e.job for e in self._entries.values() if e.job is not None and not e.job.status.is_final
        ]

    # -- waiting ---------------------------------------------------------------------------

    async def wait_changed(self, job: Job, seen: JobState) -> JobState:
        """Wait until ``job`` is no longer in state ``seen``; return its new state.

        Returns at once if it already moved on. Takes no timeout: use ``anyio.move_on_after``.

        Raises:
            SchedulerClosedError: If the scheduler stops first.
            KeyError: If ``job`` was not started through this registry.
        """
        while job.status is seen:
            if self._closed:
                raise SchedulerClosedError("the video scheduler stopped before the job finished")
            entry = self._entries.get(job.key)
            if entry is None or entry.job is not job:
                raise KeyError(job.key)
            if entry.changed is None:
                entry.changed = anyio.Event()
            await entry.changed.wait()
        return job.status

    async def wait_finished(self, job: Job) -> JobResult:
        """Wait until ``job`` finishes; return its result (a failure is a result too).

        Raises:
            SchedulerClosedError: If the scheduler stops first.
        """
        while not job.status.is_final:
            await self.wait_changed(job, job.status)
        assert job.result is not None
        return job.result

    def observe(self, event: JobEvent) -> None:
        """The scheduler's event hook: wake the job's waiters."""
        entry = self._entries.get(event.key)
        if entry is not None:  # else a job submitted to the scheduler directly
            self._wake(entry)

    # -- internals -------------------------------------------------------------------------

    def _running(self) -> JobScheduler:
        if self._closed or self._scheduler is None:
            raise SchedulerClosedError("the video scheduler is not running")
        return self._scheduler

    async def _admit(self, key: str, request: GenerationRequest | JobSpec | str) -> Job:
        scheduler = self._running()
        # Registered before submitting, so no event of the new job can arrive unseen.
        entry = self._entries[key] = _Entry(job=None)
        try:
            job = await scheduler.submit(request, key=key)
        except SchedulerClosedError:  # its input closed: it is stopping
            del self._entries[key]
            raise SchedulerClosedError("the video scheduler is not running") from None
        except BaseException:
            del self._entries[key]
            raise
        entry.job = job
        self._forget_old()
        return job

    def _forget_old(self) -> None:
        excess = len(self._entries) - self._max_jobs
        if excess <= 0:
            return
        stale = []
        for key, entry in self._entries.items():  # least recently used first
            if entry.job is not None and entry.job.status.is_final:
                stale.append(key)
                if len(stale) == excess:
                    break
        for key in stale:
            del self._entries[key]

    @staticmethod
    def _wake(entry: _Entry) -> None:
        if entry.changed is not None:
            entry.changed.set()
            entry.changed = None
