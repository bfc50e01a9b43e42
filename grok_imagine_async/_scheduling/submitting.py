"""The scheduler's submitters: a queued job's journal record read back, then its POST.

For each job taken from the queue a submitter applies the resume policy to what the journal
knows (replaying a finished job, resuming a submitted one), waits for an in-flight slot, and
sends the ``POST /v1/generate`` with its cost held in the budget and its intent written to the
journal right before it leaves. When it is answered, the job is handed to the pollers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from .._errors import (
    AmbiguousSubmitError,
    APIError,
    AuthenticationError,
    BudgetExceededError,
    InvalidRequestError,
    JournalError,
    SchedulerClosedError,
)
from .._limiting.protocol import Priority
from .._models import CREDITS_PER_GENERATION, FailureClass
from .._observe import job_scope
from .api import SchedulerClient
from .books import Books, as_journal_error, logger, unexpected
from .budget import Reservation
from .downloading import Downloader
from .jobs import JobResumed, JobSubmitted, StoreRecord, StoreState
from .record import JobRecord
from .resume import FINAL_STATES, journal_error, reopened, replayed_task, same_request

Watch = Callable[[JobRecord, float, bool], None]
"""Hands a running job to the pollers: ``watch(job, now, resumed)``."""


class Submitter:
    """Submits queued jobs; see the module docstring.

    Args:
        books: The scheduler's shared books.
        client: Sends the POSTs.
        priority: The submissions' place in the rate limiter's queue.
        has_slot: Whether one more job may be in flight now.
        note_request: Tells the poll planner a request is sent at a clock time.
        downloads: The downloaders, if the scheduler downloads.
        owner: The scheduler, which telemetry names the jobs' scope after.
    """

    def __init__(
        self,
        books: Books,
        client: SchedulerClient,
        *,
        priority: Priority,
        has_slot: Callable[[], bool],
        note_request: Callable[[float], None],
        downloads: Downloader | None,
        owner: object,
    ) -> None:
        self._books = books
        self._owner = owner  # the scheduler, as telemetry knows it
        self._client = client
        self._priority = priority
        self._has_slot = has_slot
        self._note_request = note_request
        self._downloads = downloads
        self._resubmit_ambiguous = client.on_ambiguous_submit == "resubmit"
        self._watch: Watch | None = None
        self.submissions = 0
        """POSTs sent (first submissions and resubmissions)."""

    def watch_with(self, watch: Watch) -> None:
        """Hand each job whose task exists to ``watch`` (the pollers)."""
        self._watch = watch

    async def run(self, queue: anyio.abc.ObjectReceiveStream[JobRecord]) -> None:
        """One submitter: take jobs from ``queue`` until the scheduler stops."""
        async for job in queue:
            await self._books.for_job(job, self._start(job))

    async def _start(self, job: JobRecord) -> None:
        books = self._books
        if books.fatal is not None:
            await self.not_sent(job)
            return
        record = None
        if books.journal is not None:
            try:
                record = await books.journal.load(job.key)
            except Exception as exc:
                books.journal_failed(exc, job)
                await self.not_sent(job)
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
        await books.wait_for(lambda: self._has_slot() or books.fatal is not None)
        if books.fatal is not None:
            await self.not_sent(job)
            return
        job.submitting()
        if record is None or not await self._resume(job, record):
            await self.send(job)

    async def not_sent(self, job: JobRecord) -> None:
        """A queued job the stopping scheduler will not submit: it ends unpaid, unrecorded."""
        error = SchedulerClosedError(f"not submitted: the scheduler stopped ({self._books.fatal})")
        failure = FailureClass.REQUEST_ERROR
        await self._books.finish(job, error=error, failure_class=failure, record=False)

    async def _replay(self, job: JobRecord, record: StoreRecord) -> None:
        """Finish a job the journal says has finished, without any request to the API."""
        self._adopt(job, record)
        if record.state is StoreState.FAILED:
            await self._books.finish(
                job,
                error=journal_error(record),
                failure_class=record.failure_class or FailureClass.UNKNOWN,
                from_journal=True,
                record=False,
            )
            return
        task = replayed_task(record)
        files = tuple(Path(f) for f in record.files)
        if self._downloads is not None and not (files and all(f.exists() for f in files)):
            await self._downloads.queue(job, task)  # URLs live ~24 h: fetch what is missing
            return
        await self._books.finish(job, task=task, files=files, from_journal=True, record=False)

    def _adopt(self, job: JobRecord, record: StoreRecord) -> None:
        """Take over what an earlier run spent on ``job`` (submissions, credits)."""
        job.adopted(attempts=record.attempts, credits=record.credits)
        self._books.budget.adopt(record.credits)

    async def _resume(self, job: JobRecord, record: StoreRecord) -> bool:
        """Continue a job the journal saw start; False if it still needs a submission."""
        self._adopt(job, record)
        now = anyio.current_time()
        if record.state is StoreState.SUBMITTED and record.task_id:
            job.resumed(record.task_id)  # its age is unknown: poll at once, then learn
            self._books.emit(JobResumed(key=job.key, at=now, task_id=record.task_id))
            assert self._watch is not None
            self._watch(job, now, True)
            return True
        # INTENT with no task id: the POST may or may not have created (and charged) a task.
        if self._resubmit_ambiguous:
            return False
        await self._books.finish(
            job,
            error=AmbiguousSubmitError(
                "a submission was in flight when the previous run stopped; its outcome is "
                "unknown, so it was not resent (to avoid paying twice)",
                request=job.request,
            ),
            failure_class=FailureClass.AMBIGUOUS_SUBMIT,
        )
        return True

    async def send(self, job: JobRecord) -> None:
        """Send ``job``'s POST if the budget allows, holding its cost until it is answered."""
        budget = self._books.budget
        cost = CREDITS_PER_GENERATION
        if not budget.can_afford(cost=cost):
            assert budget.max_credits is not None
            refused = BudgetExceededError(
                max_credits=budget.max_credits, committed_credits=budget.committed
            )
            failure = FailureClass.BUDGET_EXCEEDED
            await self._books.finish(job, error=refused, failure_class=failure)
            return
        with budget.reserve(cost) as held:  # released unless committed below
            await self._send_reserved(job, cost, held)

    async def _send_reserved(self, job: JobRecord, cost: int, held: Reservation) -> None:
        books = self._books
        attempt = job.attempts + 1
        may_have_left = False  # from the first intent on, a POST may leave

        async def record_intent() -> None:
            nonlocal may_have_left
            may_have_left = True
            if books.journal is not None:
                try:
                    await books.journal.record_intent(job.key, job.request, attempt)
                except BudgetExceededError:
                    raise  # a shared budget (a Redis job store) refused it: not a fault
                except Exception as exc:
                    raise as_journal_error(exc, books.journal) from exc

        self.submissions += 1
        self._note_request(anyio.current_time())
        try:
            with job_scope(self._client.telemetry, self._owner, job.key):
                task_id = await self._client._submit(
                    job.request, before_send=record_intent, priority=self._priority
                )
        except BudgetExceededError as exc:
            # A shared budget (a Redis job store) refused the intent: nothing was sent.
            await books.finish(job, error=exc, failure_class=FailureClass.BUDGET_EXCEEDED)
            return
        except AmbiguousSubmitError as exc:
            held.commit(certain=False)  # it may have been charged: count it against the budget
            job.charged(attempt, cost)
            await books.finish(job, error=exc, failure_class=FailureClass.AMBIGUOUS_SUBMIT)
            return
        except AuthenticationError as exc:
            # Provably not started: close the job (and its journal intent) before stopping all.
            await books.finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            raise
        except JournalError as exc:  # the intent could not be recorded, so nothing was sent
            books.journal_failed(exc, job)
            await self.not_sent(job)
            return
        except (APIError, InvalidRequestError) as exc:  # a prompt over Limits: this job only
            await books.finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            return
        except Exception as exc:
            if not may_have_left:  # the limiter failed (e.g. Redis refused its script)
                error = unexpected(exc)
                await books.finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR)
                return
            # After the intent: the POST may have left, and been paid.
            held.commit(certain=False)
            job.charged(attempt, cost)
            ambiguous = AmbiguousSubmitError(
                f"the submission failed unexpectedly ({unexpected(exc)}); it may have "
                "started a task, so it was not resent",
                request=job.request,
            )
            await books.finish(job, error=ambiguous, failure_class=FailureClass.AMBIGUOUS_SUBMIT)
            return
        with anyio.CancelScope(shield=True):
            held.commit()
            job.charged(attempt, cost)
            if books.journal is not None:
                try:
                    await books.journal.record_submitted(job.key, task_id)
                except Exception as exc:
                    books.unrecorded[job.key] = task_id
                    books.journal_failed(exc, job)
        now = anyio.current_time()
        job.submitted(task_id, at=now)
        books.emit(JobSubmitted(key=job.key, at=now, task_id=task_id, attempt=attempt))
        assert self._watch is not None
        self._watch(job, now, False)
