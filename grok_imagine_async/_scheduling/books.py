"""The scheduler's shared books: its jobs, tally and credit budget; how a job or the run ends."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._errors import AuthenticationError, ConfigurationError, GrokImagineError, JournalError
from .._journal.memory import MemoryJobStore
from .._models import CREDITS_PER_GENERATION, FailureClass, Task
from .breaker import COURSE_META, Breaker, Course, Transition
from .jobs import (
    BreakerEvent,
    JobEvent,
    JobFinished,
    JobRecord,
    JobResult,
    JobStore,
    SchedulerHook,
    Tally,
)

logger = logging.getLogger("grok_imagine_async.scheduler")


class Reservation:
    """Credits held for one POST until committed or released: POSTs never overrun the budget."""

    def __init__(self, budget: CreditBudget, cost: int) -> None:
        self._budget, self._cost = budget, cost
        budget._held += cost

    def commit(self, *, certain: bool = True) -> None:
        """The POST created a task (``certain``) or may have (its answer was lost)."""
        if certain:
            self._budget._spent += self._cost
        else:
            self._budget._uncertain += self._cost
        self.release()

    def release(self) -> None:
        self._budget._held -= self._cost
        self._cost = 0  # settled: a second commit or release changes nothing


class CreditBudget:
    """Credits spent and held against an optional cap (``max_credits``)."""

    def __init__(self, max_credits: int | None = None) -> None:
        if max_credits is not None and max_credits < 0:
            raise ConfigurationError(f"max_credits must be >= 0, got {max_credits}")
        self.max_credits = max_credits
        self._spent = self._uncertain = self._held = 0

    @property
    def spent(self) -> int:
        """Credits spent: tasks created, plus POSTs whose outcome is unknown (maybe paid)."""
        return self._spent + self._uncertain

    @property
    def uncertain(self) -> int:
        """Of :attr:`spent`, the credits of POSTs whose answer was lost: maybe not charged."""
        return self._uncertain

    @property
    def committed(self) -> int:
        """Spent plus held for POSTs under way: what a new job must fit beside."""
        return self.spent + self._held

    def can_afford(self, jobs: int = 1, *, cost: int = CREDITS_PER_GENERATION) -> bool:
        """Whether ``jobs`` more generations fit beside what is committed."""
        if self.max_credits is None:
            return True
        return self.committed + jobs * cost <= self.max_credits

    def count(self, credits: int) -> None:
        """Count credits spent outside a POST: an earlier run's, or (negative) a refund."""
        self._spent += credits

    @contextmanager
    def reserve(self, cost: int = CREDITS_PER_GENERATION) -> Iterator[Reservation]:
        """Hold ``cost`` for one POST, released unless committed (check :meth:`can_afford`)."""
        reservation = Reservation(self, cost)
        try:
            yield reservation
        finally:
            reservation.release()


class Books:
    """What the scheduler's workers share. A job ends one way (:meth:`finish`); one job's
    trouble stays its own (:meth:`for_job`); a fatal error goes to :meth:`stop`. The run only
    moves forward: input open, closed, stopping (paid jobs polled to their end), halted."""

    def __init__(
        self, *, budget: CreditBudget, breaker: Breaker, on_event: SchedulerHook | None
    ) -> None:
        self.budget, self.breaker, self._on_event = budget, breaker, on_event
        self.jobs: dict[str, JobRecord] = {}  # accepted and not finished
        self.tally = Tally(self.notify)
        self.backlog: deque[JobResult] = deque()  # finished, not read yet (while streaming)
        self.streaming = False  # a results() reader buffers what finishes
        self.journal: JobStore | None = None
        self.input_closed = False
        self.fatal: BaseException | None = None  # the first fatal error, raised at exit
        self.halted = False  # stopped at once: paid jobs are left to the journal
        self.unrecorded: dict[str, str] = {}  # task ids a failed journal write did not keep
        self.course_id = uuid.uuid4().hex  # this scheduler, in the course it shares
        self.course_at = time.time()  # of the newest course taken: older ones are ignored
        self._changed = anyio.Event()
        self.tg: TaskGroup | None = None  # the scheduler's, where workers run

    def start(self, worker: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``worker(*args)``; what escapes it becomes the fatal error."""
        assert self.tg is not None
        self.tg.start_soon(self._guarded, worker, *args)

    async def _guarded(self, worker: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await worker(*args)
        except Exception as exc:
            self.stop(exc, drain=False)

    def notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def next_change(self, at_most: float = math.inf) -> None:
        with anyio.move_on_after(at_most):
            await self._changed.wait()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def emit(self, event: JobEvent) -> None:
        """Hand ``event`` to the caller's hook; a hook that raises is logged, not fatal."""
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a display's bug must not end a job, let alone the batch
            logger.exception("the on_event hook raised on %s", type(event).__name__)

    def course(self, key: str | None, transition: Transition, now: float) -> None:
        """The breaker changed course on job ``key``'s outcome (None: another process decided):
        tell the submitters, the log, the hook and the processes sharing the batch."""
        snapshot = self.breaker.snapshot()
        self.notify()
        level = logging.INFO if transition is Transition.PROBING else logging.WARNING
        why = snapshot.reason or "the provider answers again"
        who = "decided by another process sharing the batch" if key is None else f"job {key}"
        logger.log(level, "batch %s (%s; %s)", transition.value, why, who)
        self.emit(
            BreakerEvent(key=key or "", at=now, transition=transition.value, breaker=snapshot)
        )
        if key is not None and transition is not Transition.PROBING and self.journal is not None:
            course = self.breaker.course(at=time.time(), by=self.course_id, now=now)
            self.course_at = course.at
            self.start(self._publish, course)

    async def _publish(self, course: Course) -> None:
        assert self.journal is not None
        try:
            await self.journal.set_meta(COURSE_META, course.to_text())
        except Exception as exc:  # the other processes decide for themselves meanwhile
            logger.warning("could not share the batch's course (%s): %s", course.state, exc)

    async def follow_course(self, every: float, paused: Callable[[float], None]) -> None:
        """Take the course the processes sharing the journal decide (polled every ``every`` s);
        ``paused(now)`` once a pause is taken."""
        assert self.journal is not None
        while True:
            await anyio.sleep(every)
            try:
                course = Course.from_text(await self.journal.get_meta(COURSE_META))
            except Exception:  # a store down: each process decides alone meanwhile
                continue
            if course is None or course.by == self.course_id or course.at <= self.course_at:
                continue
            self.course_at = course.at
            now = anyio.current_time()
            transition = self.breaker.adopt(course, now, at=time.time())
            if transition is not None:
                self.course(None, transition, now)
            if transition is Transition.PAUSED:
                paused(now)

    def drained(self) -> bool:
        """Every job finished and no more will come, or the run halted."""
        return (self.input_closed and not self.jobs) or self.halted

    async def for_job(self, job: JobRecord, step: Awaitable[None]) -> None:
        """Run one step of one job; an error ends that job (a rejected token, the batch)."""
        try:
            await step
        except AuthenticationError:
            raise
        except Exception as exc:
            if job.result is not None:  # it ended; what failed came after
                logger.exception("error after job %s finished", job.key)
                return
            error = exc if isinstance(exc, GrokImagineError) else unexpected(exc)
            await self.finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR)

    async def finish(
        self,
        job: JobRecord,
        *,
        task: Task | None = None,
        error: GrokImagineError | None = None,
        failure_class: FailureClass | None = None,
        files: tuple[Path, ...] = (),
        record: bool = True,
    ) -> None:
        """End ``job`` with what this run learnt of it: see :meth:`conclude`."""
        result = JobResult(
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
            last_task_id=job.task_id,
        )
        await self.conclude(job, result, record=record)

    async def conclude(self, job: JobRecord, result: JobResult, *, record: bool = True) -> None:
        """End ``job`` with ``result``: record it (unless replayed: ``record``), announce it."""
        if record:
            await self.write(job, lambda store: store.record_finished(result), result.task_id)
        if self.jobs.get(job.key) is job:  # an invalid input item never entered
            del self.jobs[job.key]
        job.finished(result)
        if self.streaming:
            self.backlog.append(result)
        self.notify()
        self.emit(JobFinished(key=job.key, at=result.finished_at, result=result))
        if self.fatal is not None and not self.jobs and not self.streaming:
            self.halt()  # drained: end the block (a results() reader ends on its own)

    async def write(
        self,
        job: JobRecord,
        write: Callable[[JobStore], Awaitable[None]],
        task_id: str | None = None,
    ) -> None:
        """Write what ``job`` reached to the journal, if any, shielded; a failure stops the
        batch (``task_id``: a paid task the journal then does not know of)."""
        if self.journal is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await write(self.journal)
            except Exception as exc:
                if task_id is not None:
                    self.unrecorded[job.key] = task_id
                self.journal_failed(exc, job)

    def stop(self, exc: BaseException, *, drain: bool) -> None:
        """A fatal error: submit nothing more; with ``drain`` poll the paid jobs to their end
        first, else (a rejected token) halt now."""
        if self.fatal is None:  # the first one is the batch's
            self.fatal = exc
        if not drain or (not self.jobs and not self.streaming):
            self.halt()
        self.close_input()

    def close_input(self) -> None:
        self.input_closed = True
        self.notify()

    def halt(self) -> None:
        self.input_closed = self.halted = True
        if self.tg is not None:
            self.tg.cancel_scope.cancel()
        self.notify()

    def journal_failed(self, exc: Exception, job: JobRecord) -> None:
        """Stop the batch, polling what was paid for to its end."""
        assert self.journal is not None
        error = as_journal_error(exc, self.journal)
        level = logging.ERROR if self.fatal is None else logging.DEBUG  # once, not per job
        logger.log(level, "journal failed (job %s): %s", job.key, error)
        self.stop(error, drain=True)

    async def close_journal(self) -> None:
        """A failure to close becomes the fatal error if there was none."""
        assert self.journal is not None
        try:
            await self.journal.aclose()
        except Exception as exc:
            error = as_journal_error(exc, self.journal)
            if self.fatal is None:
                self.fatal = error
            logger.error("journal failed on closing: %s", error)

    def wrap_up(self) -> None:
        """Log every paid task whose end was not recorded; raise the fatal error with them."""
        pending = dict(self.unrecorded)
        pending.update((j.key, j.task_id) for j in self.jobs.values() if j.task_id is not None)
        fatal = self.fatal
        if fatal is not None and pending and isinstance(fatal, GrokImagineError):
            fatal.pending_tasks = pending
        if pending:
            why = "left early" if fatal is None else f"stopped by {type(fatal).__name__}: {fatal}"
            # A store in memory dies with the process: nothing resumes from it.
            durable = self.journal is not None and not isinstance(self.journal, MemoryJobStore)
            kept = durable and not self.unrecorded
            logger.log(
                logging.INFO if kept else logging.WARNING,
                "scheduler %s with %d paid jobs whose end is not recorded%s; their task ids: %s",
                why,
                len(pending),
                " (kept in the journal: they resume on the next run)" if kept else "",
                ", ".join(f"{key}={task_id}" for key, task_id in pending.items()),
            )
        if fatal is not None:
            raise fatal


def unexpected(exc: Exception) -> GrokImagineError:
    """A typed error for an exception of no known kind (a bug)."""
    error = GrokImagineError(f"unexpected {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def as_journal_error(exc: Exception, journal: JobStore) -> JournalError:
    if isinstance(exc, JournalError):
        return exc
    path = getattr(journal, "path", None)
    path = path if isinstance(path, Path) else None
    error = JournalError(f"the journal failed: {type(exc).__name__}: {exc}", path=path)
    error.__cause__ = exc
    return error
