"""The scheduler's record of one job: its fields, and the only ways they change.

The public :class:`~grok_imagine_async.Job` is a read-only view of a :class:`JobRecord`. Each
change of state goes through one method here, which keeps the :class:`Tally` in step.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from .._models import GenerationRequest, Task
from .durations import DurationModel
from .jobs import Job, JobResult, JobState


class Tally:
    """How many jobs are in each :class:`JobState`; changed only by :class:`JobRecord`."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._counts = dict.fromkeys(JobState, 0)
        self._on_change = on_change

    def __getitem__(self, state: JobState) -> int:
        return self._counts[state]

    def _move(self, old: JobState | None, new: JobState) -> None:
        if old is not None:
            self._counts[old] -= 1
        self._counts[new] += 1
        self._on_change()


class JobRecord:
    """One job's mutable state, as the scheduler's workers see it; ``handle`` is its view."""

    # A batch holds thousands of these: no instance dict, and no event until someone waits.
    __slots__ = (
        "_attempts",
        "_credits",
        "_done",
        "_result",
        "_state",
        "_tally",
        "_task_id",
        "durations",
        "finished_task",
        "handle",
        "key",
        "last_look",
        "not_found",
        "polls",
        "request",
        "resubmits",
        "sequence",
        "submitted_at",
        "unreadable",
    )

    def __init__(
        self,
        key: str,
        request: GenerationRequest,
        tally: Tally,
        *,
        durations: DurationModel | None = None,
    ) -> None:
        self.key = key
        self.request = request
        self._tally = tally
        self._state = JobState.QUEUED
        tally._move(None, JobState.QUEUED)
        self._task_id: str | None = None
        self._attempts = 0
        self._credits = 0
        self._result: JobResult | None = None
        self._done: anyio.Event | None = None
        self.resubmits = 0
        self.sequence: int | None = None  # the breaker's number of its last POST
        self.polls = 0
        self.not_found = 0
        self.unreadable = 0  # status answers in a row that could not be read
        self.submitted_at: float | None = None  # None: unknown (resumed) or not sent
        self.last_look = 0.0
        self.finished_task: Task | None = None  # completed, while its download is pending
        self.durations = durations  # what the handle's progress estimate reads
        self.handle = Job(self)

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def task_id(self) -> str | None:
        return self._task_id

    @property
    def attempts(self) -> int:
        """Submissions made, in this run and recorded earlier ones."""
        return self._attempts

    @property
    def credits(self) -> int:
        """Credits consumed (an ambiguous POST counts)."""
        return self._credits

    @property
    def result(self) -> JobResult | None:
        return self._result

    async def wait_finished(self) -> JobResult:
        """Wait for :meth:`finished` and return the result."""
        if self._result is None:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()
        assert self._result is not None
        return self._result

    # -- transitions -------------------------------------------------------------------------

    def adopted(self, *, attempts: int, credits: int) -> None:
        """Take over what an earlier run recorded of this job."""
        self._attempts, self._credits = attempts, credits

    def submitting(self) -> None:
        self._to(JobState.SUBMITTING)

    def resubmitting(self, *, counted: bool = True) -> None:
        """Its task failed in a way worth a new POST (``counted`` against its resubmissions
        unless an outage explains the failure)."""
        self.resubmits += counted
        self.submitting()

    def refunded(self, credits: int) -> None:
        self._credits -= credits

    def charged(self, attempt: int, cost: int) -> None:
        """The ``attempt``-th POST was (or may have been) paid ``cost`` credits."""
        self._attempts = attempt
        self._credits += cost

    def submitted(self, task_id: str, *, at: float) -> None:
        self._task_id, self.submitted_at, self.last_look = task_id, at, at
        self._to(JobState.RUNNING)

    def resumed(self, task_id: str) -> None:
        """An earlier run submitted ``task_id``; its age is unknown."""
        self._task_id, self.submitted_at = task_id, None
        self._to(JobState.RUNNING)

    def looked(self, *, at: float) -> None:
        """A poll found the task unfinished."""
        self.last_look = at
        self.unreadable = 0

    def succeeded(self, task: Task) -> None:
        """The task completed; its files are still to be downloaded."""
        self._task_id, self.finished_task = task.task_id, task

    def finished(self, result: JobResult) -> None:
        """The job ended with ``result``: wake whoever waits on it."""
        self._result = result
        self._to(JobState.COMPLETED if result.ok else JobState.FAILED)
        if self._done is not None:
            self._done.set()

    def mirrored(self, state: JobState) -> None:
        """Follow a state another process recorded of this job (a mirror of a shared store)."""
        self._to(state)

    def _to(self, state: JobState) -> None:
        self._tally._move(self._state, state)
        self._state = state
