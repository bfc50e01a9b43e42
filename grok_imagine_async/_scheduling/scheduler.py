"""The job scheduler: fan out many generations, poll them against the quota, stream results.

One :class:`JobScheduler` owns an anyio task group with a fixed set of workers, each role in a
module of its own:

- *submitters* (``submitting``) take queued jobs, wait for an in-flight slot, and send their
  ``POST``;
- one *dispatcher* and the *pollers* (``poller``) look at running jobs when the learned
  duration model says they are probably done, and finish, resubmit or reschedule them;
- *downloaders* (``downloading``, optional) stream finished videos to disk;
- a *feeder* (``feeding``) reads a lazy input into the queue.

They share one ``Books`` (``books``: the jobs, their tally and budget, how a job and a run
end). This module wires them and holds the public surface: the lifecycle, :meth:`submit`,
:meth:`feed`, :meth:`results` and :meth:`statistics`. Nothing outlives the ``async with``
block.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._backoff import PollPolicy
from .._errors import GrokImagineError, SchedulerClosedError
from .._files import run_blocking
from .._journal.opening import open_journal
from .._models import FailureClass, GenerationRequest
from .._observe import observed_hook
from .api import SchedulerClient
from .books import Books
from .breaker import Breaker, BreakerPolicy
from .budget import CreditBudget
from .capacity import in_flight_cap
from .downloading import Downloader, ensure_writable
from .feeding import Feeder
from .jobs import (
    Job,
    JobQueued,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    JobStore,
    SchedulerHook,
    SchedulerStatistics,
    request_key,
)
from .options import PRIORITIES, Favor
from .poller import Poller
from .polling import DurationModel, PollPlanner
from .submitting import Submitter

_SUBMITTERS = 32
_POLLERS = 64
_QUEUE_SIZE = 64  # jobs accepted ahead of submission: the read-ahead of a lazy input


class _FromSettings:
    def __repr__(self) -> str:
        return "<client.settings.breaker>"


_FROM_SETTINGS: Any = _FromSettings()  # None turns the breaker off: it cannot mean "default"


class JobScheduler:
    """Runs many generations through one client, within its quota and an optional budget.

    Args:
        client: The client (an :class:`AsyncGrokImagine`: its token, limiter and retry policy).
        max_in_flight: Cap on jobs submitted and not finished. Default: eight times what the
            plan sustains by Little's law (quota / requests per job x learned duration), so a
            saturated quota is never idle for lack of started work.
        poll: The poll schedule while the quota is idle (default: the client's
            ``settings.poll``): a job is looked at ``wait_initial``
            after its submission, then every ``max(wait_initial, (wait_factor - 1) x age)``
            seconds, at most ``wait_max`` apart, jittered by ``wait_jitter``. As the quota
            fills, looks move toward where the learned duration model says the job is very
            probably done (see ``_scheduling/polling.py``).
        max_credits: Budget: no job is started if it could take spending past this.
        resubmit: How many times one job may be resubmitted after a retryable failure.
        resubmit_on: Failure classes worth a resubmission (default: only ``TRANSIENT``).
        journal: A :class:`JobStore`, or a path for a SQLite journal, to resume after a crash.
        download_dir: If given, videos of completed jobs are downloaded there, named after
            the job key (or ``file_stem(key)``), before the job counts as finished.
        file_stem: The stem of a job's video files, from its key (default: the key), e.g.
            ``JobFile(path, name=...).check().file_stem``.
        max_downloads: Concurrent downloads.
        on_event: A hook receiving every :class:`JobEvent` (progress displays).
        stream_results: Buffer finished jobs for :meth:`results` from the start (otherwise
            only from the first call of :meth:`results`).
        results_buffer: When that many results wait unread, submissions pause (polls go on).
        duration_model: The starting duration model (default: its prior median is the
            client's ``settings.expected_duration``).
        rng: Source of poll jitter (seed it for reproducible simulations).
        favor: What gets the quota first when it is the bottleneck. ``"throughput"``
            (default, for batches): submissions, so the whole batch ends soonest.
            ``"latency"`` (for apps whose users wait on their own job): polls, so each finished
            job is noticed sooner, at the cost of a longer batch and a few more polls.
        breaker: When the batch pauses on an outage (probing until it is over) or stops on
            systematic refusals, so that it stops paying for a systematic failure; see
            :class:`BreakerPolicy` for the defaults and their reasoning. Default: the client's
            ``settings.breaker``. None: never pause nor stop.

    Example:
        >>> async def main(client: AsyncGrokImagine) -> None:
        ...     async with JobScheduler(client) as scheduler:
        ...         job = await scheduler.submit("a kite over a beach")
        ...         task = await job.wait()
    """

    def __init__(
        self,
        client: SchedulerClient,
        *,
        max_in_flight: int | None = None,
        poll: PollPolicy | None = None,
        max_credits: int | None = None,
        resubmit: int = 1,
        resubmit_on: Iterable[FailureClass] = (FailureClass.TRANSIENT,),
        journal: JobStore | str | os.PathLike[str] | None = None,
        download_dir: str | os.PathLike[str] | None = None,
        file_stem: Callable[[str], str] | None = None,
        max_downloads: int = 4,
        on_event: SchedulerHook | None = None,
        stream_results: bool = False,
        results_buffer: int = 256,
        duration_model: DurationModel | None = None,
        rng: random.Random | None = None,
        favor: Favor = "throughput",
        breaker: BreakerPolicy | None = _FROM_SETTINGS,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if resubmit < 0:
            raise ValueError(f"resubmit must be >= 0, got {resubmit}")
        if max_downloads < 1 or results_buffer < 1:
            raise ValueError("max_downloads and results_buffer must be >= 1")
        if favor not in PRIORITIES:
            raise ValueError(f"favor must be 'throughput' or 'latency', got {favor!r}")
        self._priorities = PRIORITIES[favor]  # (submissions, polls)
        self._client = client
        self._max_in_flight = max_in_flight
        self._resubmit = resubmit
        self._resubmit_on = frozenset(resubmit_on)
        self._journal_arg = journal
        self._download_dir = Path(download_dir) if download_dir is not None else None
        self._file_stem = file_stem
        self._max_downloads = max_downloads
        self._results_buffer = results_buffer
        self._limit = client.limiter.limit
        settings = client.settings  # already in the server's seconds (Settings.from_env)
        self._planner = PollPlanner(
            self._limit,
            poll or settings.poll,
            duration_model or DurationModel(prior_median=settings.expected_duration),
            rng or random.Random(),
            statistics=client.limiter.statistics,
            unfinished=lambda: self._books.unfinished(),
        )
        budget = CreditBudget(max_credits)  # raises ValueError below 0
        on_event = observed_hook(client.telemetry, self, on_event)
        policy = settings.breaker if breaker is _FROM_SETTINGS else breaker
        self._books = Books(
            budget=budget,
            breaker=Breaker(policy),
            on_event=on_event,
            streaming=stream_results,
        )
        # With a journal, keys must be the same on every run: repeats of a request are numbered
        # in input order, from a set of 64-bit digests of the requests seen. Without one, a key
        # only has to be unique among running jobs, and nothing grows with the input.
        self._seen: set[int] = set()
        self._repeats: dict[int, int] = {}
        self._cancelled = False
        self._tg: TaskGroup | None = None
        self._limiter_base = (0, 0)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> JobScheduler:
        books = self._books
        downloads = None
        if self._download_dir is not None:  # checked before anything is paid for
            await run_blocking(ensure_writable, self._download_dir)
            downloads = Downloader(books, self._client, self._download_dir, self._file_stem)
        books.journal = await open_journal(self._journal_arg)
        self._queue_send, self._queue_recv = anyio.create_memory_object_stream[JobRecord](
            _QUEUE_SIZE
        )
        submit_priority, poll_priority = self._priorities
        self._submitter = Submitter(
            books,
            self._client,
            priority=submit_priority,
            has_slot=self._has_slot,
            share_wait=self._planner.share_wait,
            note_request=self._planner.note_request,
            breaker=books.breaker,
            on_probe=lambda job: self._planner.follow(job.key),
            downloads=downloads,
            owner=self,
        )
        self._poller = Poller(
            books,
            self._client,
            self._planner,
            priority=poll_priority,
            resubmit=self._resubmit,
            resubmit_on=self._resubmit_on,
            submitter=self._submitter,
            downloads=downloads,
            owner=self,
        )
        self._submitter.watch_with(self._poller.watch, self._poller.before_post)
        self._downloads = downloads
        stats = self._client.limiter.statistics()
        self._limiter_base = (stats.permits_granted, stats.rate_limited_responses)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        books.attach(self._tg)
        for _ in range(_SUBMITTERS):
            books.start(self._submitter.run, self._queue_recv)
        for _ in range(_POLLERS):
            books.start(self._poller.run)
        books.start(self._poller.dispatch)
        policy = books.breaker.policy
        if books.journal is not None and policy is not None:
            # Processes sharing the journal (a Redis job store) take one course for the batch.
            books.start(books.follow_course, policy.probe_wait_initial / 2)
        if downloads is not None:
            for _ in range(self._max_downloads):
                books.start(downloads.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Close the input, wait for the jobs, cancel the workers, raise the fatal error.
        assert self._tg is not None
        books = self._books
        raised_here = False
        if exc is None and not self._cancelled:
            try:  # a normal exit waits for every job, like a task group
                self.close_input()
                await books.wait_for(lambda: books.unfinished() == 0 or books.halted)
            except BaseException as wait_exc:  # cancelled from outside, or by a fatal error
                exc_type, exc, tb = type(wait_exc), wait_exc, wait_exc.__traceback__
                raised_here = True
        self._tg.cancel_scope.cancel()
        try:
            if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
                # The task group knows whether a cancellation was its own (cancel(), a fatal
                # error) and must be swallowed here, or came from outside and must go on.
                suppressed = await self._tg.__aexit__(exc_type, exc, tb)
            else:
                # The caller's own exception: let it out as it is, not in an ExceptionGroup
                # (the workers never raise; they were just cancelled).
                await self._tg.__aexit__(None, None, None)
                suppressed = False
        finally:
            self._queue_send.close()
            self._queue_recv.close()
            self._poller.close()
            if self._downloads is not None:
                self._downloads.close()
            if books.journal is not None and books.journal is not self._journal_arg:
                with anyio.CancelScope(shield=True):
                    await books.close_journal()
        pending = books.pending_tasks()
        if books.fatal is not None:
            if pending and isinstance(books.fatal, GrokImagineError):
                books.fatal.pending_tasks = pending
            books.log_pending(pending, f"stopped by {type(books.fatal).__name__}: {books.fatal}")
            raise books.fatal
        books.log_pending(pending, "left early")
        if raised_here and not suppressed:
            assert exc is not None
            raise exc
        return bool(suppressed)

    def cancel(self) -> None:
        """Stop everything now: no new submissions, no more polls; the block then exits.

        Jobs already submitted stay recorded in the journal (if any) and resume next time.
        """
        self._cancelled = True
        self._books.input_closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._books.notify()

    def close_input(self) -> None:
        """Declare that no more jobs will be submitted: :meth:`results` ends after the last."""
        self._books.input_closed = True
        self._books.notify()

    # -- submitting ------------------------------------------------------------------------

    async def submit(
        self, request: GenerationRequest | JobSpec | str, *, key: str | None = None
    ) -> Job:
        """Queue one generation and return its :class:`Job` handle.

        Returns at once unless the submission queue is full (backpressure); the POST itself
        happens in the background, through the rate limiter.

        Raises:
            InvalidRequestError: If ``request`` is a prompt string that is not valid.
            TypeError: If ``request`` is of none of those types.
            ValueError: If ``key`` is already used by a job that has not finished.
            SchedulerClosedError: If the scheduler is not running or its input was closed.
        """
        if isinstance(request, JobSpec):
            key = key if key is not None else request.key
            request = request.request
        elif isinstance(request, str):
            request = GenerationRequest(prompt=request)
        elif not isinstance(request, GenerationRequest):
            raise TypeError(
                "submit() takes a GenerationRequest, a JobSpec or a prompt string, "
                f"got {type(request).__name__}"
            )
        books = self._books
        if self._tg is None or books.input_closed:
            raise SchedulerClosedError(
                "the scheduler is not accepting jobs (not started, or closed)"
            )
        if key is None:
            key = self._key_for(request)
        if key in books.jobs:
            raise ValueError(f"a job with key {key!r} is already running")
        job = JobRecord(key, request, books.tally, durations=self._planner.model)
        books.jobs[key] = job
        books.emit(JobQueued(key=key, at=anyio.current_time()))
        await self._queue_send.send(job)
        return job.handle

    def _key_for(self, request: GenerationRequest) -> str:
        occurrence = 0
        if self._books.journal is not None:
            digest = int(request_key(request).removeprefix("req-"), 16)
            if digest in self._seen:
                occurrence = self._repeats.get(digest, 1)
                self._repeats[digest] = occurrence + 1
            else:
                self._seen.add(digest)
        else:
            while request_key(request, occurrence) in self._books.jobs:
                occurrence += 1
        return request_key(request, occurrence)

    def feed(self, items: Iterable[Any] | AsyncIterable[Any], *, strict: bool = False) -> None:
        """Submit every item of ``items`` in the background, lazily, then close the input.

        Items are :class:`GenerationRequest`, :class:`JobSpec` or prompt strings. Only as many
        are read ahead as the queue holds, so a 100,000-line input is never all in memory.

        An invalid item (a blank or invalid prompt, a key already running, an object of
        another type) becomes a failed result of its own, with an :class:`InvalidRequestError`
        whose ``item`` is its 1-based position; nothing is sent for it. With ``strict=True``
        it stops the batch instead: nothing more is submitted, the jobs already submitted are
        polled to their end, and the error is raised when the block exits. An error raised by
        ``items`` itself always stops the batch that way.
        """
        assert self._tg is not None, "feed() needs a running scheduler"
        self._books.start(Feeder(self._books, self.submit).run, items, strict)

    # -- results ---------------------------------------------------------------------------

    async def results(self) -> AsyncGenerator[JobResult, None]:
        """Yield each job's :class:`JobResult` as it finishes, in completion order.

        Ends when the input is closed (see :meth:`close_input`, :meth:`feed`) and every job
        has finished. If results are not read, submissions pause once ``results_buffer``
        wait unread; polls of running jobs go on.
        """
        books = self._books
        books.streaming = True
        while True:
            while books.backlog:
                result = books.backlog.popleft()
                books.notify()
                yield result
            if self._drained():
                return
            await books.wait_for(lambda: bool(books.backlog) or self._drained())

    def _drained(self) -> bool:
        books = self._books
        return (books.input_closed and books.unfinished() == 0) or books.halted

    # -- bookkeeping -----------------------------------------------------------------------

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot of the scheduler's counters."""
        now = anyio.current_time()
        limiter = self._client.limiter.statistics()
        period = self._limit.period
        span = period / 4  # a steady view: short spans make a few quick requests look like a burst
        tally, budget = self._books.tally, self._books.budget
        started = self._tg is not None
        return SchedulerStatistics(
            queued=tally[JobState.QUEUED],
            submitting=tally[JobState.SUBMITTING],
            in_flight=tally[JobState.RUNNING],
            completed=tally[JobState.COMPLETED],
            failed=tally[JobState.FAILED],
            submissions=self._submitter.submissions if started else 0,
            polls=self._poller.polls if started else 0,
            requests_sent=limiter.permits_granted - self._limiter_base[0],
            rate_limited=limiter.rate_limited_responses - self._limiter_base[1],
            credits_consumed=budget.spent,
            credits_uncertain=budget.uncertain,
            requests_per_minute=self._planner.requests_since(now - span) * 60.0 / span,
            limit_per_minute=self._limit.requests * 60.0 / period,
            max_in_flight=self._current_cap(),
            predicted_duration=self._planner.model.median,
            breaker=self._books.breaker.snapshot(),
        )

    @property
    def budget(self) -> CreditBudget:
        """The credit budget: ``spent``, ``committed``, ``can_afford(n)`` (read it; the
        scheduler alone changes it)."""
        return self._books.budget

    def _current_cap(self) -> int:
        if self._max_in_flight is not None:
            return self._max_in_flight
        time_in_system = self._planner.model.mean + self._planner.policy.wait_initial
        return in_flight_cap(self._limit, time_in_system=time_in_system)

    def _has_slot(self) -> bool:
        books = self._books
        busy = books.tally[JobState.SUBMITTING] + books.tally[JobState.RUNNING]
        backlog_full = books.streaming and len(books.backlog) >= self._results_buffer
        return busy < self._current_cap() and not backlog_full
