"""The job scheduler (its task group runs the workers, sharing one ``Books``); generate_many."""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import anyio

from .._errors import ConfigurationError, DownloadError, InvalidRequestError, SchedulerClosedError
from .._files import folder_problem, run_blocking
from .._journal.sqlite import open_journal
from .._models import FailureClass, GenerationRequest
from .._observe import observed_hook
from .._progress import ProgressHook, report_progress
from .api import SchedulerClient
from .books import Books, CreditBudget
from .breaker import Breaker
from .config import FROM_SETTINGS, SchedulerConfig
from .durations import DurationModel
from .jobs import (
    Job,
    JobEvent,
    JobFinished,
    JobQueued,
    JobRecord,
    JobResult,
    JobResumed,
    JobSpec,
    JobState,
    JobStore,
    JobSubmitted,
    SchedulerHook,
    SchedulerStatistics,
    request_key,
)
from .polling import PollPlanner
from .workers import Workers

if TYPE_CHECKING:
    from typing_extensions import Unpack

REQUESTS_PER_JOB = 2.2  # one POST plus about 1.2 polls, what the poll schedule aims for


class SchedulerOptions(TypedDict, total=False):
    """:class:`~grok_imagine_async.JobScheduler`'s keywords beside ``config=``."""

    max_credits: int | None
    journal: JobStore | str | os.PathLike[str] | None
    download_dir: str | os.PathLike[str] | None
    file_stem: Callable[[str], str] | None
    on_event: SchedulerHook | None


def queue_wait(queued: int, *, requests_per_second: float) -> float:
    """Seconds for the quota to carry ``queued`` jobs."""
    return queued * REQUESTS_PER_JOB / max(requests_per_second, 1e-9)


class JobScheduler:
    """Runs many generations through one client, within its quota and an optional budget.

    Args:
        client: The client (its token, limiter and retry policy).
        config: How it runs its jobs (a :class:`~grok_imagine_async.batch.SchedulerConfig`).
        **options: ``max_credits``: no job is started if it could take spending past it.
            ``journal``: a :class:`~grok_imagine_async.abc.JobStore`, or a path for a
            SQLite journal, to resume after a crash. ``download_dir``: completed jobs'
            videos are downloaded there before they count as finished. ``file_stem``: the
            stem of a job's video files, from its key (default: the key). ``on_event``: a
            hook receiving every :class:`JobEvent`.

    Raises:
        ConfigurationError: If ``max_credits`` is negative.
        TypeError: On an unknown keyword (as Python's own calls).

    Example:
        >>> async def main(client: AsyncGrokImagine) -> None:
        ...     async with JobScheduler(client) as scheduler:
        ...         job = await scheduler.submit("a kite over a beach")
        ...         task = await job.wait()
    """

    def __init__(
        self,
        client: SchedulerClient,
        config: SchedulerConfig | None = None,
        **options: Unpack[SchedulerOptions],
    ) -> None:
        unknown = options.keys() - SchedulerOptions.__optional_keys__
        if unknown:
            raise TypeError(f"unexpected keyword argument {', '.join(sorted(unknown))}")
        self._config = config = config or SchedulerConfig()
        self._client, self._options = client, options
        settings = client.settings  # already in the server's seconds (Settings.from_env)
        self._planner = PollPlanner(
            client.limiter.limit,
            config.poll or settings.poll,
            config.duration_model or DurationModel(prior_median=settings.expected_duration),
            config.rng or random.Random(),
            statistics=client.limiter.statistics,
            unfinished=lambda: len(self._books.jobs),
        )
        policy = settings.breaker if config.breaker is FROM_SETTINGS else config.breaker
        self._books = Books(
            budget=CreditBudget(options.get("max_credits")),  # raises ConfigurationError below 0
            breaker=Breaker(policy),
            on_event=observed_hook(client.telemetry, self, options.get("on_event")),
        )
        self._repeats: Counter[int] = Counter()  # request digest: copies seen (with a journal)
        self._running: AbstractAsyncContextManager[JobScheduler] | None = None
        self._workers: Workers | None = None
        self._limiter_base = (0, 0)

    async def __aenter__(self) -> JobScheduler:
        self._running = self._run()
        return await self._running.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._running is not None
        return await self._running.__aexit__(*exc_info)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[JobScheduler]:
        """Start the workers; a normal exit waits for every job; raise the fatal error."""
        books, config, options = self._books, self._config, self._options
        folder = options.get("download_dir")
        if folder is not None:  # checked before anything is paid
            folder = Path(folder)
            problem = await run_blocking(folder_problem, folder, "download_dir")
            if problem is not None:
                raise DownloadError(problem, local_path=folder)
        books.journal = await open_journal(options.get("journal"))
        workers = self._workers = Workers(
            books,
            self._client,
            self._planner,
            config,
            has_slot=self._has_slot,
            folder=folder,
            file_stem=options.get("file_stem"),
            owner=self,
        )
        stats = self._client.limiter.statistics()
        self._limiter_base = (stats.permits_granted, stats.rate_limited_responses)
        caller_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                books.tg = tg
                workers.start()
                try:
                    yield self
                except anyio.get_cancelled_exc_class():
                    raise  # the task group knows whether it was its own (cancel(), a fatal error)
                except BaseException as exc:  # the caller's: raised as is, not in a group
                    caller_error = exc
                else:
                    if not books.halted:  # a normal exit waits for every job
                        self.close_input()
                        await books.wait_for(books.drained)
                tg.cancel_scope.cancel()
        finally:
            workers.close()
            if books.journal is not None and books.journal is not options.get("journal"):
                with anyio.CancelScope(shield=True):
                    await books.close_journal()
        books.wrap_up()
        if caller_error is not None:
            raise caller_error

    def cancel(self) -> None:
        """Stop everything now; the block then exits (a journal resumes the jobs paid for)."""
        self._books.halt()

    def close_input(self) -> None:
        """Declare that no more jobs will be submitted: :meth:`results` ends after the last."""
        self._books.close_input()

    async def submit(
        self, request: GenerationRequest | JobSpec | str, *, key: str | None = None
    ) -> Job:
        """Queue one generation and return its :class:`Job` handle (waits only while the queue
        is full; the POST is sent in the background). Cancelled meanwhile, it sends nothing:
        the job ends with a ``NOT_SUBMITTED`` result (for ``on_event``) and its key is free.

        Raises:
            InvalidRequestError: If ``request`` is a prompt string that is not valid.
            ConfigurationError: If ``key`` is already used by a job that has not finished.
            SchedulerClosedError: If the scheduler is not running or its input was closed.
        """
        if isinstance(request, JobSpec):
            key, request = request.key if key is None else key, request.request
        elif isinstance(request, str):
            request = GenerationRequest(prompt=request)
        elif not isinstance(request, GenerationRequest):
            raise TypeError(
                "submit() takes a GenerationRequest, a JobSpec or a prompt string, "
                f"got {type(request).__name__}"
            )
        books, workers = self._books, self._workers
        if workers is None or books.input_closed:
            raise SchedulerClosedError(
                "the scheduler is not accepting jobs (not started, or closed)"
            )
        derived = key is None
        key = self._key_for(request) if key is None else key
        if key in books.jobs:
            raise ConfigurationError(f"a job with key {key!r} is already running")
        job = JobRecord(key, request, books.tally, durations=self._planner.model)
        books.jobs[key] = job
        books.emit(JobQueued(key=key, at=anyio.current_time()))
        try:
            await workers.queue.send(job)
        except BaseException:
            # Cancelled (its caller went away) or closed: the caller gets no handle, so the
            # job must not run. anyio's send() raises a cancellation that came while it waited
            # even when a submitter took the job meanwhile: withdrawn, it is not sent either way.
            with anyio.CancelScope(shield=True):
                await workers.withdraw(job)
            if derived:  # its number too: a retry is the same copy a rerun finds in the journal
                self._unkey(request, key)
            raise
        return job.handle

    def _key_for(self, request: GenerationRequest) -> str:
        """With a journal, the same key on every run (repeats numbered in input order); else
        unique among running jobs, so nothing grows with the input."""
        occurrence = 0
        if self._books.journal is not None:
            digest = _digest(request)
            occurrence = self._repeats[digest]
            self._repeats[digest] += 1
        else:
            while request_key(request, occurrence) in self._books.jobs:
                occurrence += 1
        return request_key(request, occurrence)

    def _unkey(self, request: GenerationRequest, key: str) -> None:
        """Give back ``key``, the last number :meth:`_key_for` gave ``request`` (not if a later
        copy took the next one meanwhile: the numbers then follow the order of submission)."""
        digest = _digest(request)
        if self._repeats[digest] and request_key(request, self._repeats[digest] - 1) == key:
            self._repeats[digest] -= 1

    def feed(self, items: Iterable[Any] | AsyncIterable[Any], *, strict: bool = False) -> None:
        """Submit every item of ``items`` in the background, read lazily, then close the input.

        An invalid item becomes a failed result with an :class:`InvalidRequestError` whose
        ``item`` is its 1-based position; with ``strict=True`` (and on an error raised by
        ``items``) the batch stops instead, raising the error when the block exits once the
        jobs submitted were polled to their end.
        """
        assert self._workers is not None, "feed() needs a running scheduler"
        self._books.start(self._feed, items, strict)

    async def _feed(self, items: Iterable[Any] | AsyncIterable[Any], strict: bool) -> None:
        books, position = self._books, 0
        try:
            async for item in _as_async(items):
                position += 1
                try:
                    await self.submit(item)
                except SchedulerClosedError:
                    return  # stopped (cancel(), a fatal error): read no further
                except (InvalidRequestError, ConfigurationError, TypeError) as exc:
                    problems = exc.problems if isinstance(exc, InvalidRequestError) else (str(exc),)
                    error = InvalidRequestError(
                        f"input item {position}: {exc}", problems=problems, item=position
                    )
                    if strict:
                        books.stop(error, drain=True)
                        return
                    key = f"invalid-{position}"
                    if isinstance(item, JobSpec):
                        request, key = item.request, item.key or key
                    elif isinstance(item, GenerationRequest):
                        request = item
                    else:  # what was asked for, unvalidated, so the result can say it
                        prompt = item if isinstance(item, str) else repr(item)
                        request = GenerationRequest.model_construct(prompt=prompt)
                    job = JobRecord(key, request, books.tally)
                    books.emit(JobQueued(key=key, at=anyio.current_time()))
                    failure = FailureClass.INVALID_INPUT
                    await books.finish(job, error=error, failure_class=failure, record=False)
        except Exception as exc:  # the input itself failed: what was paid for is seen through
            books.stop(exc, drain=True)
            return
        self.close_input()

    def results(self) -> JobResults:
        """Each :class:`JobResult` as its job finishes from this call on, until the input is
        closed and every job finished (submissions pause while ``results_buffer`` wait
        unread): call it before submitting to miss none."""
        return JobResults(self)

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot of the scheduler's counters."""
        now = anyio.current_time()
        limiter = self._client.limiter.statistics()
        limit, tally, budget = self._planner.limit, self._books.tally, self._books.budget
        span = limit.period / 4  # steady: short spans make a few quick requests look like a burst
        return SchedulerStatistics(
            queued=tally[JobState.QUEUED],
            submitting=tally[JobState.SUBMITTING],
            in_flight=tally[JobState.RUNNING],
            completed=tally[JobState.COMPLETED],
            failed=tally[JobState.FAILED],
            submissions=self._workers.submissions if self._workers else 0,
            polls=self._workers.polls if self._workers else 0,
            requests_sent=limiter.permits_granted - self._limiter_base[0],
            rate_limited=limiter.rate_limited_responses - self._limiter_base[1],
            credits_consumed=budget.spent,
            credits_uncertain=budget.uncertain,
            requests_per_minute=self._planner.requests_since(now - span) * 60.0 / span,
            limit_per_minute=limit.requests * 60.0 / limit.period,
            max_in_flight=self._current_cap(),
            predicted_duration=self._planner.model.median,
            breaker=self._books.breaker.snapshot(),
            at_risk_held=self._planner.cap_holding,
        )

    @property
    def budget(self) -> CreditBudget:
        """The credit budget (read-only): ``spent``, ``committed``, ``can_afford(n)``."""
        return self._books.budget

    @property
    def duration_model(self) -> DurationModel:
        """How long videos take, learnt as jobs complete: what ``Job.progress`` uses."""
        return self._planner.model

    def _current_cap(self) -> int:
        """By default eight times Little's law: a saturated quota never idles for lack of work."""
        if self._config.max_in_flight is not None:
            return self._config.max_in_flight
        planner = self._planner
        in_flight = planner.model.mean + planner.policy.wait_initial
        return max(2, math.ceil(8.0 * (planner.limit.per_second / REQUESTS_PER_JOB) * in_flight))

    def _has_slot(self) -> bool:
        books = self._books
        busy = books.tally[JobState.SUBMITTING] + books.tally[JobState.RUNNING]
        backlog_full = books.streaming and len(books.backlog) >= self._config.results_buffer
        return busy < self._current_cap() and not backlog_full


@asynccontextmanager
async def generate_many(
    client: SchedulerClient,
    items: Iterable[GenerationRequest | JobSpec | str]
    | AsyncIterable[GenerationRequest | JobSpec | str],
    config: SchedulerConfig | None = None,
    *,
    strict: bool = False,
    on_progress: ProgressHook | None = None,
    **options: Unpack[SchedulerOptions],
) -> AsyncIterator[JobResults]:
    """Run ``items`` through a :class:`JobScheduler`, streaming their results."""
    reporter = None
    if on_progress is not None:
        reporter = _Reporter(on_progress, options.get("on_event"))
        options["on_event"] = reporter.observe
    scheduler = JobScheduler(client, config, **options)
    results = scheduler.results()
    async with scheduler, anyio.create_task_group() as group:
        scheduler.feed(items, strict=strict)
        if reporter is not None:
            reporter.jobs = scheduler._books.jobs
            # Once a second for 30 s generations; faster on a faster server.
            group.start_soon(reporter.run, client.settings.expected_duration / 30)
        try:
            yield results
        finally:
            await results.aclose()
            scheduler.cancel()
            group.cancel_scope.cancel()


class JobResults(AsyncIterator[JobResult]):
    """Each :class:`JobResult` as its job finishes (what ``generate_many`` yields and
    ``JobScheduler.results()`` returns), and the batch's :meth:`statistics` meanwhile.

    Example:
        >>> async with client.generate_many(jobs) as results:  # doctest: +SKIP
        ...     async for result in results:
        ...         done = results.statistics().completed
    """

    def __init__(self, scheduler: JobScheduler) -> None:
        self._scheduler, self._closed = scheduler, False
        scheduler._books.streaming = True

    async def __anext__(self) -> JobResult:
        books = self._scheduler._books
        if not self._closed:
            await books.wait_for(lambda: bool(books.backlog) or books.drained())
        if self._closed or not books.backlog:
            raise StopAsyncIteration
        result = books.backlog.popleft()
        books.notify()
        return result

    async def aclose(self) -> None:
        """Stop the stream (leaving the ``generate_many`` block does it too)."""
        self._closed = True

    def statistics(self) -> SchedulerStatistics:
        """A frozen snapshot of the batch's counters (:class:`SchedulerStatistics`)."""
        return self._scheduler.statistics()


class _Reporter:
    """Calls ``on_progress`` with each running job's ``Job.progress`` when it moves (None if
    resumed: age unknown), and 1 at its end."""

    def __init__(self, hook: ProgressHook, on_event: Callable[[JobEvent], None] | None) -> None:
        self._hook, self._on_event = hook, on_event
        self._shown: dict[str, float | None] = {}  # running jobs: the value last reported
        self.jobs: dict[str, JobRecord] = {}  # the scheduler's unfinished jobs

    def observe(self, event: JobEvent) -> None:
        if isinstance(event, (JobSubmitted, JobResumed)) and event.key in self.jobs:
            self._shown[event.key] = value = self.jobs[event.key].handle.progress
            report_progress(self._hook, event.key, value)
        elif isinstance(event, JobFinished):
            self._shown.pop(event.key, None)
            report_progress(self._hook, event.key, 1.0)
        if self._on_event is not None:
            self._on_event(event)

    async def run(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            for key, shown in list(self._shown.items()):
                job = self.jobs.get(key)
                value = None if job is None else job.handle.progress
                if value is not None and value != shown:
                    self._shown[key] = value
                    report_progress(self._hook, key, value)


async def _as_async(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _digest(request: GenerationRequest) -> int:
    """What :attr:`JobScheduler._repeats` counts copies of ``request`` by (an int: a batch of
    a million distinct prompts keeps a million of them)."""
    return int(request_key(request).removeprefix("req-"), 16)
