"""The job registry of an app with several workers: every job findable from every worker.

With a :class:`~grok_imagine_async.redis.RedisJobStore`, a job is owned (run) by the worker
that accepted it, but any worker can answer for it: a job it does not run is *mirrored*, a
:class:`~grok_imagine_async.Job` handle kept up to date from the store's change messages, so
``GET /videos/{id}``, waiting and event streams work the same on every worker. When a worker
stops (or its scheduler dies), its jobs are adopted by the others: polled if their task id is
known, reported as ambiguous if their POST's outcome is not, never paid twice.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import anyio

from .._errors import BudgetExceededError, JournalError
from .._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest
from .._scheduling.jobs import Job, JobResult, JobSpec, JobState, StoreState
from .._scheduling.record import JobRecord, Tally
from .._scheduling.resume import journal_error, replayed_task
from ._jobs import JobRegistry, _Entry

if TYPE_CHECKING:
    from .._scheduling.jobs import StoredJob
    from ..redis import RedisJobStore

logger = logging.getLogger("grok_imagine_async.fastapi")

_STATES = {
    StoreState.INTENT: JobState.SUBMITTING,
    StoreState.SUBMITTED: JobState.RUNNING,
    StoreState.COMPLETED: JobState.COMPLETED,
    StoreState.FAILED: JobState.FAILED,
}


class SharedJobRegistry(JobRegistry):
    """A :class:`JobRegistry` whose jobs every worker sharing ``store`` can find and follow.

    Made by :func:`grok_imagine_lifespan` when given ``redis_url``; its :meth:`run` (in the
    lifespan's task group) adopts the jobs of workers that stopped.

    Args:
        store: The job store every worker of the app opens.
        max_credits: The shared budget (the store enforces it; this refuses jobs early).
        max_jobs: As for :class:`JobRegistry`.
        max_queued: As for :class:`JobRegistry`.
    """

    def __init__(
        self,
        store: RedisJobStore,
        *,
        max_credits: int | None = None,
        max_jobs: int = 10_000,
        max_queued: int = 256,
    ) -> None:
        super().__init__(max_jobs=max_jobs, max_queued=max_queued, journal=store)
        self._store = store
        self._shared_budget = max_credits
        self._mirrors: dict[str, JobRecord] = {}
        self._stale = False  # the store may have missed changes: re-read every mirror
        self._remove_listener = store.subscribe(self._on_change)
        self._closing = anyio.Event()

    def close(self) -> None:
        """As :meth:`JobRegistry.close`; also ends :meth:`run`."""
        super().close()
        self._closing.set()

    async def submit(self, request: GenerationRequest | str) -> Job:
        """As :meth:`JobRegistry.submit`, with the budget counted over every worker."""
        if self._shared_budget is not None and self._store.available:
            # Reserved in Redis by every worker, plus this worker's jobs not yet reserved;
            # the other workers' queued jobs are not counted here, but the reservation before
            # each POST is exact: a job accepted past the budget fails with budget_exceeded.
            committed = await self._store.credits_committed()
            if self._scheduler is not None:
                stats = self._scheduler.statistics()
                committed += CREDITS_PER_GENERATION * (stats.queued + stats.submitting)
            if committed + CREDITS_PER_GENERATION > self._shared_budget:
                raise BudgetExceededError(
                    max_credits=self._shared_budget, committed_credits=committed
                )
        return await super().submit(request)

    async def get(self, job_id: str) -> Job | None:
        """The job ``job_id``, run here or by another worker; None if no worker knows it.

        A job whose worker stopped is adopted here and resumed (polled, never resent).

        Raises:
            SchedulerClosedError: If the job must be resumed but the scheduler stopped.
        """
        entry = self._entries.get(job_id)
        if entry is not None:
            self._entries.move_to_end(job_id)
            return entry.job
        if self._closed:
            return None
        async with self._lookup_lock:
            entry = self._entries.get(job_id)
            if entry is not None:
                return entry.job
            try:
                claim = await self._store.claim(job_id)
            except JournalError:
                return None  # Redis is down and no worker here knows the id
            if claim.job is None:
                return None
            if claim.owned:
                try:
                    return await self._admit(job_id, JobSpec(claim.job.request, job_id))
                except ValueError:  # adopted by run() a moment ago: follow it
                    pass
            return self._mirror(claim.job)

    async def run(self) -> None:
        """Until closed: adopt the jobs of stopped workers, and re-read mirrors when the
        store may have missed changes. Then give this worker's lease up, so that the other
        workers adopt its unfinished jobs at once (a scheduler that died runs none)."""
        period = max(0.05, self._store.lease / 3)
        try:
            while not self._closed:
                for job in await self._store.adopt_orphans():
                    await self._resume_adopted(job)
                if self._stale:
                    self._stale = False
                    await self._refresh_mirrors()
                with anyio.move_on_after(period):
                    await self._closing.wait()
        finally:
            self._remove_listener()
            await self._store.give_up_lease()

    # -- internals -------------------------------------------------------------------------

    async def _admit(self, key: str, request: GenerationRequest | JobSpec | str) -> Job:
        if not isinstance(request, JobSpec):  # a new job: every worker can find it from now
            if isinstance(request, str):
                from .._requests import build_request

                request = build_request(request)
            await self._store.register(key, request)
        return await super()._admit(key, request)

    async def _resume_adopted(self, job: StoredJob) -> None:
        if job.key in self._entries:
            # Mirrored here: the mirror keeps following the store while this worker runs it.
            scheduler = self._running()
            with contextlib.suppress(ValueError):  # already running here
                await scheduler.submit(JobSpec(job.request, job.key), key=job.key)
            return
        with contextlib.suppress(ValueError):
            await self._admit(job.key, JobSpec(job.request, job.key))

    def _mirror(self, stored: StoredJob) -> Job:
        # Another worker runs it: a record of our own, counted by no scheduler, follows the store.
        record = JobRecord(stored.key, stored.request, Tally(lambda: None))
        self._entries[stored.key] = _Entry(job=record.handle)
        self._mirrors[stored.key] = record
        _update(record, stored, self._shared_budget)
        self._forget_old()
        return record.handle

    def _on_change(self, stored: StoredJob | None) -> None:
        if stored is None:
            self._stale = True
            return
        job = self._mirrors.get(stored.key)
        if job is None:
            return
        entry = self._entries.get(stored.key)
        if entry is None or entry.job is not job.handle:
            del self._mirrors[stored.key]  # forgotten meanwhile
            return
        if _update(job, stored, self._shared_budget):
            self._wake(entry)

    async def _refresh_mirrors(self) -> None:
        for key in list(self._mirrors):
            try:
                stored = await self._store.peek(key)
            except JournalError:
                self._stale = True
                return
            if stored is not None:
                self._on_change(stored)

    def _forget_old(self) -> None:
        super()._forget_old()
        for key in [k for k in self._mirrors if k not in self._entries]:
            del self._mirrors[key]


def _update(job: JobRecord, stored: StoredJob, budget: int | None) -> bool:
    """Bring a mirror to the stored state; True if it changed."""
    if job.state.is_final:
        return False
    record = stored.record
    state = JobState.QUEUED if record is None else _STATES[record.state]
    if record is not None:
        job.adopted(attempts=record.attempts, credits=record.credits)
        job.mirrored(task_id=record.task_id)
    if state is job.state and not state.is_final:
        return False
    if record is not None and state.is_final:
        failed = record.state is StoreState.FAILED
        error = journal_error(record) if failed else None
        if failed and record.failure_class is FailureClass.BUDGET_EXCEEDED:
            spent = budget if budget is not None else record.credits
            error = BudgetExceededError(max_credits=spent, committed_credits=spent)
        job.finished(
            JobResult(
                key=job.key,
                request=job.request,
                task=None if failed else replayed_task(record),
                error=error,
                failure_class=(record.failure_class or FailureClass.UNKNOWN) if failed else None,
                attempts=record.attempts,
                credits=record.credits,
                polls=0,
                submitted_at=None,
                finished_at=anyio.current_time(),
                from_journal=True,
                last_task_id=record.task_id,
            )
        )
        return True
    job.mirrored(state=state)
    return True
