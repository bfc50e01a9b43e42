"""The jobs of an app by id, followed through the store's change messages alike whether this
worker or another runs them, and a job's life as Server-Sent Events."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus
from starlette.responses import StreamingResponse

from .._errors import (
    BudgetExceededError,
    ConfigurationError,
    GrokImagineError,
    JobTakenOver,
    JournalError,
    SchedulerClosedError,
)
from .._limiting.protocol import RateLimiter
from .._models import FailureClass, GenerationRequest
from .._scheduling.breaker import BreakerState
from .._scheduling.jobs import (
    Job,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    JobStore,
    StoredJob,
    StoreState,
    Tally,
)
from .._scheduling.resume import recorded_result
from .._scheduling.scheduler import JobScheduler, queue_wait
from ._errors import BacklogFullError, ProviderDownError, http_error_for, logger

DEFAULT_MAX_JOBS = 10_000
"""Finished jobs a :class:`JobRegistry` remembers (a few kB each)."""
DEFAULT_MAX_QUEUED = 256
"""Jobs allowed to wait for a submission slot before new ones are refused (HTTP 429)."""
STALL_PERIODS = 2.0  # quota periods without a permit before the limiter counts as stalled
UNKNOWN_TTL = 1.0  # seconds an id found in no store is answered "unknown" without asking again
_UNKNOWN_KEPT = 10_000

_STATES = {
    StoreState.INTENT: JobState.SUBMITTING,
    StoreState.SUBMITTED: JobState.RUNNING,
    StoreState.COMPLETED: JobState.COMPLETED,
    StoreState.FAILED: JobState.FAILED,
}
_RANK = {JobState.QUEUED: 0, JobState.SUBMITTING: 1, JobState.RUNNING: 2}
# What SharedStore.register raises having written nothing.
_NOT_REGISTERED = (BudgetExceededError, ConfigurationError, JournalError)


@runtime_checkable
class SharedStore(Protocol):
    """A store shared by workers (``RedisJobStore``): registers a job, reserving its credits,
    and hands over the jobs of workers whose lease lapsed."""

    async def register(self, key: str, request: GenerationRequest, *, reserve: bool) -> None: ...
    async def adopt_orphans(self) -> list[StoredJob]: ...
    async def give_up_lease(self) -> None: ...
    @property
    def available(self) -> bool: ...
    @property
    def lease(self) -> float: ...


_PROBLEMS = {
    "stopped": "the video scheduler stopped",
    "down": "the video service fails systematically: new jobs are refused until it recovers",
    "unreachable": "the video service cannot be reached: every recent attempt failed to connect",
    "refusing": "the video service refused every recent job: new jobs are not started",
    "unavailable": "the shared job store is unavailable",
    "stalled": "the rate limiter grants no permit while requests wait",
}


@dataclass(frozen=True, slots=True)
class Health:
    """What a worker's ``/healthz`` tells (:meth:`JobRegistry.health`); see the FastAPI guide.

    Attributes:
        serving: False once its scheduler stopped: only a restart helps.
        store: ``"unavailable"`` while the shared job store cannot be used.
        provider: What the breaker says of the video service.
        limiter: ``"stalled"`` while requests waited over two quota periods with no permit.
    """

    serving: bool
    store: Literal["ok", "unavailable"] = "ok"
    provider: Literal["up", "down", "unreachable", "refusing"] = "up"
    limiter: Literal["ok", "stalled"] = "ok"

    @property
    def detail(self) -> str:
        """One line saying what is wrong ("ok" when nothing is)."""
        found = ("ok" if self.serving else "stopped", self.provider, self.store, self.limiter)
        return "; ".join(_PROBLEMS[p] for p in found if p in _PROBLEMS) or "ok"


_UNCOUNTED = Tally(lambda: None)  # the registry counts nothing by state


@dataclass(slots=True, eq=False, repr=False)
class _Tracked(JobRecord):
    """One job as the store's messages tell it; its result is the scheduler's own (its error
    as raised) when this worker runs it."""

    local: Job | None = field(default=None, init=False)  # the scheduler's, if run here
    changed: anyio.Event | None = field(default=None, init=False)  # made by the first waiter
    # Why no change will come here (the registry stopped, or dropped this entry); None: one may.
    closed: str | None = field(default=None, init=False)

    @property
    def here(self) -> Job | None:
        """The scheduler's job while this worker runs it; None once another worker adopted it
        (its lease ran out before the POST): the store alone tells that job's life then."""
        ended = self.local and self.local.result
        return None if ended and isinstance(ended.error, JobTakenOver) else self.local

    @property
    def result(self) -> JobResult | None:
        here = self.here
        return ((here and here.result) or self._result) if self.state.is_final else None

    async def wait_finished(self) -> JobResult:
        while (result := self.result) is None:
            await self.wait_changed()
        return result

    async def wait_changed(self) -> None:
        if self.closed is not None:
            raise SchedulerClosedError(self.closed)
        if self.changed is None:
            self.changed = anyio.Event()
        await self.changed.wait()

    def wake(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def update(self, stored: StoredJob, *, max_credits: int | None, live: bool = True) -> bool:
        """Move to what the store says, never back (fewer attempts, or an earlier state of the
        same attempt, is a late message); True if it moved. ``live``: a change as it happens."""
        record = stored.record
        if self.state.is_final or record is None:
            return False
        state, now = _STATES[record.state], (self.attempts, _RANK[self.state])
        if not state.is_final and (record.attempts, _RANK[state]) <= now:
            return False
        self.task_id, self.attempts = record.task_id, record.attempts
        if state is JobState.RUNNING:  # its age, unless found running already
            self.submitted_at = anyio.current_time() if live else None
        if state.is_final:
            self._result = recorded_result(record, self.request, at=anyio.current_time())
            if record.failure_class is FailureClass.BUDGET_EXCEEDED:  # a 402, not a bare failure
                spent = max_credits if max_credits is not None else record.credits
                error = BudgetExceededError(max_credits=spent, committed_credits=spent)
                self._result = replace(self._result, error=error)
        self.mirrored(state)
        return True


class JobRegistry:
    """Jobs of an app, by id, with change notification, from every worker sharing its store.

    Made by :func:`~grok_imagine_async.fastapi.grok_imagine_lifespan`, handed to handlers by
    ``GrokJobs``. Ids are random: a caller cannot guess another's job.

    Args:
        store: The app's job store (the scheduler's journal): in memory, SQLite or Redis.
        max_jobs: Finished jobs to remember; beyond it the least recently used are forgotten
            (:meth:`get` then finds them only in a durable store).
        max_queued: Jobs allowed to wait for a submission slot; :meth:`submit` refuses more.
        max_credits: The budget a shared store enforces (for the 402 of a job it refused).
        forget_finished: Drop forgotten jobs from the store too (a store in memory).
        limiter: The client's rate limiter, whose stalls :meth:`health` reports.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_credits: int | None = None,
        forget_finished: bool = False,
        limiter: RateLimiter | None = None,
    ) -> None:
        if max_jobs < 1 or max_queued < 1:
            raise ConfigurationError("max_jobs and max_queued must be >= 1")
        self._store, self._limiter, self._forget_finished = store, limiter, forget_finished
        self._shared = store if isinstance(store, SharedStore) else None
        self._max_jobs, self._max_queued, self._max_credits = max_jobs, max_queued, max_credits
        self._forgotten: list[str] = []  # to drop from the store at the next submission
        self._entries: OrderedDict[str, _Tracked] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()  # id -> clock time it expires
        self._lookups: dict[str, anyio.Lock] = {}  # one per id being looked up
        self._scheduler: JobScheduler | None = None
        self._closing = anyio.Event()
        self._stale = False  # the store may have missed changes: re-read the others' jobs
        self._remove_listener = store.subscribe(self._on_change)

    def close(self) -> None:
        """Stop: refuse new jobs, and wake every waiter with :class:`SchedulerClosedError`."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._remove_listener()
        for tracked in self._entries.values():
            tracked.closed = "the video scheduler stopped before the job finished"
            tracked.wake()

    @property
    def closed(self) -> bool:
        """True once the scheduler stopped (shutdown, or a fatal error)."""
        return self._closing.is_set()

    def __len__(self) -> int:
        return len(self._entries)

    def health(self) -> Health:
        """Whether this worker can run jobs, and what ails the service, store or limiter."""
        breaker = self._scheduler.statistics().breaker if self._scheduler is not None else None
        provider: Literal["up", "down", "unreachable", "refusing"] = "up"
        if breaker is not None and breaker.state is BreakerState.PAUSED:
            provider = "down"
        elif breaker is not None and breaker.state is BreakerState.STOPPED:
            provider = "unreachable" if breaker.reason == "unreachable" else "refusing"
        stats = self._limiter.statistics() if self._limiter is not None else None
        stalled = stats is not None and stats.stalled_for > STALL_PERIODS * stats.limit.period
        return Health(
            serving=not self.closed and provider in ("up", "down"),
            store="ok" if self._shared is None or self._shared.available else "unavailable",
            provider=provider,
            limiter="stalled" if stalled else "ok",
        )

    async def submit(self, request: GenerationRequest | str) -> Job:
        """Start a job for ``request``; return its handle (``job.key``: its new id) once queued.

        A shared store records it first and reserves its credits for every worker atomically.

        Raises:
            InvalidRequestError: If ``request`` is a prompt string that is not valid.
            BudgetExceededError: If the credit budget cannot pay for one more job.
            BacklogFullError: If ``max_queued`` jobs already wait to be submitted.
            ProviderDownError: If the breaker holds new jobs back (the video service fails).
            SchedulerClosedError: If the scheduler no longer runs.
            JournalError: If a shared store refuses (not an outage: writes then wait).
        """
        scheduler = self._running()
        stats = scheduler.statistics()
        if stats.queued >= self._max_queued:
            wait = queue_wait(stats.queued, requests_per_second=stats.limit_per_minute / 60.0)
            raise BacklogFullError(queued=stats.queued, retry_after=math.ceil(wait))
        # Refused unless the breaker would send it; paused, one job may wait to be the probe
        # (else the app would never learn that the service came back).
        breaker = stats.breaker
        probe = breaker.state is BreakerState.PAUSED and stats.queued + stats.submitting == 0
        if breaker.state is not BreakerState.RUNNING and not probe:
            due = breaker.next_probe_at
            retry = None if due is None else max(1.0, due - anyio.current_time())
            raise ProviderDownError(reason=breaker.reason or "outage", retry_after=retry)
        if isinstance(request, str):
            request = GenerationRequest(prompt=request)
        key = uuid.uuid4().hex
        try:
            if self._shared is not None:
                await self._shared.register(key, request, reserve=self._max_credits is not None)
            # Queued jobs will each cost a generation (those being sent are held already).
            elif not (budget := scheduler.budget).can_afford(stats.queued + 1):
                assert budget.max_credits is not None
                raise BudgetExceededError(
                    max_credits=budget.max_credits, committed_credits=budget.committed
                )
            # Tracked before submitting, so no message of the new job can arrive unseen.
            tracked = self._track(key, request)
            while self._forgotten:
                await self._store.forget(self._forgotten.pop())
            tracked.local = await self._running().submit(JobSpec(request, key))
        except BaseException as exc:
            self._entries.pop(key, None)
            # Registered (or maybe, if cancelled meanwhile) but never queued: its caller gets
            # an error and no id, so no worker may run it once this one gives up its lease.
            if self._shared is not None and not isinstance(exc, _NOT_REGISTERED):
                await self._withdraw(key, request)
            raise
        return tracked.handle

    async def _withdraw(self, key: str, request: GenerationRequest) -> None:
        """End ``key``, registered in the shared store and never queued, as a POST refused
        outright: finished, nobody adopts it; its reserved credits go back, in the one write."""
        never_sent = JobResult(
            key=key,
            request=request,
            task=None,
            error=SchedulerClosedError("never queued: the request submitting it failed"),
            failure_class=FailureClass.REQUEST_ERROR,
            attempts=0,
            credits=0,
            polls=0,
            submitted_at=None,
            finished_at=anyio.current_time(),
        )
        with anyio.CancelScope(shield=True):  # the request's task may be cancelled
            try:
                await self._store.record_finished(never_sent)
            except Exception as exc:  # the caller's error stays the one it gets
                logger.error("job %s, never queued, may be adopted and run: %s", key, exc)

    async def get(self, job_id: str) -> Job | None:
        """The job with id ``job_id``, run by this worker or another; None if unknown.

        A job whose worker stopped is adopted and resumed here (polled, never paid twice).

        Raises:
            SchedulerClosedError: If the job must be resumed but the scheduler no longer runs.
            JournalError: If the store cannot be read (Redis down) and no worker here knows it.
        """
        if (tracked := self._entries.get(job_id)) is not None:
            self._entries.move_to_end(job_id)
            return tracked.handle
        if self.closed or self._known_unknown(job_id):
            return None
        lock = self._lookups.setdefault(job_id, anyio.Lock())
        try:
            async with lock:  # two lookups of one id must not both resume it
                if (tracked := self._entries.get(job_id)) is not None:  # found meanwhile
                    return tracked.handle
                if self._known_unknown(job_id):
                    return None
                claim = await self._store.claim(job_id)
                if claim.job is not None:
                    return await self._take(claim.job, owned=claim.owned)
                self._unknown[job_id] = anyio.current_time() + UNKNOWN_TTL
                while len(self._unknown) > _UNKNOWN_KEPT:
                    self._unknown.popitem(last=False)
                return None
        finally:
            if not lock.statistics().tasks_waiting:
                self._lookups.pop(job_id, None)

    def _known_unknown(self, job_id: str) -> bool:
        return self._unknown.get(job_id, -math.inf) > anyio.current_time()

    async def wait_changed(self, job: Job, seen: JobState) -> JobState:
        """Wait until ``job`` is no longer in state ``seen``; return its new state (at once if
        it moved on already, also once forgotten here). Takes no timeout: use
        ``anyio.move_on_after``.

        Raises:
            SchedulerClosedError: If the scheduler stops first, or this worker stopped following
                ``job`` (its resume here was not queued): :meth:`get` it again, which claims it
                anew.
            KeyError: If ``job`` did not come from this registry.
        """
        tracked = self._entries.get(job.key)
        if tracked is None or tracked.handle is not job:
            # Dropped since it was handed out (see _take) or forgotten (finished, past
            # max_jobs): its handle still tells where it got to, and why nothing more will.
            dropped = job._record
            if not isinstance(dropped, _Tracked):
                raise KeyError(job.key)
            if job.status is not seen:
                return job.status
            if dropped.closed is not None:
                raise SchedulerClosedError(dropped.closed)
            raise KeyError(job.key)
        while tracked.state is seen:
            await tracked.wait_changed()
        return tracked.state

    async def wait_finished(self, job: Job) -> JobResult:
        """Wait until ``job`` finishes; return its result (a failure is a result too).

        Raises:
            SchedulerClosedError: If the scheduler stops first.
        """
        while not job.status.is_final:
            await self.wait_changed(job, job.status)
        assert job.result is not None
        return job.result

    async def run(
        self, scheduler: JobScheduler, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run ``scheduler`` (whose journal is this registry's store) and serve its jobs until
        its ``cancel()``. A fatal error once started is logged and closes the registry (new jobs
        get a 503); with a shared store, it adopts stopped workers' jobs and, at the end, gives
        up this worker's lease so that the others adopt its jobs at once."""
        try:
            async with scheduler:
                self._scheduler = scheduler
                task_status.started()
                await self._adopt_orphans()
                await anyio.sleep_forever()  # its cancel() ends it, as a fatal error does
        except Exception as exc:
            if self._scheduler is None:
                raise  # the app fails to start, as it should
            if isinstance(exc, GrokImagineError):  # never carries the token: safe to log
                logger.error("the video scheduler stopped, no more jobs can run: %s", exc)
            else:
                logger.exception("the video scheduler failed, no more jobs can run")
        finally:
            self.close()
            if self._shared is not None:
                await self._shared.give_up_lease()

    async def _adopt_orphans(self) -> None:
        store = self._shared
        while store is not None and not self.closed:
            try:
                adopted = await store.adopt_orphans()
            except JournalError as exc:  # refused (an ACL change): never fatal to the app
                logger.error("cannot adopt the jobs of stopped workers: %s", exc)
                adopted = []
            for stored in adopted:
                try:
                    await self._take(stored, owned=True)
                except SchedulerClosedError:
                    return  # stopping: another worker adopts it once the lease is given up
            if self._stale:
                self._stale = False
                await self._reread()
            with anyio.move_on_after(max(0.05, store.lease / 3)):
                await self._closing.wait()

    def _on_change(self, stored: StoredJob | None) -> None:
        if stored is None:
            self._stale = True
            return
        tracked = self._entries.get(stored.key)
        if tracked is not None and tracked.update(stored, max_credits=self._max_credits):
            tracked.wake()

    async def _reread(self) -> None:
        for key, tracked in list(self._entries.items()):
            if tracked.here is not None or tracked.state.is_final:
                continue
            try:
                record = await self._store.load(key)
            except JournalError:
                self._stale = True
                return
            if record is not None:
                self._on_change(StoredJob(key, tracked.request, record))

    def _running(self) -> JobScheduler:
        if self.closed or self._scheduler is None:
            raise SchedulerClosedError("the video scheduler is not running")
        return self._scheduler

    def _track(self, key: str, request: GenerationRequest) -> _Tracked:
        durations = self._scheduler.duration_model if self._scheduler is not None else None
        tracked = self._entries[key] = _Tracked(key, request, _UNCOUNTED, durations=durations)
        self._unknown.pop(key, None)
        excess = max(0, len(self._entries) - self._max_jobs)
        finished = (k for k, t in self._entries.items() if t.state.is_final)
        for old in list(itertools.islice(finished, excess)):  # least recently used first
            del self._entries[old]
            if self._forget_finished:
                self._forgotten.append(old)
        return tracked

    async def _take(self, stored: StoredJob, *, owned: bool) -> Job:
        """Follow ``stored`` (looked up or adopted); run it here if ``owned``, unless it is."""
        found = self._entries.get(stored.key)
        tracked = found or self._track(stored.key, stored.request)
        tracked.update(stored, max_credits=self._max_credits, live=False)
        if owned:
            try:
                with contextlib.suppress(ValueError):  # already run here
                    spec = JobSpec(tracked.request, tracked.key)
                    tracked.local = await self._running().submit(spec)
            except BaseException:
                # Not queued (the request cancelled while the queue was full, the scheduler
                # stopping): kept, the entry would answer every later lookup with a job nobody
                # runs until this worker gives up its lease. Dropped, the next get() claims it
                # again. A lookup that found it meanwhile is told, as at a stop: no change of
                # it will come here.
                if found is None and self._entries.get(stored.key) is tracked:
                    del self._entries[stored.key]
                    tracked.closed = (
                        f"this worker stopped following job {stored.key} (its resume here was "
                        "not queued): look it up again"
                    )
                    tracked.wake()
                raise
        return tracked.handle


HEARTBEAT = ": keep-alive\n\n"  # a comment clients ignore; it keeps proxies from closing
_NO_BREAK = str.maketrans("\r\n", "  ")  # a field's line break would end it


def sse_event(data: Any, *, event: str | None = None, event_id: str | None = None) -> str:
    """One Server-Sent Event whose ``data`` is ``data`` as compact JSON.

    Example:
        >>> sse_event({"status": "running"}, event="status")
        'event: status\\ndata: {"status":"running"}\\n\\n'
    """
    named = {"event": event, "id": event_id}
    lines = [f"{k}: {v.translate(_NO_BREAK)}" for k, v in named.items() if v is not None]
    # Compact JSON has no raw newline (they are escaped), so it is always one data line.
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(lines) + "\n\n"


async def _job_events(
    jobs: JobRegistry, job: Job, render: Callable[[Job], Mapping[str, Any]], heartbeat: float
) -> AsyncIterator[str]:
    seen: JobState | None = None
    count = 0
    try:
        while not (status := job.status).is_final:
            if status is not seen:
                seen = status
                yield sse_event(render(job), event="status", event_id=str(count))
            elif status is JobState.RUNNING:
                yield sse_event(render(job), event="progress", event_id=str(count))
            else:
                yield HEARTBEAT
            # No yield inside the cancel scope: the consumer may stop iterating at any yield.
            with anyio.move_on_after(heartbeat):
                await jobs.wait_changed(job, status)
            count += 1
    except SchedulerClosedError as exc:
        problem = http_error_for(exc)
        yield sse_event({"error": problem.code, "detail": problem.detail}, event="error")
        return
    yield sse_event(render(job), event="done", event_id=str(count + 1))


def event_stream_response(
    jobs: JobRegistry,
    job: Job,
    *,
    render: Callable[[Job], Mapping[str, Any]],
    heartbeat: float = 15.0,
) -> StreamingResponse:
    """A ``text/event-stream`` answer following ``job`` (from ``jobs``) until it finishes.

    Events: ``status`` on each change of state, ``progress`` every ``heartbeat`` seconds while
    it runs, then one ``done`` (or one ``error`` if the app stops first, or if this worker
    stops following the job: its client should look it up again), each carrying
    ``render(job)`` as JSON; comment lines keep an idle stream open through proxies.
    """
    if not heartbeat > 0:  # NaN refused too
        raise ConfigurationError(f"heartbeat must be positive seconds, got {heartbeat!r}")
    return StreamingResponse(
        _job_events(jobs, job, render, heartbeat),
        media_type="text/event-stream",
        # No caching, and no buffering by nginx-like proxies: events must arrive as sent.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
