"""The scheduler's pollers: a dispatcher hands each running job, due in a :class:`DueQueue`
(one timer for all), to a poller, which finishes, resubmits or reschedules it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import anyio

from .._errors import APIError, AuthenticationError, NotFoundError, TaskFailedError
from .._limiting.protocol import Priority
from .._models import CREDITS_PER_GENERATION, FailureClass, Task, TaskStatus
from .._observe import job_scope
from .api import SchedulerClient
from .books import Books
from .breaker import OUTAGE_FAILURES, BreakerState, Outcome, Transition, task_outcome
from .downloading import Downloader
from .due import DueQueue
from .jobs import JobRecord, JobResubmitting, JobState
from .polling import PollPlanner
from .submitting import Submitter, within_share

_NOT_FOUND_LIMIT = 3  # 404s in a row before a task is taken for gone
_UNREADABLE_LIMIT = 10  # error answers in a row before a job ends failed: no endless polling
_REFUSAL_PEERS = 0.8  # after refusals in a row, jobs this old (x the refused one's age) looked at
_EXCUSED = 3  # failures an outage explains per job (its probes among them); then its own
_VERDICT = 3.0  # a last try's unexplained failure waits this many first probe waits for a pause
_FOLLOWED_WARMUP = 3  # warm-up jobs looked at on the doubling schedule: an outage's 3 failures


class Poller:
    """Polls running jobs (``resubmit``: resubmissions a job may use, on ``resubmit_on``)."""

    def __init__(
        self,
        books: Books,
        client: SchedulerClient,
        planner: PollPlanner,
        submitter: Submitter,
        *,
        priority: Priority,
        resubmit: int,
        resubmit_on: Iterable[FailureClass],
        downloads: Downloader | None,
        owner: object,
    ) -> None:
        self._books = books
        self._owner = owner
        self._client = client
        self._planner = planner
        self._submitter = submitter
        self._priority = priority
        self._resubmit = resubmit
        self._resubmit_on = frozenset(resubmit_on)
        self._downloads = downloads
        self._due: DueQueue[JobRecord] = DueQueue()
        self._send, self._recv = anyio.create_memory_object_stream[JobRecord](0)
        self._warmup: list[str] = []  # warm-up jobs followed
        self._witnesses: set[str] = set()  # looked at now to explain a young failure
        self.polls = 0
        """Status polls sent."""

    def watch(self, job: JobRecord) -> None:
        """Start polling ``job``, whose task exists (at once if resumed)."""
        now = anyio.current_time()
        if job.submitted_at is None:
            self._schedule(job, now)
            return
        breaker = self._books.breaker
        follow = breaker.warming_up and len(self._warmup) < _FOLLOWED_WARMUP
        if follow:
            self._warmup.append(job.key)  # looked at closely: outages show within seconds
        self._planner.submitted(job.key, follow=follow)
        if breaker.state is BreakerState.PAUSED and not breaker.is_probe(job.sequence):
            self._planner.canaries.add(job.key)  # sent as the batch paused: probably failed too
        self._schedule(job, self._planner.next_look(job, now))
        self._replan(now)

    async def dispatch(self) -> None:
        """The dispatcher: hand each job to a poller when its poll is due."""
        while True:
            await self._send.send(await self._due.next_due(early=self._early))

    def _early(self, now: float) -> JobRecord | None:
        """The job most worth an early look, while the quota has room for one."""
        planner = self._planner
        if planner.room(now) < 1.0:  # before weighing every job
            return None
        best, chance = None, 0.0
        # Quota-bound: only the first planned job is weighed (not thousands, four times a second).
        for job in self._due.items(first_only=planner.quota_bound):
            p = planner.early_chance(job, now)
            if p > chance:
                best, chance = job, p
        if best is None or not planner.has_room(now, chance=chance, planned=self._due.due_before):
            return None
        return best

    async def run(self) -> None:
        """One poller: poll due jobs until the scheduler stops."""
        async for job in self._recv:
            await self._books.for_job(job, self._poll_once(job))

    def close(self) -> None:
        """Close the hand-over stream."""
        self._send.close()
        self._recv.close()

    async def _poll_once(self, job: JobRecord) -> None:
        books, planner = self._books, self._planner
        assert job.task_id is not None
        urgent = planner.is_urgent(job.key)
        if not urgent:
            await within_share(planner.share_wait)
        self.polls += 1
        job.polls += 1
        planner.note_request(anyio.current_time(), poll=True)
        # The early probes wait behind submissions like any poll: ahead, they delay a start.
        priority = Priority.URGENT if urgent else self._priority
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
            self._schedule(job, planner.next_look(job, anyio.current_time()))
            return
        cost = CREDITS_PER_GENERATION  # refund what the provider says the task did not cost
        if task.consumed_credits is not None and job.sequence is not None:
            refund = cost - min(max(task.consumed_credits, 0), cost)  # never more than it cost
            if refund:
                books.budget.refund(refund)
                job.refunded(refund)
        failure = task.failure_class
        age = None if job.submitted_at is None else now - job.submitted_at
        self._outcome(job, task_outcome(failure), now, failure, age)
        if task.succeeded:
            if self._downloads is not None:
                await self._downloads.queue(job, task)
            else:
                await books.finish(job, task=task)
            return
        failure = failure or FailureClass.UNKNOWN
        if (
            failure in self._resubmit_on
            and failure in OUTAGE_FAILURES
            and job.resubmits >= self._resubmit
            and not job.waited  # once: its own failures may make the pause
            and len(books.jobs) > 1  # another job's outcome can pause the batch
            and books.breaker.pauses(job.sequence)
        ):
            job.waited = True
            books.start(self._verdict, job, task, failure)  # not in this poller
            return
        await self._failed(job, task, failure)

    async def _verdict(self, job: JobRecord, task: Task, failure: FailureClass) -> None:
        """The last try of ``job`` failed as an outage's tasks fail, the batch running: the
        outage's failure if the batch pauses soon (the resubmission is then unspent; with few
        submissions going out, the pause can take 11 s), else its own. Wait that long for the
        verdict, or until a success submitted after it says the provider works."""
        books, breaker = self._books, self._books.breaker
        assert breaker.policy is not None  # breaker.pauses() said the pause rule is on
        with anyio.move_on_after(_VERDICT * breaker.policy.probe_wait_initial):
            await books.wait_for(
                lambda: not breaker.unexplained(job.sequence) or books.fatal is not None
            )
        await books.for_job(job, self._failed(job, task, failure))

    async def _failed(self, job: JobRecord, task: Task, failure: FailureClass) -> None:
        """Resubmit ``job`` (unspent when an outage explains its failure) or end it failed."""
        books = self._books
        # An outage explains a failure, unspent, a few times: prompts that always fail look like
        # one (they pause the batch, and are its only probes), and would probe forever.
        outage = (
            failure in OUTAGE_FAILURES
            and books.breaker.outage_explains(job.sequence)
            and job.excused < _EXCUSED
        )
        if failure in self._resubmit_on and (outage or job.resubmits < self._resubmit):
            job.resubmitting(counted=not outage)
            books.emit(JobResubmitting(key=job.key, at=anyio.current_time(), failure_class=failure))
            books.start(self._resend, job, failure in OUTAGE_FAILURES)  # not in this poller
            return
        await books.finish(job, task=task, error=TaskFailedError(task), failure_class=failure)

    def _outcome(
        self,
        job: JobRecord,
        outcome: Outcome,
        now: float,
        failure: FailureClass | None = None,
        age: float | None = None,
    ) -> None:
        """Tell the breaker how ``job``'s task ended, and act on what it says."""
        books, planner = self._books, self._planner
        transition = books.breaker.record(
            job.sequence, outcome, now=now, failure_class=failure, age=age
        )
        if outcome is Outcome.RETRYABLE and books.breaker.suspicious:
            planner.next_canary = min(planner.next_canary, now)  # the next job sent is looked at
            young = 2.0 * planner.canary_age
            if age is not None and age <= young:
                # Failed young, as in an outage: hold the submissions, and look now at the
                # newest jobs as old (failed too, the batch pauses within seconds).
                books.breaker.hold(now + young)
                self._call_witnesses(job, now, age)
        if transition is Transition.RESUMED and job.submitted_at is not None:
            self._planner.vouch(job.submitted_at, whole=True)  # the burst after needs no canary
        if transition is Transition.PAUSED:
            self.recheck_suspects(now)
        if transition is not None:
            books.course(job.key, transition, now)
        elif (
            outcome is Outcome.REFUSED
            and books.breaker.refusals >= 2
            and books.breaker.newest_good < 0
            and age
        ):
            # Refusals and no success yet: look now at the jobs as old, probably over too.
            cutoff = now - _REFUSAL_PEERS * age
            self._look_now(
                lambda other: other.submitted_at is not None and other.submitted_at <= cutoff, now
            )

    def _call_witnesses(self, failed: JobRecord, now: float, age: float) -> None:
        """Look now at the two newest other jobs sent after the newest success, ``age`` old."""
        after = self._books.breaker.newest_good
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
        self._witnesses |= chosen
        self._look_now(lambda job: job.key in chosen, now)

    def recheck_suspects(self, now: float) -> None:
        """Paused (here or by another process): the jobs sent since the oldest failure (and a
        little before) probably failed too. Look at each once old enough to show it (twice the
        youngest failure seen, else a canary's age), not minutes later as planned on its
        duration, so its resubmission is ready when the outage ends."""
        shows = self._books.breaker.healthy_age() or self._planner.canary_age
        shows = max(shows, self._planner.policy.wait_initial)
        since = self._books.breaker.failing_since - shows
        self._look_now(lambda job: (job.submitted_at or -math.inf) >= since, now, age=shows)

    def _look_now(
        self, chosen: Callable[[JobRecord], bool], now: float, *, age: float = 0.0
    ) -> None:
        """Look at the queued jobs ``chosen`` picks now (or once ``age`` old), urgently: on
        their own, and where a re-plan does not move them back."""
        for job in self._due.take(chosen):
            self._planner.canaries.add(job.key)
            self._schedule(job, max(now, (job.submitted_at or now) + age))

    def _healthy(self, job: JobRecord, now: float) -> None:
        """A job seen running: it may end the warm-up, or (a probe, a witness) the pause."""
        breaker = self._books.breaker
        if job.submitted_at is None:
            return
        if breaker.warming_up and breaker.vouch(now - job.submitted_at):
            self._planner.vouch(job.submitted_at)  # and the burst that follows needs no canary
            self._books.notify()  # the warm-up is over: the submitters go on
        if not breaker.warming_up and job.key in self._warmup and not self._planner.queued():
            # Everything sent: a warm-up job's urgent looks are no longer worth their cost.
            self._planner.followed.discard(job.key)
        witness = job.key in self._witnesses
        self._witnesses.discard(job.key)
        if not (breaker.is_probe(job.sequence) or witness):
            return
        if now - job.submitted_at >= breaker.healthy_age():
            self._outcome(job, Outcome.SUCCEEDED, now)

    async def _resend(self, job: JobRecord, after_failure: bool) -> None:
        async def resend() -> None:
            await self._submitter.send(job, after_failure=after_failure)
            if job.state is JobState.RUNNING:
                self.watch(job)

        await self._books.for_job(job, resend())

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
        if self._planner.replan_needed(now):
            self._due.reschedule_all(
                lambda job, due: (
                    due if job.submitted_at is None else self._planner.next_look(job, now)
                )
            )
