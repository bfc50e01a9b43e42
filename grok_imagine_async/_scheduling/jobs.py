"""Jobs (one generation each, named by a key): records, handles, results, events, the store."""

from __future__ import annotations

import enum
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import anyio

from .._errors import GrokImagineError, TaskFailedError, WaitTimeoutError
from .._models import FailureClass, GenerationRequest, Task
from .._progress import Progress
from .breaker import BreakerSnapshot
from .durations import DurationModel


class JobState(str, enum.Enum):
    """Where a job is: queued, its POST being sent, its task polled (running), completed (with
    a video) or failed (see the result's ``failure_class``)."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """True for COMPLETED and FAILED."""
        return self in (JobState.COMPLETED, JobState.FAILED)


def request_digest(request: GenerationRequest) -> str:
    canonical = json.dumps(request.payload(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_key(request: GenerationRequest, occurrence: int = 0) -> str:
    """A stable key for a request; ``occurrence`` numbers its repeats in one input (from 0)."""
    digest = request_digest(request)[:16]
    return f"req-{digest}" if occurrence == 0 else f"req-{digest}-{occurrence}"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A request with the key it should be known by (e.g. an ``id`` from the input file).

    Args:
        request: What to generate.
        key: None derives one from the request: the same on every run with a journal.
    """

    request: GenerationRequest
    key: str | None = None


@dataclass(frozen=True, slots=True)
class JobResult:
    """How one job ended.

    Attributes:
        task: The final task (completed, or failed as the server reported it), if any.
        error: The error that ended the job, None if it completed.
        attempts: POSTs made for this job, in this run and earlier ones.
        credits: Credits it consumed (40 per task the server created).
        polls: Status polls spent on it in this run.
        submitted_at: Clock time of the last submission in this run, if any.
        finished_at: Clock time at which the result was known.
        files: Paths of downloaded videos, when the scheduler downloads.
        from_journal: Read from a journal, with no request sent.
        last_task_id: The last task created for it (read :attr:`task_id`).
    """

    key: str
    request: GenerationRequest
    task: Task | None
    error: GrokImagineError | None
    failure_class: FailureClass | None
    attempts: int
    credits: int
    polls: int
    submitted_at: float | None
    finished_at: float
    files: tuple[Path, ...] = ()
    from_journal: bool = False
    last_task_id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the job completed with a video."""
        return self.error is None and self.task is not None and self.task.succeeded

    @property
    def task_id(self) -> str | None:
        """The id of the last (paid) task created for this job, if any."""
        return self.task.task_id if self.task is not None else self.last_task_id

    @property
    def videos(self) -> tuple[str, ...]:
        """The video URLs (empty unless completed)."""
        return self.task.videos if self.task is not None and self.ok else ()

    def unwrap(self) -> Task:
        """The completed task; raises the error that ended the job otherwise."""
        if self.error is not None:
            raise self.error
        assert self.task is not None
        if not self.task.succeeded:
            raise TaskFailedError(self.task)
        return self.task


class Tally(Counter[JobState]):
    """How many jobs are in each :class:`JobState`; changed only by :class:`JobRecord`."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def _move(self, old: JobState | None, new: JobState) -> None:
        if old is not None:
            self[old] -= 1
        self[new] += 1
        self._on_change()


@dataclass(slots=True, eq=False, repr=False)
class JobRecord:
    """One job's mutable state, changed by the scheduler's workers; ``handle`` is its view
    (slotted, with no event until someone waits: a batch holds thousands)."""

    key: str
    request: GenerationRequest
    _tally: Tally
    _: KW_ONLY
    durations: DurationModel | None = None  # what the handle's progress estimate reads
    state: JobState = field(default=JobState.QUEUED, init=False)  # moved by _to(), with the tally
    task_id: str | None = field(default=None, init=False)
    attempts: int = field(default=0, init=False)
    credits: int = field(default=0, init=False)  # consumed (an ambiguous POST counts)
    _result: JobResult | None = field(default=None, init=False)
    _done: anyio.Event | None = field(default=None, init=False)
    resubmits: int = field(default=0, init=False)
    excused: int = field(default=0, init=False)  # resubmissions an outage explained (uncounted)
    waited: bool = field(default=False, init=False)  # its last failure waited for a pause
    withdrawn: bool = field(default=False, init=False)  # its submit() raised: never sent
    sequence: int | None = field(default=None, init=False)  # the breaker's number of its last POST
    polls: int = field(default=0, init=False)
    not_found: int = field(default=0, init=False)
    unreadable: int = field(default=0, init=False)  # answers in a row that could not be read
    submitted_at: float | None = field(default=None, init=False)  # None: unknown (resumed), unsent
    last_look: float = field(default=0.0, init=False)
    handle: Job = field(init=False)

    def __post_init__(self) -> None:
        self._tally._move(None, JobState.QUEUED)
        self.handle = Job(self)

    @property
    def result(self) -> JobResult | None:
        return self._result  # read-only: the FastAPI registry's mirror overrides it

    async def wait_finished(self) -> JobResult:
        if self._result is None:
            self._done = self._done or anyio.Event()  # made by the first waiter only
            await self._done.wait()
        assert self._result is not None
        return self._result

    def adopted(self, *, attempts: int, credits: int) -> None:
        self.attempts, self.credits = attempts, credits  # what an earlier run recorded

    def submitting(self) -> None:
        self._to(JobState.SUBMITTING)

    def resubmitting(self, *, counted: bool = True) -> None:
        """``counted``: against its resubmissions (not when an outage explains the failure)."""
        self.resubmits += counted
        self.excused += not counted
        self.submitting()

    def refunded(self, credits: int) -> None:
        self.credits -= credits

    def charged(self, attempt: int, cost: int) -> None:
        self.attempts = attempt
        self.credits += cost

    def submitted(self, task_id: str, *, at: float) -> None:
        self.task_id, self.submitted_at, self.last_look = task_id, at, at
        self._to(JobState.RUNNING)

    def resumed(self, task_id: str) -> None:
        self.task_id, self.submitted_at = task_id, None  # an earlier run's task: age unknown
        self._to(JobState.RUNNING)

    def looked(self, *, at: float) -> None:
        """A poll found the task unfinished."""
        self.last_look, self.unreadable = at, 0

    def succeeded(self, task: Task) -> None:
        self.task_id = task.task_id  # completed; its files are still to be downloaded

    def finished(self, result: JobResult) -> None:
        self._result = result
        self._to(JobState.COMPLETED if result.ok else JobState.FAILED)
        if self._done is not None:
            self._done.set()

    def _to(self, state: JobState) -> None:
        self._tally._move(self.state, state)
        self.state = state

    mirrored = _to  # follow a state another process recorded


class Job:
    """A read-only handle to one job of a :class:`JobScheduler`, from its ``submit()``."""

    __slots__ = ("_progress", "_record")

    def __init__(self, record: JobRecord) -> None:
        self._record = record
        self._progress = Progress()

    @property
    def key(self) -> str:
        return self._record.key

    @property
    def request(self) -> GenerationRequest:
        return self._record.request

    @property
    def status(self) -> JobState:
        return self._record.state

    @property
    def task_id(self) -> str | None:
        """The id of its current task, once submitted."""
        return self._record.task_id

    @property
    def attempts(self) -> int:
        """Submissions made so far."""
        return self._record.attempts

    @property
    def result(self) -> JobResult | None:
        """Its result once finished, else None."""
        return self._record.result

    @property
    def progress(self) -> float | None:
        """An estimate from 0 to 1 (the API reports none) that never goes back; None when
        its task's age is unknown (resumed, or run by another process)."""
        record = self._record
        if record.state.is_final:
            return self._progress.finished()
        if record.state is not JobState.RUNNING:
            return self._progress.value
        started, durations = record.submitted_at, record.durations
        if started is None or durations is None:
            return None
        return self._progress.running(anyio.current_time() - started, durations.median)

    async def wait(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (expiry must name the paid task)
    ) -> Task:
        """Wait for the job to finish and return its completed task.

        Args:
            timeout: Seconds to wait at most (None: as long as it runs); the job goes on.

        Raises:
            WaitTimeoutError: If ``timeout`` passed first (with the job's task id, if any).
            GrokImagineError: Why it failed (e.g. :class:`TaskFailedError`).
        """
        with anyio.move_on_after(timeout):
            return (await self._record.wait_finished()).unwrap()
        assert timeout is not None
        raise WaitTimeoutError(self.task_id, last_status=self.status, timeout=timeout)

    def __repr__(self) -> str:
        return f"Job(key={self.key!r}, status={self.status.value}, task_id={self.task_id!r})"


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    """A snapshot of a scheduler's progress (counts since it started; ``credits_consumed``
    also takes in what earlier runs spent on the jobs it took up from its journal).

    Attributes:
        in_flight: Jobs submitted and not finished (being polled).
        submissions: POSTs made (first submissions and resubmissions).
        requests_sent: Requests the limiter let through (retries too).
        rate_limited: HTTP 429 answers the limiter saw.
        credits_consumed: Credits of tasks created, and of POSTs whose answer was lost; with
            a journal, those of the earlier runs of each job taken up from it too (the count
            ``max_credits`` holds spending to).
        requests_per_minute: Requests sent over the last quarter of the quota period.
        predicted_duration: The learned median generation time, in seconds.
        credits_uncertain: Of ``credits_consumed``, those of lost answers: maybe not charged.
        breaker: Whether the batch submits, paused or stopped (see :class:`BreakerPolicy`).
        at_risk_held: ``BreakerPolicy.max_at_risk`` holds submissions back until a look at a
            canary shows the newest tasks working.
    """

    queued: int
    submitting: int
    in_flight: int
    completed: int
    failed: int
    submissions: int
    polls: int
    requests_sent: int
    rate_limited: int
    credits_consumed: int
    requests_per_minute: float
    limit_per_minute: float
    max_in_flight: int
    predicted_duration: float
    credits_uncertain: int = 0
    breaker: BreakerSnapshot = field(default_factory=BreakerSnapshot)
    at_risk_held: bool = False


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Base of the scheduler's events (to ``on_event``): about job ``key``, at clock time ``at``."""

    key: str
    at: float


@dataclass(frozen=True, slots=True)
class JobQueued(JobEvent):
    """A job was accepted by the scheduler."""


@dataclass(frozen=True, slots=True)
class JobSubmitted(JobEvent):
    """A submission created task ``task_id``; ``attempt`` is 1, then 2 for a resubmission..."""

    task_id: str = ""
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class JobResumed(JobEvent):
    """A job was taken up from the journal: its task ``task_id`` is polled (no new POST)."""

    task_id: str = ""


@dataclass(frozen=True, slots=True)
class JobResubmitting(JobEvent):
    """A task failed (why: ``failure_class``) in a way worth retrying: submitted again."""

    failure_class: FailureClass = FailureClass.TRANSIENT


@dataclass(frozen=True, slots=True)
class JobFinished(JobEvent):
    """A job ended (completed or failed) with ``result``."""

    result: JobResult | None = None


@dataclass(frozen=True, slots=True)
class BreakerEvent(JobEvent):
    """The batch changed course on a systematic failure (see :class:`BreakerPolicy`).

    Attributes:
        transition: ``"paused"`` (an outage or lost answers), ``"probing"`` (``key`` is the
            probe's job), ``"resumed"`` or ``"stopped"`` (systematic refusals, or a server
            never reached).
        breaker: The breaker's state after the change (``key``'s outcome decided it).
    """

    transition: str = "paused"
    breaker: BreakerSnapshot = field(default_factory=BreakerSnapshot)


class SchedulerHook(Protocol):
    """Receives every scheduler event, synchronously; must return quickly and not raise."""

    def __call__(self, event: JobEvent) -> None: ...


class StoreState(str, enum.Enum):
    """What the journal knows of a job: ``INTENT``, a POST about to leave (found at start-up,
    its outcome is unknown); ``SUBMITTED``, a task created; or finished."""

    INTENT = "intent"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"


FINAL_STATES = frozenset({StoreState.COMPLETED, StoreState.FAILED})  # replayed, not resumed


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """One job as recorded in a journal.

    Attributes:
        request: What was asked for (a long prompt may be cut short; the digest is whole).
        attempts: Submissions recorded (intents count: an unknown outcome may have cost).
        error: The failure message, once failed.
        request_digest: A digest of the request's payload (None: compute it from ``request``).
    """

    key: str
    request: GenerationRequest
    state: StoreState
    task_id: str | None = None
    attempts: int = 0
    credits: int = 0
    videos: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None
    failure_class: FailureClass | None = None
    request_digest: str | None = None


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as a journal holds it: its ``record`` (None while queued: nothing was sent), and
    the id of the process that owns it (``owner``, "" for a journal of one process)."""

    key: str
    request: GenerationRequest
    record: StoreRecord | None
    owner: str = ""

    @property
    def final(self) -> bool:
        return self.record is not None and self.record.state in FINAL_STATES


ClaimStatus = Literal["unknown", "created", "mine", "foreign", "adopted", "final", "reopened"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to :meth:`JobStore.claim`: the ``job`` as stored (None when unknown) and its
    ``status``: ``"unknown"``, ``"created"`` (now this process's), ``"mine"``, ``"adopted"``
    (its owner was gone), ``"foreign"`` (a live process owns it), ``"final"`` (finished) or
    ``"reopened"`` (finished, and this process's again)."""

    status: ClaimStatus
    job: StoredJob | None

    @property
    def owned(self) -> bool:
        """Whether this process now owns the job and must run it."""
        return self.status in ("created", "mine", "adopted", "reopened")


class Listener(Protocol):
    """Told of every change of a job in a store (:meth:`JobStore.subscribe`); None means
    changes may have been missed (a lost connection): reload what you follow."""

    def __call__(self, job: StoredJob | None, /) -> None: ...


@runtime_checkable
class JobStore(Protocol):
    """Durable record of a batch, written through by the scheduler so a crash loses nothing.

    :meth:`record_intent` comes *before* each POST and :meth:`record_submitted` right after its
    answer, each durable when it returns. A store several processes share (Redis) also says
    which runs each job (:meth:`claim`) and tells all of each change (:meth:`subscribe`).
    """

    async def load(self, key: str) -> StoreRecord | None:
        """The record for ``key``, or None."""

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """Make this process the one that runs ``key``, unless a live process does;
        ``create`` it if nobody knows it; ``reopen``: take it even if it finished."""

    async def record_intent(
        self, key: str, request: GenerationRequest, attempt: int, *, unbilled: int = 0
    ) -> None:
        """A POST for ``key`` (its ``attempt``-th) is about to be sent; a shared store raises
        :class:`~grok_imagine_async.abc.JobTakenOver` if another process owns the job now.

        ``unbilled``: credits of the task this POST replaces (attempt ``attempt - 1``, failed
        and resubmitted) that the provider did not charge: a store that counts credits takes
        them off, once, in the same write.
        """

    async def record_submitted(self, key: str, task_id: str) -> None:
        """The POST for ``key`` created ``task_id``."""

    async def record_finished(self, result: JobResult) -> None:
        """The job ended with ``result``."""

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        """The job's videos were downloaded to ``files``."""

    async def forget(self, key: str) -> None:
        """Take ``key`` back to never started: its POST is known not to have left."""

    def records(self) -> AsyncIterator[StoreRecord]:
        """Every record, a page at a time (bounded memory whatever the journal's size)."""

    async def get_meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`, or None."""

    async def set_meta(self, name: str, value: str) -> None:
        """Store a small named value with the batch (e.g. the API it ran against)."""

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every job change any process makes; returns a remover."""

    async def aclose(self) -> None:
        """Flush and close."""
