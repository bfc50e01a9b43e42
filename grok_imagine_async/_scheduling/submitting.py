"""The scheduler's submitters: a queued job's journal record replayed or resumed, else its
POST, its cost held in the budget and its intent journaled right before it leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from .._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    AuthenticationError,
    BudgetExceededError,
    GrokImagineError,
    InvalidRequestError,
    JournalError,
    SchedulerClosedError,
    ServerError,
)
from .._limiting.protocol import Priority
from .._models import CREDITS_PER_GENERATION, FailureClass
from .._observe import job_scope
from .api import SchedulerClient
from .books import Books, Reservation, as_journal_error, logger, unexpected
from .breaker import BreakerState, Outcome, Transition
from .downloading import Downloader
from .jobs import FINAL_STATES, JobRecord, JobResumed, JobSubmitted, StoreRecord, StoreState
from .polling import PollPlanner
from .resume import recorded_result, reopened, same_request


class Submitter:
    """Submits queued jobs (``has_slot``: whether one more may be in flight now)."""

    def __init__(
        self,
        books: Books,
        client: SchedulerClient,
        planner: PollPlanner,
        *,
        priority: Priority,
        has_slot: Callable[[], bool],
        downloads: Downloader | None,
        owner: object,
    ) -> None:
        self._books = books
        self._breaker = books.breaker
        self._owner = owner
        self._client = client
        self._planner = planner
        self._priority = priority
        self._has_slot = has_slot
        self._downloads = downloads
        self._resubmit_ambiguous = client.on_ambiguous_submit == "resubmit"
        self._doubted = 0  # resubmissions waiting in _explained
        self._probed: set[str] = set()  # jobs that have probed: the next probe is another's
        self._unprobed = 0  # jobs waiting in _admit that have not probed
        self._told_warmup = self._told_over = False  # the log says when the warm-up holds
        self.submissions = 0
        """POSTs sent (first submissions and resubmissions)."""

    async def start(self, job: JobRecord) -> None:
        """Take up a queued job: replay, resume or send it (RUNNING once its task exists)."""
        books = self._books
        if self._stopped():
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
        await books.wait_for(lambda: self._has_slot() or self._stopped() or self._probe_wanted())
        if self._stopped():
            await self.not_sent(job)
            return
        job.submitting()
        if record is None or not await self._resume(job, record):
            await self.send(job)

    def _probe_wanted(self) -> bool:
        # Paused, and every job waiting has probed: a queued job probes next, past the cap.
        return self._breaker.state is BreakerState.PAUSED and not self._unprobed

    def _stopped(self) -> bool:
        return self._books.fatal is not None or self._breaker.state is BreakerState.STOPPED

    async def not_sent(self, job: JobRecord) -> None:
        """End a job the stopping scheduler will not submit, unrecorded (a rerun submits it)."""
        breaker = self._breaker.snapshot()
        why, failure = f"the scheduler stopped ({self._books.fatal})", FailureClass.REQUEST_ERROR
        if self._books.fatal is None and breaker.state is BreakerState.STOPPED:
            why = "the API was never reached: check the base URL and the network"
            if breaker.reason == "refused" and breaker.failure_class is not None:
                kind = breaker.failure_class.value.replace("_", " ")
                why = f"the last {breaker.streak} jobs were all refused for {kind}"
            why, failure = f"the batch stopped ({why})", FailureClass.NOT_SUBMITTED
        error = SchedulerClosedError(f"not submitted: {why}")
        await self._books.finish(job, error=error, failure_class=failure, record=False)

    async def _admit(self, job: JobRecord, *, after_failure: bool = False) -> bool:
        """Wait until the breaker lets ``job``'s POST go; False if the batch stopped.

        ``after_failure``: a resubmission after a retryable failure (see :meth:`_explained`).
        """
        books, breaker = self._books, self._breaker
        if after_failure and breaker.policy is not None:
            await self._explained(job, breaker.policy.probe_wait_initial)
        probed = job.key in self._probed
        self._unprobed += not probed
        if probed:  # its probe failed: wake the others waiting for it (or a queued job)
            books.notify()
        try:
            while True:
                if books.fatal is not None:
                    return False
                now = anyio.current_time()
                held = self._planner.holding(now)
                if probed and self._unprobed and breaker.state is BreakerState.PAUSED:
                    # A job that probed in vain leaves the next probe to another.
                    held = max(held or 0.0, breaker.snapshot().next_probe_at or now, now + 1.0)
                if held is not None:  # a burst waits for its canary's look
                    with anyio.move_on_after(held - now):
                        await books.next_change()
                    continue
                sequence, until, transition = breaker.admit(now)
                if sequence is not None:
                    # The first admission past the hold says it ended, whatever ended it.
                    if self._told_warmup and not self._told_over and not breaker.warming_up:
                        self._told_over = True
                        logger.info("warm-up over: the provider works; the other jobs go out")
                    job.sequence = sequence
                    if transition is Transition.PROBING:
                        self._probed.add(job.key)
                        self._planner.followed.add(job.key)
                        books.course(job.key, transition, now)
                    return True
                if until == float("inf"):
                    return False
                if until is None and breaker.warming_up and not self._told_warmup:
                    self._told_warmup = True
                    policy = breaker.policy
                    assert policy is not None  # no policy, no warm-up
                    refusals = policy.warmup_until == "completed" and policy.warmup_max_wait is None
                    logger.info(
                        "warm-up: the first %s jobs go out; the others wait until one shows "
                        "the provider works%s (BreakerPolicy.warmup)",
                        policy.warmup,
                        ", so a batch it refuses pays for those alone" if refusals else "",
                    )
                with anyio.move_on_after(float("inf") if until is None else until - now):
                    await books.next_change()
        finally:
            self._unprobed -= not probed

    async def _explained(self, job: JobRecord, wait: float) -> None:
        """Before ``job``'s resubmission: wait ``wait`` while the newest jobs fail too, and
        while its own failure is unexplained, let the jobs queued behind it go first: they
        pause the batch (the resubmission is not spent in the outage), or a canary among
        them seen healthy (or a success) says the provider works."""
        books, breaker, planner = self._books, self._breaker, self._planner
        failed_at = anyio.current_time()
        patience = failed_at + wait
        self._doubted += 1  # queued too: the jobs that wait here do not wait for each other
        try:
            while books.fatal is None:
                now = anyio.current_time()
                if breaker.suspicious and now < patience:
                    timeout = patience - now
                elif (
                    breaker.unexplained(job.sequence)
                    and not planner.vouched >= failed_at
                    and planner.queued() > self._doubted
                    and self._has_slot()  # else they cannot go: it holds a slot they wait for
                ):
                    timeout = wait
                else:
                    return
                with anyio.move_on_after(timeout):
                    await books.next_change()
        finally:
            self._doubted -= 1

    async def _replay(self, job: JobRecord, record: StoreRecord) -> None:
        """Finish a job the journal says has finished, without any request to the API."""
        self._adopt(job, record)
        result = recorded_result(record, job.request, at=anyio.current_time())
        missing = not (result.files and all(f.exists() for f in result.files))
        if result.task is not None and self._downloads is not None and missing:
            await self._downloads.queue(job, result.task)  # URLs live ~24 h: fetch again
            return
        await self._books.conclude(job, result, record=False)

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

    async def send(self, job: JobRecord, *, after_failure: bool = False) -> None:
        """Send ``job``'s POST once the breaker and the budget allow; one an outage refused
        goes again after it. ``after_failure``: see :meth:`_admit`."""
        while True:
            if not await self._admit(job, after_failure=after_failure):
                await self.not_sent(job)
                return
            budget = self._books.budget
            if not budget.can_afford(cost=CREDITS_PER_GENERATION):
                assert budget.max_credits is not None
                refused = BudgetExceededError(
                    max_credits=budget.max_credits, committed_credits=budget.committed
                )
                self._outcome(job, Outcome.OTHER)
                await self._books.finish(
                    job, error=refused, failure_class=FailureClass.BUDGET_EXCEEDED
                )
                return
            with budget.reserve(CREDITS_PER_GENERATION) as held:  # released unless committed
                if not await self._send_reserved(job, held):
                    return

    def _outcome(self, job: JobRecord, outcome: Outcome) -> None:
        """Tell the breaker how ``job``'s POST ended."""
        now = anyio.current_time()
        transition = self._breaker.record(job.sequence, outcome, now=now)
        if transition is Transition.RESUMED:
            self._planner.vouch(now, whole=True)  # the probe was answered: the burst may go
        if transition is not None:
            self._books.course(job.key, transition, now)

    async def _send_reserved(self, job: JobRecord, held: Reservation) -> bool:
        """One POST for ``job``; True if it must wait for the outage's end and go again."""
        books, cost = self._books, CREDITS_PER_GENERATION
        attempt = job.attempts + 1
        may_have_left = halt = False  # from the first intent on, a POST may leave
        error: GrokImagineError

        async def record_intent() -> None:
            nonlocal may_have_left
            if self._breaker.withholds(job.sequence) or self._planner.leaving(
                job.key, anyio.current_time(), self._breaker
            ):
                # Admitted before a pause or stop, or in a burst held for its canary's look.
                raise _Withheld
            if not may_have_left:  # counted once it leaves, not while it waits (or is held)
                self.submissions += 1
                self._planner.note_request(anyio.current_time())
            may_have_left = True
            if books.journal is not None:
                try:
                    await books.journal.record_intent(job.key, job.request, attempt)
                except BudgetExceededError:
                    raise  # a shared budget (a Redis job store) refused it: not a fault
                except Exception as exc:
                    raise as_journal_error(exc, books.journal) from exc

        await within_share(self._planner.share_wait)
        try:
            with job_scope(self._client.telemetry, self._owner, job.key):
                task_id = await self._client._submit(
                    job.request, before_send=record_intent, priority=self._priority
                )
        except _Withheld:
            return True  # the breaker decides again: after the outage, or not at all
        except BudgetExceededError as exc:
            # A shared budget (a Redis job store) refused the intent: nothing was sent.
            self._outcome(job, Outcome.OTHER)
            error, failure = exc, FailureClass.BUDGET_EXCEEDED
        except AmbiguousSubmitError as exc:
            held.commit(certain=False)  # it may have been charged: count it against the budget
            job.charged(attempt, cost)
            self._outcome(job, Outcome.UNANSWERED)
            error, failure = exc, FailureClass.AMBIGUOUS_SUBMIT
        except AuthenticationError as exc:
            # Provably not started: close the job (and its journal intent) before stopping all.
            await books.finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            raise
        except JournalError as exc:  # the intent could not be recorded, so nothing was sent
            books.journal_failed(exc, job)
            await self.not_sent(job)
            return False
        except (APIConnectionError, ServerError, APIResponseValidationError) as exc:
            # Nothing was started (the sender retried already); systematic: the breaker's.
            reached = not isinstance(exc, APIConnectionError)
            self._outcome(job, Outcome.RETRYABLE if reached else Outcome.UNREACHABLE)
            if self._breaker.state is BreakerState.PAUSED:
                return True  # sent again once the outage is over
            # A server never reached: a configuration error; stop every worker once it ended.
            halt = self._breaker.state is BreakerState.STOPPED and not reached
            error, failure = exc, FailureClass.REQUEST_ERROR
        except (APIError, InvalidRequestError) as exc:  # a prompt over Limits: this job only
            self._outcome(job, Outcome.OTHER)
            error, failure = exc, FailureClass.REQUEST_ERROR
        except Exception as exc:
            # Before the intent the limiter failed (e.g. Redis refused its script); after it,
            # the POST may have left, and been paid.
            error, failure = unexpected(exc), FailureClass.REQUEST_ERROR
            if may_have_left:
                held.commit(certain=False)
                job.charged(attempt, cost)
                error = AmbiguousSubmitError(
                    f"the submission failed unexpectedly ({error}); it may have started a task, "
                    "so it was not resent",
                    request=job.request,
                )
                failure = FailureClass.AMBIGUOUS_SUBMIT
        else:
            self._breaker.answered()
            if self._breaker.is_probe(job.sequence) and self._breaker.healthy_age() <= 0.0:
                self._outcome(job, Outcome.SUCCEEDED)  # the POSTs failed, and this one did not
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
            return False
        await books.finish(job, error=error, failure_class=failure)
        if halt:
            books.stop(error, drain=False)
        return False


async def within_share(share_wait: Callable[[float], float]) -> None:
    """Sleep until a routine request leaves the urgent looks their share of the quota."""
    wait = share_wait(anyio.current_time())
    while wait > 0.0:
        await anyio.sleep(wait)
        wait = share_wait(anyio.current_time())


class _Withheld(Exception):
    """A POST withheld after its permit came (the batch paused or stopped meanwhile)."""
