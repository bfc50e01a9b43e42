"""The job scheduler: fan out many generations, poll them against the quota, stream results.

One :class:`JobScheduler` owns an anyio task group with a fixed set of workers:

- *submitters* take queued jobs, wait for an in-flight slot, and send their ``POST``;
- one *poll dispatcher* keeps every running job in a :class:`DueQueue` ordered by its next
  poll time (one timer for 5,000 jobs, not 5,000 sleeping coroutines) and hands due jobs to
- *pollers*, which read the task's status and either finish the job, resubmit it, or put it
  back into the heap at the time the learned duration model says it is probably done;
- *downloaders* (optional) stream finished videos to disk.

Nothing outlives the ``async with`` block.

The module is longer than the others because these workers share one set of counters and one
notion of a job's life; the other parts live beside it (poll timing in ``_polling``, the timer
heap in ``_due``, journal decisions in ``_resume``, the job vocabulary in ``_jobs``).
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from .._backoff import PollPolicy
from .._blocking import run_blocking
from .._errors import (
    AmbiguousSubmitError,
    APIError,
    AuthenticationError,
    BudgetExceededError,
    DownloadError,
    GrokImagineError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    SchedulerClosedError,
    TaskFailedError,
)
from .._journal.opening import open_journal
from .._limiting.protocol import Priority
from .._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest, Task, TaskStatus
from .._observe import job_scope, observed_hook
from .api import SchedulerClient
from .budget import CreditBudget, Reservation
from .capacity import in_flight_cap
from .due import DueQueue
from .jobs import (
    Job,
    JobEvent,
    JobFinished,
    JobQueued,
    JobResubmitting,
    JobResult,
    JobResumed,
    JobSpec,
    JobState,
    JobSubmitted,
    Journal,
    JournalRecord,
    JournalState,
    SchedulerHook,
    SchedulerStatistics,
    request_key,
)
from .options import Favor, SchedulerOptions
from .polling import DurationModel, PollPlanner
from .record import JobRecord, Tally
from .resume import FINAL_STATES, journal_error, reopened, replayed_task, same_request

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

logger = logging.getLogger("grok_imagine_async.scheduler")

DEFAULT_SCHEDULER_POLL = PollPolicy(
    wait_initial=1.0, wait_factor=1.5, wait_max=30.0, wait_jitter=0.1
)
# When the quota is the bottleneck, every job needs its POST and about one poll whatever the
# order. Sending submissions first starts each generation's clock as early as the quota allows,
# which is what shortens a batch (and polls made later are likelier to find the job done);
# sending polls first tells each caller sooner that their job is done. Measured on the emulator
# (benchmarks/bench_scheduler.py, pro plan, 2,000 jobs): throughput 1.02x the lower bound with
# 2.0 requests per job and a 92 s median detection latency; latency 1.62x, 2.4 and 17 s.
_PRIORITIES: dict[str, tuple[Priority, Priority]] = {  # (submissions, polls)
    "throughput": (Priority.HIGH, Priority.LOW),
    "latency": (Priority.LOW, Priority.HIGH),
}
_SUBMITTERS = 32
_POLLERS = 64
_NOT_FOUND_LIMIT = 3
_QUEUE_SIZE = 64  # jobs accepted ahead of submission: the read-ahead of a lazy input


class JobScheduler:
    """Runs many generations through one client, within its quota and an optional budget.

    Args:
        client: The client (an :class:`AsyncGrokImagine`: its token, limiter and retry policy).
        max_in_flight: Cap on jobs submitted and not finished. Default: eight times what the
            plan sustains by Little's law (quota / requests per job x learned duration), so a
            saturated quota is never idle for lack of started work.
        poll: Bounds of the poll schedule: ``wait_initial`` is the shortest gap between two
            looks at a job, growing by ``wait_factor`` per unsuccessful look, capped at
            ``wait_max``, jittered by ``wait_jitter``; within those bounds polls land when the
            learned duration model says the job is probably done.
        max_credits: Budget: no job is started if it could take spending past this.
        resubmit: How many times one job may be resubmitted after a retryable failure.
        resubmit_on: Failure classes worth a resubmission (default: only ``TRANSIENT``).
        journal: A :class:`Journal`, or a path for a SQLite journal, to resume after a crash.
        download_dir: If given, videos of completed jobs are downloaded there, named after
            the job key, before the job counts as finished.
        max_downloads: Concurrent downloads.
        on_event: A hook receiving every :class:`JobEvent` (progress displays).
        stream_results: Buffer finished jobs for :meth:`results` from the start (otherwise
            only from the first call of :meth:`results`).
        results_buffer: When that many results wait unread, submissions pause (polls go on).
        duration_model: The starting duration model (default: median 30 s prior).
        rng: Source of poll jitter (seed it for reproducible simulations).
        favor: What gets the quota first when it is the bottleneck. ``"throughput"``
            (default, for batches): submissions, so the whole batch ends soonest.
            ``"latency"`` (for apps whose users wait on their own job): polls, so each finished
            job is noticed sooner, at the cost of a longer batch and a few more polls.

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
        journal: Journal | str | os.PathLike[str] | None = None,
        download_dir: str | os.PathLike[str] | None = None,
        max_downloads: int = 4,
        on_event: SchedulerHook | None = None,
        stream_results: bool = False,
        results_buffer: int = 256,
        duration_model: DurationModel | None = None,
        rng: random.Random | None = None,
        favor: Favor = "throughput",
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if resubmit < 0:
            raise ValueError(f"resubmit must be >= 0, got {resubmit}")
        if max_downloads < 1 or results_buffer < 1:
            raise ValueError("max_downloads and results_buffer must be >= 1")
        if favor not in _PRIORITIES:
            raise ValueError(f"favor must be 'throughput' or 'latency', got {favor!r}")
        self._submit_priority, self._poll_priority = _PRIORITIES[favor]
        self._client = client
        self._resubmit_ambiguous = client.on_ambiguous_submit == "resubmit"
        self._max_in_flight = max_in_flight
        self._budget = CreditBudget(max_credits)  # raises ValueError below 0
        self._resubmit = resubmit
        self._resubmit_on = frozenset(resubmit_on)
        self._journal_arg = journal
        self._journal: Journal | None = None
        self._download_dir = Path(download_dir) if download_dir is not None else None
        self._max_downloads = max_downloads
        self._on_event = observed_hook(client.telemetry, self, on_event)
        self._streaming = stream_results
        self._results_buffer = results_buffer
        self._planner = PollPlanner(
            client.limiter.limit,
            poll or DEFAULT_SCHEDULER_POLL,
            duration_model or DurationModel(),
            rng or random.Random(),
        )
        self._limit = client.limiter.limit

        self._jobs: dict[str, JobRecord] = {}
        # With a journal, keys must be the same on every run: repeats of a request are numbered
        # in input order, from a set of 64-bit digests of the requests seen. Without one, a key
        # only has to be unique among running jobs, and nothing grows with the input.
        self._seen: set[int] = set()
        self._repeats: dict[int, int] = {}
        self._due: DueQueue[JobRecord] = DueQueue()
        self._backlog: deque[JobResult] = deque()
        self._counts = Tally(self._notify)
        self._submissions = self._polls = 0
        self._input_closed = False
        self._cancelled = False
        self._fatal: BaseException | None = None
        self._halted = False  # stopped at once: nothing more is sent, paid jobs are left
        self._unrecorded: dict[str, str] = {}  # task ids a failed journal write did not keep
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._started_at = 0.0
        self._limiter_base = (0, 0)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> JobScheduler:
        if self._download_dir is not None:  # before anything is paid for
            await run_blocking(_ensure_writable, self._download_dir)
        self._journal = await open_journal(self._journal_arg)
        self._queue_send, self._queue_recv = anyio.create_memory_object_stream[JobRecord](
            _QUEUE_SIZE
        )
        self._poll_send, self._poll_recv = anyio.create_memory_object_stream[JobRecord](0)
        self._download_send, self._download_recv = anyio.create_memory_object_stream[JobRecord](0)
        self._started_at = anyio.current_time()
        stats = self._client.limiter.statistics()
        self._limiter_base = (stats.permits_granted, stats.rate_limited_responses)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for _ in range(_SUBMITTERS):
            self._start_worker(self._submitter)
        for _ in range(_POLLERS):
            self._start_worker(self._poller)
        self._start_worker(self._dispatcher)
        if self._download_dir is not None:
            for _ in range(self._max_downloads):
                self._start_worker(self._downloader)
        return self

    def _start_worker(self, worker: Callable[[], Awaitable[None]]) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._guarded, worker)

    async def _guarded(self, worker: Callable[[], Awaitable[None]]) -> None:
        # The one way out of a worker: whatever escapes it (a rejected token, a bug) becomes
        # the scheduler's fatal error, raised as it is by __aexit__, never in an ExceptionGroup.
        try:
            await worker()
        except Exception as exc:
            self._stop(exc, drain=False)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        raised_here = False
        if exc is None and not self._cancelled:
            try:  # a normal exit waits for every job, like a task group
                self.close_input()
                await self._wait_for(lambda: self._unfinished() == 0 or self._halted)
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
            for stream in (
                self._queue_send,
                self._queue_recv,
                self._poll_send,
                self._poll_recv,
                self._download_send,
                self._download_recv,
            ):
                stream.close()
            if self._journal is not None and self._journal is not self._journal_arg:
                with anyio.CancelScope(shield=True):
                    await self._journal_call(self._journal.aclose)
        pending = self._pending_tasks()
        if self._fatal is not None:
            if pending and isinstance(self._fatal, GrokImagineError):
                self._fatal.pending_tasks = pending
            self._log_pending(pending, f"stopped by {type(self._fatal).__name__}: {self._fatal}")
            raise self._fatal
        if pending:
            self._log_pending(pending, "left early")
        if raised_here and not suppressed:
            assert exc is not None
            raise exc
        return bool(suppressed)

    def cancel(self) -> None:
        """Stop everything now: no new submissions, no more polls; the block then exits.

        Jobs already submitted stay recorded in the journal (if any) and resume next time.
        """
        self._cancelled = True
        self._input_closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._notify()

    def _pending_tasks(self) -> dict[str, str]:
        """Paid tasks whose end this run did not record: unfinished, or lost by the journal."""
        pending = dict(self._unrecorded)
        pending.update((j.key, j.task_id) for j in self._jobs.values() if j.task_id is not None)
        return pending

    def _log_pending(self, pending: dict[str, str], why: str) -> None:
        if not pending:
            return
        kept = self._journal is not None and not self._unrecorded
        listed = ", ".join(f"{key}={task_id}" for key, task_id in pending.items())
        logger.log(
            logging.INFO if kept else logging.WARNING,
            "scheduler %s with %d paid jobs whose end is not recorded%s; their task ids: %s",
            why,
            len(pending),
            " (kept in the journal: they resume on the next run)" if kept else "",
            listed,
        )

    def close_input(self) -> None:
        """Declare that no more jobs will be submitted: :meth:`results` ends after the last."""
        self._input_closed = True
        self._notify()

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
            from .._requests import build_request

            request = build_request(request)
        elif not isinstance(request, GenerationRequest):
            raise TypeError(
                "submit() takes a GenerationRequest, a JobSpec or a prompt string, "
                f"got {type(request).__name__}"
            )
        if self._tg is None or self._input_closed:
            raise SchedulerClosedError(
                "the scheduler is not accepting jobs (not started, or closed)"
            )
        if key is None:
            key = self._key_for(request)
        if key in self._jobs:
            raise ValueError(f"a job with key {key!r} is already running")
        job = JobRecord(key, request, self._counts)
        self._jobs[key] = job
        self._emit(JobQueued(key=key, at=anyio.current_time()))
        await self._queue_send.send(job)
        return job.handle

    def _key_for(self, request: GenerationRequest) -> str:
        occurrence = 0
        if self._journal is not None:
            digest = int(request_key(request).removeprefix("req-"), 16)
            if digest in self._seen:
                occurrence = self._repeats.get(digest, 1)
                self._repeats[digest] = occurrence + 1
            else:
                self._seen.add(digest)
        else:
            while request_key(request, occurrence) in self._jobs:
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
        self._tg.start_soon(self._feed, items, strict)

    async def _feed(self, items: Iterable[Any] | AsyncIterable[Any], strict: bool) -> None:
        position = 0
        try:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    position += 1
                    if not await self._feed_one(item, position, strict):
                        return
            else:
                for item in items:
                    position += 1
                    if not await self._feed_one(item, position, strict):
                        return
        except Exception as exc:  # the input itself failed: what was paid for is seen through
            self._stop(exc, drain=True)
            return
        self.close_input()

    async def _feed_one(self, item: Any, position: int, strict: bool) -> bool:
        """Submit one input item; False once the input must not be read further."""
        try:
            await self.submit(item)
        except SchedulerClosedError:
            return False  # stopped (cancel(), a fatal error): read no further
        except (InvalidRequestError, ValueError, TypeError) as exc:
            problems = exc.problems if isinstance(exc, InvalidRequestError) else (str(exc),)
            error = InvalidRequestError(
                f"input item {position}: {exc}", problems=problems, item=position
            )
            if strict:
                self._stop(error, drain=True)
                return False
            self._reject(item, position, error)
        return True

    def _reject(self, item: Any, position: int, error: InvalidRequestError) -> None:
        """An input item that cannot be a job ends as a failed result; nothing is sent."""
        key = f"invalid-{position}"
        if isinstance(item, JobSpec):
            request, key = item.request, item.key or key
        elif isinstance(item, GenerationRequest):
            request = item
        else:  # what was asked for, unvalidated, so the result can say it
            prompt = item if isinstance(item, str) else repr(item)
            request = GenerationRequest.model_construct(prompt=prompt)
        job = JobRecord(key, request, self._counts)
        now = anyio.current_time()
        self._emit(JobQueued(key=key, at=now))
        self._conclude(
            job, self._result(job, error=error, failure_class=FailureClass.INVALID_INPUT)
        )

    async def _submitter(self) -> None:
        async for job in self._queue_recv:
            await self._for_job(job, self._start(job))

    async def _for_job(self, job: JobRecord, step: Awaitable[None]) -> None:
        """Run one step of one job; whatever goes wrong in it ends that job, not the batch.

        Only a rejected token goes on (to the worker's guard), since no other job can pass.
        """
        try:
            await step
        except AuthenticationError:
            raise
        except Exception as exc:
            if job.result is not None:  # it ended; what failed came after (an event hook)
                logger.exception("error after job %s finished", job.key)
                return
            error = exc if isinstance(exc, GrokImagineError) else _unexpected(exc)
            await self._finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR)

    async def _start(self, job: JobRecord) -> None:
        if self._fatal is not None:
            await self._not_sent(job)
            return
        record = None
        if self._journal is not None:
            try:
                record = await self._journal.load(job.key)
            except Exception as exc:
                self._journal_failed(exc, job)
                await self._not_sent(job)
                return
        if record is not None:  # the resume policy: never-paid, undownloaded, ambiguous
            record = reopened(record, resubmit_ambiguous=self._resubmit_ambiguous)
        if record is not None and not same_request(record, job.request):
            logger.warning(
                "job %s: its request changed since the journal recorded it; running it anew",
                job.key,
            )
            record = None
        if record is not None and record.state in FINAL_STATES:
            await self._replay(job, record)  # sends nothing: needs no in-flight slot
            return
        await self._wait_for(lambda: self._has_slot() or self._fatal is not None)
        if self._fatal is not None:
            await self._not_sent(job)
            return
        job.submitting()
        if record is None or not await self._resume(job, record):
            await self._send(job)

    async def _not_sent(self, job: JobRecord) -> None:
        """A queued job the stopping scheduler will not submit: it ends unpaid, unrecorded."""
        error = SchedulerClosedError(f"not submitted: the scheduler stopped ({self._fatal})")
        await self._finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR, record=False)

    async def _replay(self, job: JobRecord, record: JournalRecord) -> None:
        """Finish a job the journal says has finished, without any request to the API."""
        self._adopt(job, record)
        if record.state is JournalState.FAILED:
            await self._finish(
                job,
                error=journal_error(record),
                failure_class=record.failure_class or FailureClass.UNKNOWN,
                from_journal=True,
                record=False,
            )
            return
        task = replayed_task(record)
        files = tuple(Path(f) for f in record.files)
        if self._download_dir is not None and not (files and all(f.exists() for f in files)):
            await self._queue_download(job, task)  # URLs live ~24 h: fetch what is missing
            return
        await self._finish(job, task=task, files=files, from_journal=True, record=False)

    def _adopt(self, job: JobRecord, record: JournalRecord) -> None:
        """Take over what an earlier run spent on ``job`` (submissions, credits)."""
        job.adopted(attempts=record.attempts, credits=record.credits)
        self._budget.adopt(record.credits)

    async def _resume(self, job: JobRecord, record: JournalRecord) -> bool:
        """Continue a job the journal saw start; False if it still needs a submission."""
        self._adopt(job, record)
        now = anyio.current_time()
        if record.state is JournalState.SUBMITTED and record.task_id:
            job.resumed(record.task_id)  # its age is unknown: poll at once, then learn
            self._emit(JobResumed(key=job.key, at=now, task_id=record.task_id))
            self._schedule(job, now)
            return True
        # INTENT with no task id: the POST may or may not have created (and charged) a task.
        if self._resubmit_ambiguous:
            return False
        await self._finish(
            job,
            error=AmbiguousSubmitError(
                "a submission was in flight when the previous run stopped; its outcome is "
                "unknown, so it was not resent (to avoid paying twice)",
                request=job.request,
            ),
            failure_class=FailureClass.AMBIGUOUS_SUBMIT,
        )
        return True

    async def _send(self, job: JobRecord) -> None:
        cost = CREDITS_PER_GENERATION
        if not self._budget.can_afford(cost=cost):
            assert self._budget.max_credits is not None
            refused = BudgetExceededError(
                max_credits=self._budget.max_credits, committed_credits=self._budget.committed
            )
            await self._finish(job, error=refused, failure_class=FailureClass.BUDGET_EXCEEDED)
            return
        with self._budget.reserve(cost) as held:  # released unless committed below
            await self._send_reserved(job, cost, held)

    async def _send_reserved(self, job: JobRecord, cost: int, held: Reservation) -> None:
        attempt = job.attempts + 1

        async def record_intent() -> None:
            if self._journal is not None:
                try:
                    await self._journal.record_intent(job.key, job.request, attempt)
                except BudgetExceededError:
                    raise  # a shared budget (a Redis job store) refused it: not a fault
                except Exception as exc:
                    raise _as_journal_error(exc, self._journal) from exc

        self._submissions += 1
        self._note_request()
        try:
            with job_scope(self._client.telemetry, self, job.key):
                task_id = await self._client._submit(
                    job.request, before_send=record_intent, priority=self._submit_priority
                )
        except BudgetExceededError as exc:
            # A shared budget (a Redis job store) refused the intent: nothing was sent.
            await self._finish(job, error=exc, failure_class=FailureClass.BUDGET_EXCEEDED)
            return
        except AmbiguousSubmitError as exc:
            held.commit(certain=False)  # it may have been charged: count it against the budget
            job.charged(attempt, cost)
            await self._finish(job, error=exc, failure_class=FailureClass.AMBIGUOUS_SUBMIT)
            return
        except AuthenticationError as exc:
            # Provably not started: close the job (and its journal intent) before stopping all.
            await self._finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            raise
        except JournalError as exc:  # the intent could not be recorded, so nothing was sent
            self._journal_failed(exc, job)
            await self._not_sent(job)
            return
        except (APIError, InvalidRequestError) as exc:  # a prompt over Limits: this job only
            await self._finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            return
        except Exception as exc:  # after the intent: the POST may have left, and been paid
            held.commit(certain=False)
            job.charged(attempt, cost)
            ambiguous = AmbiguousSubmitError(
                f"the submission failed unexpectedly ({_unexpected(exc)}); it may have "
                "started a task, so it was not resent",
                request=job.request,
            )
            await self._finish(job, error=ambiguous, failure_class=FailureClass.AMBIGUOUS_SUBMIT)
            return
        with anyio.CancelScope(shield=True):
            held.commit()
            job.charged(attempt, cost)
            if self._journal is not None:
                try:
                    await self._journal.record_submitted(job.key, task_id)
                except Exception as exc:
                    self._unrecorded[job.key] = task_id
                    self._journal_failed(exc, job)
        now = anyio.current_time()
        job.submitted(task_id, at=now)
        self._emit(JobSubmitted(key=job.key, at=now, task_id=task_id, attempt=attempt))
        self._schedule(job, now + self._poll_delay(job, now))

    # -- polling ---------------------------------------------------------------------------

    def _schedule(self, job: JobRecord, when: float) -> None:
        self._due.schedule(job, when)

    async def _dispatcher(self) -> None:
        while True:
            await self._poll_send.send(await self._due.next_due())

    async def _poller(self) -> None:
        async for job in self._poll_recv:
            await self._for_job(job, self._poll_once(job))

    async def _poll_once(self, job: JobRecord) -> None:
        assert job.task_id is not None
        self._polls += 1
        job.polled()
        self._note_request()
        try:
            with job_scope(self._client.telemetry, self, job.key):
                task = await self._client.get_task(job.task_id, priority=self._poll_priority)
        except NotFoundError as exc:
            if job.missing() >= _NOT_FOUND_LIMIT:
                await self._finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
                return
            self._reschedule(job)
            return
        except AuthenticationError:
            raise
        except APIError:  # the task exists and is paid for: keep looking, a little later
            self._reschedule(job)
            return
        now = anyio.current_time()
        if not task.is_terminal:
            self._reschedule(job, looked_at=now)
            return
        if job.submitted_at is not None and task.status is TaskStatus.COMPLETED:
            self._planner.model.observe(job.last_look - job.submitted_at, now - job.submitted_at)
        if task.succeeded:
            if self._download_dir is not None:
                await self._queue_download(job, task)
            else:
                await self._finish(job, task=task)
            return
        failure = task.failure_class or FailureClass.UNKNOWN
        if failure in self._resubmit_on and job.resubmits < self._resubmit:
            job.resubmitting()
            self._emit(JobResubmitting(key=job.key, at=now, failure_class=failure))
            assert self._tg is not None
            self._tg.start_soon(self._resend, job)
            return
        await self._finish(job, task=task, error=TaskFailedError(task), failure_class=failure)

    async def _resend(self, job: JobRecord) -> None:
        try:
            await self._for_job(job, self._send(job))
        except Exception as exc:
            self._stop(exc, drain=False)

    def _reschedule(self, job: JobRecord, *, looked_at: float | None = None) -> None:
        now = anyio.current_time()
        if looked_at is not None:
            job.looked(at=looked_at)
        self._schedule(job, now + self._poll_delay(job, now))

    def _poll_delay(self, job: JobRecord, now: float) -> float:
        return self._planner.delay(now=now, submitted_at=job.submitted_at, polls=job.polls)

    # -- downloading -----------------------------------------------------------------------

    async def _queue_download(self, job: JobRecord, task: Task) -> None:
        job.succeeded(task)
        await self._download_send.send(job)

    async def _downloader(self) -> None:
        assert self._download_dir is not None
        async for job in self._download_recv:
            task = job.finished_task
            assert task is not None
            await self._for_job(job, self._download(job, task, self._download_dir))

    async def _download(self, job: JobRecord, task: Task, folder: Path) -> None:
        try:
            files = await self._client.download(task, folder, stem=job.key)
        except Exception as exc:
            local = _os_error_in(exc)  # disk full, no permission (maybe in a task group's group)
            if local is not None:
                error: GrokImagineError = _download_error(local, folder)
            elif isinstance(exc, (APIError, DownloadError)):
                error = exc
            else:
                raise
            # The task id and its URLs stay in the journal: the next run downloads it again.
            await self._finish(
                job, task=task, error=error, failure_class=FailureClass.REQUEST_ERROR
            )
            return
        if self._journal is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._journal.record_files(job.key, files)
                except Exception as exc:
                    self._journal_failed(exc, job)
        await self._finish(job, task=task, files=tuple(files))

    # -- finishing -------------------------------------------------------------------------

    async def _finish(
        self,
        job: JobRecord,
        *,
        task: Task | None = None,
        error: GrokImagineError | None = None,
        failure_class: FailureClass | None = None,
        files: tuple[Path, ...] = (),
        from_journal: bool = False,
        record: bool = True,
    ) -> None:
        result = self._result(
            job,
            task=task,
            error=error,
            failure_class=failure_class,
            files=files,
            from_journal=from_journal,
        )
        if record and self._journal is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._journal.record_finished(result)
                except Exception as exc:
                    if result.task_id is not None:
                        self._unrecorded[job.key] = result.task_id
                    self._journal_failed(exc, job)
        del self._jobs[job.key]
        self._conclude(job, result)

    def _result(
        self,
        job: JobRecord,
        *,
        task: Task | None = None,
        error: GrokImagineError | None = None,
        failure_class: FailureClass | None = None,
        files: tuple[Path, ...] = (),
        from_journal: bool = False,
    ) -> JobResult:
        return JobResult(
            key=job.key,
            request=job.request,
            task=task,
            error=error,
            failure_class=failure_class if error is not None else None,
            attempts=job.attempts,
            credits=job.credits,
            polls=job.polls,
            submitted_at=job.submitted_at,
            finished_at=anyio.current_time(),
            files=files,
            from_journal=from_journal,
        )

    def _conclude(self, job: JobRecord, result: JobResult) -> None:
        job.finished(result)  # after the journal write: a woken waiter finds it recorded
        if self._streaming:
            self._backlog.append(result)
        self._notify()
        self._emit(JobFinished(key=job.key, at=result.finished_at, result=result))
        if self._fatal is not None and self._unfinished() == 0 and not self._streaming:
            self._halt()  # drained: end the block (a results() reader ends on its own)

    async def results(self) -> AsyncGenerator[JobResult, None]:
        """Yield each job's :class:`JobResult` as it finishes, in completion order.

        Ends when the input is closed (see :meth:`close_input`, :meth:`feed`) and every job
        has finished. If results are not read, submissions pause once ``results_buffer``
        wait unread; polls of running jobs go on.
        """
        self._streaming = True
        while True:
            while self._backlog:
                result = self._backlog.popleft()
                self._notify()
                yield result
            if self._drained():
                return
            await self._wait_for(lambda: bool(self._backlog) or self._drained())

    def _drained(self) -> bool:
        return (self._input_closed and self._unfinished() == 0) or self._halted

    # -- bookkeeping -----------------------------------------------------------------------

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot of the scheduler's counters."""
        now = anyio.current_time()
        limiter = self._client.limiter.statistics()
        period = self._limit.period
        span = period / 4  # a steady view: short spans make a few quick requests look like a burst
        return SchedulerStatistics(
            queued=self._counts[JobState.QUEUED],
            submitting=self._counts[JobState.SUBMITTING],
            in_flight=self._counts[JobState.RUNNING],
            completed=self._counts[JobState.COMPLETED],
            failed=self._counts[JobState.FAILED],
            submissions=self._submissions,
            polls=self._polls,
            requests_sent=limiter.permits_granted - self._limiter_base[0],
            rate_limited=limiter.rate_limited_responses - self._limiter_base[1],
            credits_consumed=self._budget.spent,
            credits_uncertain=self._budget.uncertain,
            requests_per_minute=self._planner.requests_since(now - span) * 60.0 / span,
            limit_per_minute=self._limit.requests * 60.0 / period,
            max_in_flight=self._current_cap(),
            predicted_duration=self._planner.model.median,
        )

    @property
    def budget(self) -> CreditBudget:
        """The credit budget: ``spent``, ``committed``, ``can_afford(n)`` (read it; the
        scheduler alone changes it)."""
        return self._budget

    def _current_cap(self) -> int:
        if self._max_in_flight is not None:
            return self._max_in_flight
        time_in_system = self._planner.model.mean + self._planner.policy.wait_initial
        return in_flight_cap(self._limit, time_in_system=time_in_system)

    def _has_slot(self) -> bool:
        busy = self._counts[JobState.SUBMITTING] + self._counts[JobState.RUNNING]
        backlog_full = self._streaming and len(self._backlog) >= self._results_buffer
        return busy < self._current_cap() and not backlog_full

    def _unfinished(self) -> int:
        return len(self._jobs)

    def _note_request(self) -> None:
        self._planner.note_request(anyio.current_time())

    def _emit(self, event: JobEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a display's bug must not end a job, let alone the batch
            logger.exception("the on_event hook raised on %s", type(event).__name__)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_for(self, predicate: Any) -> None:
        while not predicate():
            await self._changed.wait()

    def _stop(self, exc: BaseException, *, drain: bool) -> None:
        """The one place a fatal error goes: accept no more jobs, submit nothing more.

        With ``drain``, jobs already submitted are polled to their end (they are paid for)
        and the block then exits; without (a rejected token: no poll can pass either), every
        worker stops now. Either way ``__aexit__`` raises the first fatal error.
        """
        if self._fatal is None:
            self._fatal = exc
        self._input_closed = True
        if not drain or (self._unfinished() == 0 and not self._streaming):
            self._halt()
        self._notify()

    def _halt(self) -> None:
        self._halted = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._notify()

    def _journal_failed(self, exc: Exception, job: JobRecord) -> None:
        """A journal call failed: stop the batch, keep polling what was paid for."""
        assert self._journal is not None
        error = _as_journal_error(exc, self._journal)
        level = logging.ERROR if self._fatal is None else logging.DEBUG  # once, not per job
        logger.log(level, "journal failed (job %s): %s", job.key, error)
        self._stop(error, drain=True)

    async def _journal_call(self, call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except Exception as exc:
            assert self._journal is not None
            error = _as_journal_error(exc, self._journal)
            if self._fatal is None:
                self._fatal = error
            logger.error("journal failed on closing: %s", error)


def _ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}.part"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DownloadError(
            f"download_dir {folder} cannot be written: {exc.strerror or exc}", local_path=folder
        ) from None


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` if it is an OSError, or the first OSError of an exception group."""
    if isinstance(exc, OSError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _os_error_in(inner)
        if found is not None:
            return found
    return None


def _download_error(exc: OSError, folder: Path) -> DownloadError:
    where = Path(exc.filename) if isinstance(exc.filename, str) else folder
    return DownloadError(f"cannot write {where}: {exc.strerror or exc}", local_path=where)


def _unexpected(exc: Exception) -> GrokImagineError:
    """A typed error for an exception of no known kind (a bug, an unreadable answer)."""
    error = GrokImagineError(f"unexpected {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _as_journal_error(exc: Exception, journal: Journal) -> JournalError:
    if isinstance(exc, JournalError):
        return exc
    path = getattr(journal, "path", None)
    error = JournalError(
        f"the journal failed: {type(exc).__name__}: {exc}",
        path=path if isinstance(path, Path) else None,
    )
    error.__cause__ = exc
    return error


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
