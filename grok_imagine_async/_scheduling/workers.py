"""The scheduler's workers, sharing its ``Books``: submitters, pollers (fed by one
:class:`DueQueue` timer) and downloaders (a job's videos, before it counts as finished)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path

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
    JobTakenOver,
    JournalError,
    NotFoundError,
    SchedulerClosedError,
    ServerError,
    TaskFailedError,
)
from .._limiting.protocol import Priority
from .._models import CREDITS_PER_GENERATION, FailureClass, Task, TaskStatus, uncharged_credits
from .._observe import job_scope
from .api import SchedulerClient
from .books import Books, Reservation, as_journal_error, logger, unexpected
from .breaker import (
    OUTAGE_FAILURES,
    BreakerState,
    Outcome,
    Transition,
    refusals_text,
    task_outcome,
)
from .config import PRIORITIES, SchedulerConfig
from .due import DueQueue
from .jobs import (
    FINAL_STATES,
    JobRecord,
    JobResubmitting,
    JobResumed,
    JobState,
    JobSubmitted,
    StoreRecord,
    StoreState,
)
from .polling import PollPlanner
from .resume import recorded_result, reopened, same_request

_NOT_FOUND_LIMIT = 3  # 404s in a row before a task is taken for gone
_UNREADABLE_LIMIT = 10  # error answers in a row before a job ends failed: no endless polling
_REFUSAL_PEERS = 0.8  # after refusals in a row, jobs this old (x the refused one's age) looked at
_SUBMITTERS = 32
_POLLERS = 64
# Jobs accepted ahead of submission: the read-ahead of a lazy input. More than _SUBMITTERS, so
# a job whose submit() raised while a submitter moved it into the queue is still there when
# submit() withdraws it (a submitter takes one job per turn of the event loop).
_QUEUE_SIZE = 64
_EXCUSED = 3  # failures an outage explains per job (its probes among them); then its own
_VERDICT = 3.0  # a last try's unexplained failure waits this many first probe waits for a pause
_FOLLOWED_WARMUP = 3  # warm-up jobs looked at on the doubling schedule: an outage's 3 failures


class _Intent:
    """Why a job's latest recorded intent never left (its attempt was refused at connect), or
    None: it may have left; and what the provider did not charge of the task the POST replaces
    (``unbilled``: its intent gives them back to the journal, see ``JobStore.record_intent``)."""

    __slots__ = ("unbilled", "unsent")

    def __init__(self, unbilled: int = 0) -> None:
        self.unsent: APIConnectionError | None = None
        self.unbilled = unbilled


class Workers:
    """Submits queued jobs, polls running ones and downloads completed ones into ``folder``,
    as ``config`` says (``has_slot``: whether one more may be in flight now)."""

    def __init__(
        self,
        books: Books,
        client: SchedulerClient,
        planner: PollPlanner,
        config: SchedulerConfig,
        *,
        has_slot: Callable[[], bool],
        folder: Path | None,
        file_stem: Callable[[str], str] | None,
        owner: object,
    ) -> None:
        self._books, self._breaker, self._planner = books, books.breaker, planner
        self._client, self._owner, self._has_slot = client, owner, has_slot
        self._submit_priority, self._poll_priority = PRIORITIES[config.favor or "throughput"]
        self._resubmit, self._resubmit_on = config.resubmit, config.resubmit_on
        self._downloaders = config.max_downloads if folder is not None else 0
        self._folder = folder  # completed jobs' videos are downloaded there (None: not)
        self._file_stem = file_stem or (lambda key: key)
        self._resubmit_ambiguous = client.on_ambiguous_submit == "resubmit"
        self._doubted = self._unprobed = 0  # jobs in _verdict; jobs in _admit that never probed
        self._probed: set[str] = set()  # jobs that have probed: the next probe is another's
        self._told_warmup = self._told_over = self._told_capped = False  # each logged once
        self._due: DueQueue[JobRecord] = DueQueue()
        self.queue, self._queued = anyio.create_memory_object_stream[JobRecord](_QUEUE_SIZE)
        self._due_send, self._due_recv = anyio.create_memory_object_stream[JobRecord](0)
        self._done, self._completed = anyio.create_memory_object_stream[tuple[JobRecord, Task]](0)
        self._warmup: list[str] = []  # warm-up jobs followed
        self._witnesses: set[str] = set()  # looked at now to explain a young failure
        self.submissions = self.polls = 0  # POSTs (resubmissions too) and polls sent

    def start(self) -> None:
        """Start the submitters, the pollers and their dispatcher, and the downloaders."""
        books = self._books
        for _ in range(_SUBMITTERS):
            books.start(self._serve, self._queued, self._start)
        for _ in range(_POLLERS):
            books.start(self._serve, self._due_recv, self._poll_once)
        books.start(self._dispatch)
        policy = self._breaker.policy
        if books.journal is not None and policy is not None:  # the processes sharing it: one course
            books.start(books.follow_course, policy.probe_wait_initial / 2, self.recheck_suspects)
        for _ in range(self._downloaders):
            books.start(self._download_from)

    def close(self) -> None:
        """Close the hand-over streams."""
        streams = (self.queue, self._queued, self._due_send, self._due_recv, self._done)
        for stream in (*streams, self._completed):
            stream.close()

    async def _serve(
        self, jobs: AsyncIterable[JobRecord], step: Callable[[JobRecord], Awaitable[None]]
    ) -> None:
        """One submitter or poller: ``step`` each job from ``jobs`` (an error ends that job)."""
        async for job in jobs:
            await self._books.for_job(job, step(job))

    async def withdraw(self, job: JobRecord) -> None:
        """``job``'s ``submit()`` raised (its caller cancelled): it must not be sent. Still
        queued (in the queue, or held by a submitter before its slot), it ends now, and the
        submitter that takes it drops it; else the submitter sending it ends it before the
        intent of its POST is written (see :meth:`_send_reserved`)."""
        job.withdrawn = True
        if job.state is JobState.QUEUED:
            await self._not_sent(job)

    async def _start(self, job: JobRecord) -> None:
        """Take up a queued job: replay, resume or send it (RUNNING once its task exists)."""
        books, record = self._books, None
        if job.withdrawn:  # ended as its submit() raised
            return
        if books.journal is not None and not self._stopped():
            try:
                record = await books.journal.load(job.key)
            except Exception as exc:
                books.journal_failed(exc, job)  # the batch stops: the job is not sent
        if record is not None:  # the resume policy: never-paid, undownloaded, ambiguous
            record = reopened(record, resubmit_ambiguous=self._resubmit_ambiguous)
        if record is not None and not same_request(record, job.request):
            logger.warning(
                "job %s: its request changed since the journal recorded it; running it anew",
                job.key,
            )
            record = None
        if job.withdrawn:  # ended meanwhile, as its submit() raised
            return
        if record is not None and record.state in FINAL_STATES:
            await self._replay(job, record)  # sends nothing: needs no in-flight slot
            return
        await books.wait_for(lambda: self._has_slot() or self._stopped() or self._probe_wanted())
        if job.withdrawn:
            return
        if self._stopped():
            await self._not_sent(job)
            return
        job.submitting()
        if record is None or not await self._resume(job, record):
            await self._send(job)

    def _probe_wanted(self) -> bool:
        # Paused, and every job waiting has probed: a queued job probes next, past the cap.
        return self._breaker.state is BreakerState.PAUSED and not self._unprobed

    def _stopped(self) -> bool:
        return self._books.fatal is not None or self._breaker.state is BreakerState.STOPPED

    async def _not_sent(self, job: JobRecord) -> None:
        """End a job the stopping scheduler will not submit, or one withdrawn, unrecorded (a
        rerun submits it)."""
        breaker = self._breaker.snapshot()
        why, failure = f"the scheduler stopped ({self._books.fatal})", FailureClass.REQUEST_ERROR
        if job.withdrawn:
            why, failure = "submit() raised before returning it", FailureClass.NOT_SUBMITTED
        elif self._books.fatal is None and breaker.state is BreakerState.STOPPED:
            never = "the API was never reached: check the base URL and the network"
            why = refusals_text(breaker) or never
            why, failure = f"the batch stopped ({why})", FailureClass.NOT_SUBMITTED
        error = SchedulerClosedError(f"not submitted: {why}")
        await self._books.finish(job, error=error, failure_class=failure, record=False)

    async def _admit(self, job: JobRecord, *, after_failure: bool = False) -> bool:
        """Wait until the breaker lets ``job``'s POST go; False if the batch stopped
        (``after_failure``: a resubmission after a retryable failure, see :meth:`_verdict`)."""
        books, breaker = self._books, self._breaker
        if after_failure and breaker.policy is not None:
            await self._verdict(job)
        probed = job.key in self._probed
        self._unprobed += not probed
        if probed:  # its probe failed: wake the others waiting for it (or a queued job)
            books.notify()
        try:
            while books.fatal is None:
                now = anyio.current_time()
                held = self._planner.holding(now)
                if probed and self._unprobed and breaker.state is BreakerState.PAUSED:
                    # A job that probed in vain leaves the next probe to another.
                    held = max(held or 0.0, breaker.snapshot().next_probe_at or now, now + 1.0)
                if held is not None:  # a burst waits for its canary's look
                    await books.next_change(held - now)
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
                await books.next_change(math.inf if until is None else until - now)
            return False
        finally:
            self._unprobed -= not probed

    async def _verdict(self, job: JobRecord, *, last_try: bool = False) -> None:
        """Wait to learn whether an outage explains ``job``'s failure (the batch pauses) or not
        (a later success): ``last_try`` up to ``_VERDICT`` probe waits; else one while the newest
        jobs fail too, and while unexplained let the jobs queued behind it go first."""
        books, breaker, planner = self._books, self._breaker, self._planner
        assert breaker.policy is not None  # no policy, no pause to wait for
        wait = breaker.policy.probe_wait_initial
        failed_at = anyio.current_time()
        patience = failed_at + (_VERDICT * wait if last_try else wait)
        doubted = not last_try  # queued too: the jobs that wait here do not wait for each other
        self._doubted += doubted
        try:
            while books.fatal is None:
                now = anyio.current_time()
                newest_fail = breaker.unexplained(job.sequence) if last_try else breaker.suspicious
                if newest_fail and now < patience:
                    timeout = patience - now
                elif (
                    doubted
                    and breaker.unexplained(job.sequence)
                    and not planner.vouched >= failed_at
                    and planner.queued() > self._doubted
                    and self._has_slot()  # else they cannot go: it holds a slot they wait for
                ):
                    timeout = wait
                else:
                    return
                await books.next_change(timeout)
        finally:
            self._doubted -= doubted

    async def _replay(self, job: JobRecord, record: StoreRecord) -> None:
        """Finish a job the journal says has finished, without any request to the API."""
        self._adopt(job, record)
        result = recorded_result(record, job.request, at=anyio.current_time())
        missing = not (result.files and all(f.exists() for f in result.files))
        if result.task is not None and self._folder is not None and missing:
            await self._to_download(job, result.task)  # URLs live ~24 h: fetch again
            return
        await self._books.conclude(job, result, record=False)

    def _adopt(self, job: JobRecord, record: StoreRecord) -> None:
        """Take over what an earlier run spent on ``job`` (submissions, credits)."""
        job.adopted(attempts=record.attempts, credits=record.credits)
        self._books.budget.count(record.credits)

    async def _resume(self, job: JobRecord, record: StoreRecord) -> bool:
        """Continue a job the journal saw start; False if it still needs a submission."""
        self._adopt(job, record)
        now = anyio.current_time()
        if record.state is StoreState.SUBMITTED and record.task_id:
            job.resumed(record.task_id)  # its age is unknown: poll at once, then learn
            self._books.emit(JobResumed(key=job.key, at=now, task_id=record.task_id))
            self._watch(job)
            return True
        # INTENT with no task id: the POST may or may not have created (and charged) a task.
        if self._resubmit_ambiguous:
            return False
        error = AmbiguousSubmitError(
            "a submission was in flight when the previous run stopped; its outcome is "
            "unknown, so it was not resent (to avoid paying twice)",
            request=job.request,
        )
        await self._books.finish(job, error=error, failure_class=FailureClass.AMBIGUOUS_SUBMIT)
        return True

    async def _send(
        self, job: JobRecord, *, after_failure: bool = False, unbilled: int = 0
    ) -> None:
        """Send ``job``'s POST once the breaker and budget allow (again after an outage's end);
        ``unbilled``: credits the provider did not charge of the failed task it replaces."""
        intent = _Intent(unbilled)
        try:
            await self._send_until_done(job, intent, after_failure=after_failure)
        except anyio.get_cancelled_exc_class():
            if intent.unsent:  # stopped before a retry: a rerun sends it, as it would a refusal
                with anyio.CancelScope(shield=True):
                    await self._never_left(job, intent.unsent)
            raise

    async def _never_left(self, job: JobRecord, error: APIConnectionError) -> None:
        """End ``job``, whose recorded intent never left (``error``), as unpaid (a rerun
        submits it): not left as an intent, which a rerun takes for a POST of unknown outcome."""
        await self._books.finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR)

    async def _send_until_done(
        self, job: JobRecord, intent: _Intent, *, after_failure: bool = False
    ) -> None:
        while True:
            if not await self._admit(job, after_failure=after_failure):
                if intent.unsent:
                    await self._never_left(job, intent.unsent)
                else:
                    await self._not_sent(job)
                return
            books, budget = self._books, self._books.budget
            if not budget.can_afford():
                assert budget.max_credits is not None
                refused = BudgetExceededError(
                    max_credits=budget.max_credits, committed_credits=budget.committed
                )
                self._outcome(job, Outcome.OTHER)
                await books.finish(job, error=refused, failure_class=FailureClass.BUDGET_EXCEEDED)
                return
            with budget.reserve() as held:  # released unless committed
                if not await self._send_reserved(job, held, intent):
                    return

    async def _send_reserved(self, job: JobRecord, held: Reservation, intent: _Intent) -> bool:
        """One POST for ``job``; True if it must wait for the outage's end and go again
        (``intent.unsent``: its last recorded intent never left)."""
        books, breaker, cost = self._books, self._breaker, CREDITS_PER_GENERATION
        attempt = job.attempts + 1
        may_have_left = halt = False  # from the first intent on, a POST may leave
        error: GrokImagineError

        def not_sent(error: APIConnectionError) -> None:
            intent.unsent = error

        async def record_intent() -> None:
            nonlocal may_have_left
            if job.withdrawn and not may_have_left:  # else its POST left: it runs as any job
                raise _Withdrawn
            now = anyio.current_time()
            if breaker.withholds(job.sequence) or self._planner.leaving(job.key, now, breaker):
                # Admitted before a pause or stop, or in a burst held for its canary's look.
                if self._planner.capped and not self._told_capped:
                    self._told_capped = True
                    logger.info(
                        "%s submissions left since the newest task seen working: the next "
                        "wait for a canary's look (BreakerPolicy.max_at_risk)",
                        breaker.policy and breaker.policy.max_at_risk,
                    )
                raise _Withheld
            if books.journal is not None:
                try:
                    await books.journal.record_intent(
                        job.key, job.request, attempt, unbilled=intent.unbilled
                    )
                except BudgetExceededError:
                    raise  # a shared budget (a Redis job store) refused it: not a fault
                except Exception as exc:  # refused (taken over, a full disk): nothing leaves
                    raise as_journal_error(exc, books.journal) from exc
            if not may_have_left:  # counted once it leaves, not while it waits (or is held)
                self.submissions += 1
                self._planner.note_request(anyio.current_time())
            may_have_left, intent.unsent = True, None  # this intent leaves now

        await self._share()
        try:
            with job_scope(self._client.telemetry, self._owner, job.key):
                task_id = await self._client._submit(
                    job.request,
                    before_send=record_intent,
                    on_unsent=not_sent,
                    priority=self._submit_priority,
                )
        except _Withheld:
            return True  # the breaker decides again: after the outage, or not at all
        except _Withdrawn:
            self._outcome(job, Outcome.OTHER)  # admitted: the breaker learns it went nowhere
            await self._not_sent(job)
            return False
        except BudgetExceededError as exc:  # a shared budget (a Redis job store) refused the intent
            self._outcome(job, Outcome.OTHER)
            error, failure = exc, FailureClass.BUDGET_EXCEEDED
        except AmbiguousSubmitError as exc:
            held.commit(certain=False)  # it may have been charged: count it against the budget
            job.charged(attempt, cost)
            self._outcome(job, Outcome.UNANSWERED)
            error, failure = exc, FailureClass.AMBIGUOUS_SUBMIT
        except AuthenticationError as exc:  # not started: end the job (its intent), then stop all
            await books.finish(job, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            raise
        except JobTakenOver as exc:  # our lease ran out: the process that took the job sends it
            logger.warning("%s", exc)
            await books.finish(
                job, error=exc, failure_class=FailureClass.NOT_SUBMITTED, record=False
            )
            return False
        except JournalError as exc:  # the intent could not be recorded, so nothing was sent
            books.journal_failed(exc, job)
            await self._not_sent(job)
            return False
        except (APIConnectionError, ServerError, APIResponseValidationError) as exc:
            # Nothing was started (the sender retried already); systematic: the breaker's.
            reached = not isinstance(exc, APIConnectionError)
            self._outcome(job, Outcome.RETRYABLE if reached else Outcome.UNREACHABLE)
            if breaker.state is BreakerState.PAUSED:
                return True  # sent again once the outage is over
            # A server never reached: a configuration error; stop every worker once it ended.
            halt = breaker.state is BreakerState.STOPPED and not reached
            error, failure = exc, FailureClass.REQUEST_ERROR
        except (APIError, InvalidRequestError) as exc:  # a prompt over Limits: this job only
            self._outcome(job, Outcome.OTHER)
            error, failure = exc, FailureClass.REQUEST_ERROR
        except Exception as exc:  # the limiter failed or, after the intent, a maybe paid POST
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
            breaker.answered()
            if breaker.is_probe(job.sequence) and breaker.healthy_age() <= 0.0:  # POSTs failed
                self._outcome(job, Outcome.SUCCEEDED)
            held.commit()
            job.charged(attempt, cost)
            await books.write(job, lambda store: store.record_submitted(job.key, task_id), task_id)
            now = anyio.current_time()
            job.submitted(task_id, at=now)
            books.emit(JobSubmitted(key=job.key, at=now, task_id=task_id, attempt=attempt))
            self._watch(job)
            return False
        await books.finish(job, error=error, failure_class=failure)
        if halt:
            books.stop(error, drain=False)
        return False

    def _watch(self, job: JobRecord) -> None:
        """Start polling ``job``, whose task exists (at once if resumed)."""
        now = anyio.current_time()
        if job.submitted_at is None:
            self._schedule(job, now)
            return
        breaker = self._breaker
        follow = breaker.warming_up and len(self._warmup) < _FOLLOWED_WARMUP
        if follow:
            self._warmup.append(job.key)  # looked at closely: outages show within seconds
        self._planner.submitted(job.key, follow=follow)
        if breaker.state is BreakerState.PAUSED and not breaker.is_probe(job.sequence):
            self._planner.canaries.add(job.key)  # sent as the batch paused: probably failed too
        self._schedule(job, self._planner.next_look(job, now))
        self._replan(now)

    async def _dispatch(self) -> None:
        """The dispatcher: hand each job to a poller when its poll is due."""
        while True:
            await self._due_send.send(await self._due.next_due(early=self._early))

    def _early(self, now: float) -> JobRecord | None:
        """The job most worth an early look, while the quota has room for one."""
        planner = self._planner
        if planner.room(now) < 1.0:  # before weighing every job
            return None
        # Quota-bound: only the first planned job is weighed (not thousands, four times a second).
        best, chance = None, 0.0
        for job in self._due.items(first_only=planner.quota_bound):
            if (p := planner.early_chance(job, now)) > chance:
                best, chance = job, p
        if best is None or not planner.has_room(now, chance=chance, planned=self._due.due_before):
            return None
        return best

    async def _poll_once(self, job: JobRecord) -> None:
        books, planner = self._books, self._planner
        assert job.task_id is not None
        urgent = planner.is_urgent(job.key)
        if not urgent:
            await self._share()
        self.polls += 1
        job.polls += 1
        planner.note_request(anyio.current_time(), poll=True)
        # The early probes wait behind submissions like any poll: ahead, they delay a start.
        priority = Priority.URGENT if urgent else self._poll_priority
        try:
            with job_scope(self._client.telemetry, self._owner, job.key):
                task = await self._client.get_task(job.task_id, priority=priority)
        except NotFoundError as exc:
            job.not_found += 1
            await self._failed_look(job, exc, in_a_row=job.not_found, limit=_NOT_FOUND_LIMIT)
            return
        except AuthenticationError:
            raise
        except APIError as exc:  # the task exists and is paid for: keep looking, a little later
            job.unreadable += 1
            await self._failed_look(job, exc, in_a_row=job.unreadable, limit=_UNREADABLE_LIMIT)
            return
        now = anyio.current_time()
        completed = task.status is TaskStatus.COMPLETED
        planner.looked(job, now=now, finished=task.is_terminal, completed=completed)
        self._replan(now)
        if urgent:
            books.notify()  # a canary's look: a burst it held back may go
        if not task.is_terminal:
            self._healthy(job, now)
            job.looked(at=now)
            when = planner.next_look(job, anyio.current_time())
            if self._breaker.is_probe(job.sequence) and job.submitted_at is not None:
                # A probe still running ends the pause at the healthy age: look then.
                when = min(when, max(now, job.submitted_at + self._breaker.healthy_age()))
            self._schedule(job, when)
            return
        # Refund what the provider says the task did not cost (a shared store's budget gets it
        # back as the job's end is recorded: records.unbilled), a resumed job's too: its record's
        # credits were counted as it was taken up (never more than were counted for it).
        if refund := min(uncharged_credits(task), job.credits):
            books.budget.count(-refund)
            job.refunded(refund)
        self._outcome(job, task_outcome(task.failure_class), task)
        if task.succeeded:
            if self._folder is not None:
                await self._to_download(job, task)
            else:
                await books.finish(job, task=task)
            return
        failure = task.failure_class or FailureClass.UNKNOWN
        if (
            failure in self._resubmit_on
            and failure in OUTAGE_FAILURES
            and job.resubmits >= self._resubmit
            and not job.waited  # once: its own failures may make the pause
            and len(books.jobs) > 1  # another job's outcome can pause the batch
            and self._breaker.pauses(job.sequence)
        ):
            job.waited = True
            books.start(self._failed, job, task, failure, True)  # not in this poller
            return
        await self._failed(job, task, failure)

    async def _failed(
        self, job: JobRecord, task: Task, failure: FailureClass, last_try: bool = False
    ) -> None:
        """Resubmit ``job`` (unspent when an outage explains its failure) or end it failed;
        ``last_try``: once the verdict is in (see :meth:`_verdict`)."""
        if last_try:
            await self._verdict(job, last_try=True)
            await self._books.for_job(job, self._failed(job, task, failure))
            return
        books = self._books
        # An outage explains a failure, unspent, a few times: prompts that always fail look like
        # one (they pause the batch, and are its only probes), and would probe forever.
        outage = (
            failure in OUTAGE_FAILURES
            and self._breaker.outage_explains(job.sequence)
            and job.excused < _EXCUSED
        )
        if failure in self._resubmit_on and (outage or job.resubmits < self._resubmit):
            job.resubmitting(counted=not outage)
            books.emit(JobResubmitting(key=job.key, at=anyio.current_time(), failure_class=failure))
            # What the provider did not charge of the failed task goes back to the journal
            # with the next intent, in its write (a shared budget's reservation included).
            unbilled = uncharged_credits(task)
            books.start(self._resend, job, failure in OUTAGE_FAILURES, unbilled)  # not here
            return
        await books.finish(job, task=task, error=TaskFailedError(task), failure_class=failure)

    def _outcome(self, job: JobRecord, outcome: Outcome, task: Task | None = None) -> None:
        """Tell the breaker how ``job``'s ``task`` ended (None: its POST, or a probe seen
        healthy), and act on what it says: a resume lets the held jobs go at once, whole; only
        a task's end looks at the jobs it casts doubt on."""
        books, breaker, planner = self._books, self._breaker, self._planner
        now, post = anyio.current_time(), task is None
        failure = None if task is None else task.failure_class
        age = None if post or job.submitted_at is None else now - job.submitted_at
        transition = breaker.record(job.sequence, outcome, now=now, failure_class=failure, age=age)
        if not post and outcome is Outcome.RETRYABLE and breaker.suspicious:
            planner.next_canary = min(planner.next_canary, now)  # the next job sent is looked at
            young = 2.0 * planner.canary_age
            if age is not None and age <= young:
                # Failed young, as in an outage: hold the submissions, and look now at the
                # newest jobs as old (failed too, the batch pauses within seconds).
                breaker.hold(now + young)
                self._call_witnesses(job, now, age)
        if transition is Transition.RESUMED:
            # The burst after needs no canary: vouched from now, not from the probe's creation,
            # which a probe seen healthy at twice the failure age leaves too old to vouch.
            planner.vouch(now, whole=True)
        if transition is Transition.PAUSED and not post:
            self.recheck_suspects(now)
        if transition is not None:
            books.course(job.key, transition, now)
        elif (
            not post
            and outcome is Outcome.REFUSED
            and breaker.refusals >= 2
            and breaker.newest_good < 0
            and age
        ):
            # Refusals and no success yet: look now at the jobs as old, probably over too.
            cutoff = now - _REFUSAL_PEERS * age
            self._look_now(lambda j: j.submitted_at is not None and j.submitted_at <= cutoff, now)

    def _call_witnesses(self, failed: JobRecord, now: float, age: float) -> None:
        """Look now at the two newest other jobs sent after the newest success, ``age`` old."""
        after = self._breaker.newest_good
        candidates = [
            job
            for job in self._due.items()
            if (job.sequence or 0) > after
            and job is not failed
            and job.submitted_at is not None
            and now - job.submitted_at >= age
            and job.key not in self._witnesses
        ]
        chosen = {job.key for job in sorted(candidates, key=lambda j: j.sequence or 0)[-2:]}
        if not chosen:  # else _look_now scans every queued job for nothing
            return
        self._witnesses |= chosen
        self._look_now(lambda job: job.key in chosen, now)

    def recheck_suspects(self, now: float) -> None:
        """Paused (here or elsewhere): look at the jobs sent since the oldest failure (and a
        little before), probably failed too, once old enough to show it, not minutes later."""
        shows = self._breaker.healthy_age() or self._planner.canary_age
        shows = max(shows, self._planner.policy.wait_initial)
        since = self._breaker.failing_since - shows
        self._look_now(
            lambda job: job.submitted_at is not None and job.submitted_at >= since, now, age=shows
        )

    def _look_now(
        self, chosen: Callable[[JobRecord], bool], now: float, *, age: float = 0.0
    ) -> None:
        """Look at the queued jobs ``chosen`` picks now (or once ``age`` old), urgently."""
        for job in self._due.take(chosen):
            self._planner.canaries.add(job.key)
            sent = now if job.submitted_at is None else job.submitted_at
            self._schedule(job, max(now, sent + age))

    def _healthy(self, job: JobRecord, now: float) -> None:
        """A job seen running: it may end the warm-up, or (a probe, a witness) the pause."""
        breaker = self._breaker
        if job.submitted_at is None:
            return
        if breaker.warming_up and breaker.vouch(now - job.submitted_at):
            self._planner.vouch(job.submitted_at)  # and the burst that follows needs no canary
            self._books.notify()  # the warm-up is over: the submitters go on
        if not breaker.warming_up and job.key in self._warmup and not self._planner.queued():
            # Everything sent: a warm-up job's urgent looks are no longer worth their cost.
            self._planner.followed.discard(job.key)
        probe = breaker.is_probe(job.sequence) or job.key in self._witnesses
        self._witnesses.discard(job.key)
        if probe and now - job.submitted_at >= breaker.healthy_age():
            self._outcome(job, Outcome.SUCCEEDED)

    async def _resend(self, job: JobRecord, after_failure: bool, unbilled: int = 0) -> None:
        send = self._send(job, after_failure=after_failure, unbilled=unbilled)
        await self._books.for_job(job, send)

    async def _share(self) -> None:
        """Sleep until a routine request leaves the urgent looks their share of the quota."""
        wait = self._planner.share_wait(anyio.current_time())
        while wait > 0.0:
            await anyio.sleep(wait)
            wait = self._planner.share_wait(anyio.current_time())

    def _schedule(self, job: JobRecord, when: float) -> None:
        if self._planner.is_urgent(job.key):
            # Not behind pollers waiting for permits: it decides whether submissions go on.
            self._planner.book(when)  # the routine requests leave it a permit
            self._books.start(self._look_alone, job, when)
        else:
            self._due.schedule(job, when)

    async def _look_alone(self, job: JobRecord, when: float) -> None:
        try:
            await anyio.sleep_until(when)
        finally:
            self._planner.unbook(when)
        await self._books.for_job(job, self._poll_once(job))

    async def _failed_look(
        self, job: JobRecord, error: APIError, *, in_a_row: int, limit: int
    ) -> None:
        """A look that learned nothing: end the job after ``limit`` in a row."""
        if in_a_row < limit:  # try again no sooner than the shortest gap
            now = anyio.current_time()
            earliest = now + self._planner.policy.wait_initial
            self._schedule(job, self._planner.next_look(job, now, earliest))
            return
        self._planner.gone(job)
        await self._books.finish(job, error=error, failure_class=FailureClass.REQUEST_ERROR)

    def _replan(self, now: float) -> None:
        planner = self._planner
        if planner.replan_needed(now):
            self._due.reschedule_all(
                lambda job, due: due if job.submitted_at is None else planner.next_look(job, now)
            )

    async def _to_download(self, job: JobRecord, task: Task) -> None:
        """Hand ``job``, whose ``task`` completed, to a downloader."""
        job.succeeded(task)
        await self._done.send((job, task))

    async def _download_from(self) -> None:
        """One downloader (a failed download ends only its job; the journal keeps its task)."""
        async for job, task in self._completed:
            await self._books.for_job(job, self._download(job, task))

    async def _download(self, job: JobRecord, task: Task) -> None:
        books = self._books
        assert self._folder is not None
        try:
            files = await self._client.download(task, self._folder, stem=self._file_stem(job.key))
        except APIError as exc:  # a DownloadError too: the client maps every local failure
            await books.finish(job, task=task, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            return
        await books.write(job, lambda store: store.record_files(job.key, files))
        await books.finish(job, task=task, files=tuple(files))


class _Withheld(Exception):
    """A POST withheld after its permit came (the batch paused or stopped meanwhile)."""


class _Withdrawn(Exception):
    """A POST not sent: its job's ``submit()`` raised after a submitter took it."""
