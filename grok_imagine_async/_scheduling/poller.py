"""The scheduler's pollers: running jobs looked at when the duration model says they are done.

One *dispatcher* keeps every running job in a :class:`DueQueue` ordered by its next poll time
(one timer for 5,000 jobs, not 5,000 sleeping coroutines) and hands due jobs to the *pollers*,
which read the task's status and either finish the job, resubmit it, or put it back in the
heap at the time the :class:`PollPlanner` gives.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from .._errors import APIError, AuthenticationError, NotFoundError, TaskFailedError
from .._limiting.protocol import Priority
from .._models import FailureClass, TaskStatus
from .._observe import job_scope
from .api import SchedulerClient
from .books import Books
from .downloading import Downloader
from .due import DueQueue
from .jobs import JobResubmitting
from .polling import PollPlanner
from .record import JobRecord
from .submitting import Submitter

_NOT_FOUND_LIMIT = 3  # 404s in a row before a task is taken for gone
# Error answers in a row (after the client's own retries) before a job ends as a failed result
# carrying its task id: a broken or hostile server must not keep a job polling forever.
_UNREADABLE_LIMIT = 10


class Poller:
    """Polls running jobs; see the module docstring.

    Args:
        books: The scheduler's shared books.
        client: Reads the statuses.
        planner: When to look at a job next (and what the duration model learned).
        priority: The polls' place in the rate limiter's queue.
        resubmit: How many times one job may be resubmitted.
        resubmit_on: Failure classes worth a resubmission.
        submitter: Sends the resubmissions.
        downloads: The downloaders, if the scheduler downloads.
        owner: The scheduler, which telemetry names the jobs' scope after.
    """

    def __init__(
        self,
        books: Books,
        client: SchedulerClient,
        planner: PollPlanner,
        *,
        priority: Priority,
        resubmit: int,
        resubmit_on: Iterable[FailureClass],
        submitter: Submitter,
        downloads: Downloader | None,
        owner: object,
    ) -> None:
        self._books = books
        self._owner = owner  # the scheduler, as telemetry knows it
        self._client = client
        self._planner = planner
        self._priority = priority
        self._resubmit = resubmit
        self._resubmit_on = frozenset(resubmit_on)
        self._submitter = submitter
        self._downloads = downloads
        self._due: DueQueue[JobRecord] = DueQueue()
        self._send, self._recv = anyio.create_memory_object_stream[JobRecord](0)
        self.polls = 0
        """Status polls sent."""

    def watch(self, job: JobRecord, now: float, resumed: bool) -> None:
        """Start polling ``job``, whose task exists: at once if ``resumed`` (its age is
        unknown), else when the planner expects it done."""
        if resumed:
            self._schedule(job, now)
            return
        self._planner.submitted(job.key)
        self._schedule(job, self._next_look(job, now))
        self._replan(now)

    async def dispatch(self) -> None:
        """The dispatcher: hand each job to a poller when its poll is due."""
        while True:
            await self._send.send(await self._due.next_due(early=self._early))

    def _early(self, job: JobRecord, now: float) -> bool:
        return self._planner.worth_early(
            job.key, now=now, submitted_at=job.submitted_at, last_look=job.last_look
        )

    async def run(self) -> None:
        """One poller: poll due jobs until the scheduler stops."""
        async for job in self._recv:
            await self._books.for_job(job, self._poll_once(job))

    def close(self) -> None:
        """Close the hand-over stream."""
        self._send.close()
        self._recv.close()

    async def _poll_once(self, job: JobRecord) -> None:
        books = self._books
        assert job.task_id is not None
        self.polls += 1
        job.polled()
        planner = self._planner
        planner.note_request(anyio.current_time(), poll=True)
        # The early probes (how long do jobs take?) wait behind submissions like any poll when
        # submissions go first: while submissions fill the quota no poll could use what a probe
        # learns, and a probe sent ahead of one delays a job's start. In a batch that needs
        # exactly whole windows, a few such delays cost a whole window (issue 12: 1.35x the
        # window bound at 3 s jobs). The first polls sent once the quota frees are the probes'.
        priority = self._priority
        try:
            with job_scope(self._client.telemetry, self._owner, job.key):
                task = await self._client.get_task(job.task_id, priority=priority)
        except NotFoundError as exc:
            await self._failed_look(job, exc, in_a_row=job.missing(), limit=_NOT_FOUND_LIMIT)
            return
        except AuthenticationError:
            raise
        except APIError as exc:  # the task exists and is paid for: keep looking, a little later
            in_a_row = job.unreadable_answer()
            await self._failed_look(job, exc, in_a_row=in_a_row, limit=_UNREADABLE_LIMIT)
            return
        now = anyio.current_time()
        planner.looked(
            job.key,
            now=now,
            submitted_at=job.submitted_at,
            last_look=job.last_look,
            finished=task.is_terminal,
            completed=task.status is TaskStatus.COMPLETED,
        )
        self._replan(now)
        if not task.is_terminal:
            self._reschedule(job, looked_at=now)
            return
        if task.succeeded:
            if self._downloads is not None:
                await self._downloads.queue(job, task)
            else:
                await books.finish(job, task=task)
            return
        failure = task.failure_class or FailureClass.UNKNOWN
        if failure in self._resubmit_on and job.resubmits < self._resubmit:
            job.resubmitting()
            books.emit(JobResubmitting(key=job.key, at=now, failure_class=failure))
            books.start(self._resend, job)  # the POST waits for its permit, not this poller
            return
        await books.finish(job, task=task, error=TaskFailedError(task), failure_class=failure)

    async def _resend(self, job: JobRecord) -> None:
        await self._books.for_job(job, self._submitter.send(job))

    def _schedule(self, job: JobRecord, when: float) -> None:
        self._due.schedule(job, when)

    def _reschedule(self, job: JobRecord, *, looked_at: float | None = None) -> None:
        now = anyio.current_time()
        if looked_at is not None:
            job.looked(at=looked_at)
            self._schedule(job, self._next_look(job, now))
        else:  # the look failed: try again no sooner than the shortest gap
            self._schedule(job, self._next_look(job, now, now + self._planner.policy.wait_initial))

    async def _failed_look(
        self, job: JobRecord, error: APIError, *, in_a_row: int, limit: int
    ) -> None:
        """A look that learned nothing: end the job after ``limit`` in a row, else look later."""
        if in_a_row < limit:
            self._reschedule(job)
            return
        self._planner.gone(job.key, submitted_at=job.submitted_at, last_look=job.last_look)
        await self._books.finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR)

    def _next_look(self, job: JobRecord, now: float, earliest: float | None = None) -> float:
        return self._planner.next_look(
            job.key,
            now=now,
            submitted_at=job.submitted_at,
            last_look=job.last_look,
            polls=job.polls,
            earliest=earliest,
        )

    def _replan(self, now: float) -> None:
        """Move the looks already queued when the duration model changed its mind."""
        if self._planner.replan_needed(now):
            self._due.reschedule_all(
                lambda job, due: due if job.submitted_at is None else self._next_look(job, now)
            )
