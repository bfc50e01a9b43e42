"""The batch's circuit breaker: recent outcomes in, run/pause/stop out. Pure: time is passed in.
The rules and their reasons: the batches guide, "When the provider fails systematically"."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter

from .._errors import ConfigurationError
from .._models import FailureClass


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a batch pauses or stops on a systematic failure; ``None`` turns a rule off, and
    ``SchedulerConfig(breaker=None)`` every rule (the batches guide explains the defaults).

    Args:
        pause_after_failures: Retryable failures (network, build, 5xx, error body, timeout,
            refused connection) of this many of the newest submitted jobs, with no success
            submitted after them, pause the batch.
        stop_after_refusals: This many jobs in a row refused for one reason a retry cannot
            fix (content policy, unsupported input) stop the batch.
        pause_after_unanswered: This many submissions in a row whose answer was lost (each
            may have been charged) pause the batch.
        give_up_unreachable: Seconds from the first submission after which a batch that never
            reached the server stops with the connection error.
        warmup: Submissions sent before the provider is seen to work (see ``warmup_until``).
        warmup_age: How long a task must be seen running to count as proof (``"running"``).
        warmup_until: What ends the warm-up: ``"completed"`` (a task completed; the only
            proof against refusals at the end of a generation) or ``"running"`` (a task seen
            running ``warmup_age`` seconds; protects from an outage only).
        warmup_max_wait: With ``"completed"``, a task seen running this long ends the warm-up
            too, unless a warm-up job was refused meanwhile. ``None`` (default): only an
            outcome ends it, so refused long generations cost the warm-up's tasks alone; a
            number bounds that wait but gives the guarantee up for generations longer than it.
        probe_wait_initial: Seconds from a pause to its first probe.
        probe_wait_factor: Each failed probe multiplies the wait by this.
        probe_wait_max: The longest wait between two probes.
        max_at_risk: At most this many submissions leave after the newest one seen healthy
            (a canary's early look, about 3 ``PollPolicy.wait_initial`` after it left), so an
            outage that begins at any moment costs about this many paid tasks. The price: a
            batch submits at most about this many tasks per such look, whatever the quota
            (the batches guide has the figures). ``None`` (default): bursts leave a chunk
            per look, sized to the plan's rate.

    Raises:
        ConfigurationError: On a count below 1 or a wait that is not positive.
    """

    pause_after_failures: int | None = 3
    stop_after_refusals: int | None = 10
    pause_after_unanswered: int | None = 3
    give_up_unreachable: float | None = 45.0
    warmup: int | None = 10
    warmup_age: float = 4.0
    warmup_until: Literal["running", "completed"] = "completed"
    warmup_max_wait: float | None = None
    probe_wait_initial: float = 5.0
    probe_wait_factor: float = 1.2
    probe_wait_max: float = 600.0
    max_at_risk: int | None = None

    def __post_init__(self) -> None:
        # The bounds (see Args): counts >= 1, waits > 0, factor >= 1; None turns a rule off.
        counts = (
            "pause_after_failures stop_after_refusals pause_after_unanswered warmup max_at_risk"
        )
        waits = ("give_up_unreachable", "warmup_max_wait")
        checks = [(n, getattr(self, n) is None or getattr(self, n) >= 1) for n in counts.split()]
        checks += [(n, getattr(self, n) is None or getattr(self, n) > 0) for n in waits]
        checks += [
            ("warmup_age", self.warmup_age >= 0),
            ("warmup_until", self.warmup_until in ("running", "completed")),
            ("probe_wait_initial", self.probe_wait_initial > 0),
            ("probe_wait_factor", self.probe_wait_factor >= 1),
            ("probe_wait_max", self.probe_wait_max >= self.probe_wait_initial),
        ]
        for n, ok in checks:
            if not ok:
                raise ConfigurationError(f"BreakerPolicy.{n} out of range: {getattr(self, n)!r}")


_OFF = BreakerPolicy(
    pause_after_failures=None,
    stop_after_refusals=None,
    pause_after_unanswered=None,
    give_up_unreachable=None,
)


class Outcome(enum.Enum):
    """How one submission ended, as the breaker counts it."""

    SUCCEEDED = "succeeded"  # completed, or seen running past the outage's failure age
    RETRYABLE = "retryable"  # a failure an outage explains
    REFUSED = "refused"  # a reason a retry cannot fix
    UNANSWERED = "unanswered"  # the POST's answer was lost: maybe charged
    UNREACHABLE = "unreachable"  # the POST never reached the server
    OTHER = "other"  # neither sign (unknown failure, budget refusal)


REFUSALS = frozenset({FailureClass.CONTENT_POLICY, FailureClass.INVALID_INPUT})
OUTAGE_FAILURES = frozenset({FailureClass.TRANSIENT, FailureClass.GENERATION_FAILED})


def task_outcome(failure_class: FailureClass | None) -> Outcome:
    """The breaker's reading of a finished task (``None``: it completed)."""
    if failure_class is None:
        return Outcome.SUCCEEDED
    if failure_class in OUTAGE_FAILURES:
        return Outcome.RETRYABLE
    return Outcome.REFUSED if failure_class in REFUSALS else Outcome.OTHER


class BreakerState(str, enum.Enum):
    """Whether the batch submits."""

    RUNNING = "running"
    """Submitting at full speed."""
    PAUSED = "paused"
    """An outage (or lost answers): nothing submitted but one probe at a time."""
    STOPPED = "stopped"
    """Systematic refusals, or a server never reached: nothing more is submitted."""


class Transition(enum.Enum):
    """A change of course that :meth:`Breaker.record` or :meth:`Breaker.admit` reports."""

    PAUSED = "paused"
    PROBING = "probing"
    RESUMED = "resumed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The breaker's state, as ``JobScheduler.statistics().breaker`` shows it.

    Attributes:
        state: Running, paused or stopped.
        reason: Why it paused or stopped (``"outage"``, ``"unanswered"``, ``"refused"``,
            ``"unreachable"``), None while running.
        failure_class: The failure class that stopped it (refusals), if any.
        streak: How many outcomes in a row made the decision.
        probes: Probe submissions sent since the batch started.
        next_probe_at: Clock time of the next probe while paused (None otherwise).
        unanswered: Submissions whose answer was lost (each may have been charged).
        warming_up: The warm-up holds every submission but its first ``warmup`` until the
            provider is seen working (a task completes, by default).
    """

    state: BreakerState = BreakerState.RUNNING
    reason: str | None = None
    failure_class: FailureClass | None = None
    streak: int = 0
    probes: int = 0
    next_probe_at: float | None = None
    unanswered: int = 0
    warming_up: bool = False


def refusals_text(snapshot: BreakerSnapshot) -> str | None:
    """ "the last 10 jobs were all refused for content policy" if refusals stopped the batch."""
    if snapshot.reason != "refused" or snapshot.failure_class is None:
        return None
    kind = snapshot.failure_class.value.replace("_", " ")
    return f"the last {snapshot.streak} jobs were all refused for {kind}"


_Why = tuple[str | None, FailureClass | None, int]  # reason, failure class, streak


class Breaker:
    """Decides from recent outcomes whether a batch runs, pauses and probes, or stops;
    :meth:`admit` numbers each submission (higher: sent later), outcomes report that number."""

    def __init__(self, policy: BreakerPolicy | None) -> None:
        self.policy = policy
        self._warmup = 0 if policy is None or policy.warmup is None else policy.warmup
        self.warming_up = self._warmup > 0  # until the provider is seen working
        self._sequence = self._probes = 0  # submissions admitted, and probes among them
        self.state = BreakerState.RUNNING
        self._why: _Why = (None, None, 0)  # why it paused or stopped (see BreakerSnapshot)
        self.newest_good = -1  # the newest submission that succeeded; later failures count
        self._bad: set[int] = set()  # retryable failures submitted after it
        self._refused: FailureClass | None = None  # the class of the refusals in a row
        self.refusals = 0  # and how many
        self._unanswered_run = self.unanswered = 0
        self._ended: set[int] = set()  # submissions whose outcome came before it was proven
        self._first_sent = math.nan  # the first POST's time (nan: none yet; inf: answered)
        self._probe: int | None = None  # sequence of the probe in flight
        self._wait = self._next_probe = 0.0
        self._failure_age = math.inf  # the youngest a failed task was seen failed
        self._paused_at = 0  # the last sequence sent before the pause
        self._hold_until = -math.inf  # no submission before this while a failure is unexplained
        self.failing_since = math.inf  # when the oldest unexplained failure was sent

    def admit(self, now: float) -> tuple[int | None, float | None, Transition | None]:
        """``(sequence, None, PROBING or None)`` if a POST may go now, else ``(None, when,
        None)``: ask again at ``when`` (None: after the next outcome; ``inf``: stopped)."""
        if self.state is BreakerState.STOPPED:
            return None, float("inf"), None
        if self.state is BreakerState.PAUSED:
            if self._probe is not None:
                return None, None, None
            if now < self._next_probe:
                return None, self._next_probe, None
            self._sequence += 1
            self._probe, self._probes = self._sequence, self._probes + 1
            return self._sequence, None, Transition.PROBING
        if self.warming_up and self._sequence >= self._warmup:
            return None, None, None  # the warm-up's outcomes first
        if self._bad and now < self._hold_until:
            return None, self._hold_until, None  # a young failure: its witnesses first
        if math.isnan(self._first_sent):
            self._first_sent = now
        self._sequence += 1
        return self._sequence, None, None

    def vouch(self, age: float) -> bool:
        """A warm-up task was seen running at ``age``: True if that ends the warm-up."""
        policy = self.policy
        if not self.warming_up or policy is None:
            return False
        if policy.warmup_until == "running":
            enough = policy.warmup_age
        elif self.refusals or policy.warmup_max_wait is None:
            return False  # refusals and no completion: the prompts are in doubt
        else:
            enough = policy.warmup_max_wait
        self.warming_up = age < enough
        return not self.warming_up

    @property
    def suspicious(self) -> bool:
        """Running, with a retryable failure among the newest submissions."""
        return self.state is BreakerState.RUNNING and bool(self._bad)

    def unexplained(self, sequence: int | None) -> bool:
        """Running, and ``sequence``'s failure explained by neither a pause nor a later success."""
        return self.state is BreakerState.RUNNING and sequence in self._bad

    def answered(self) -> None:
        """A POST was answered (a task id or an error)."""
        self._first_sent = math.inf
        self._unanswered_run = 0

    def hold(self, until: float) -> None:
        """A young failure among the newest (see :attr:`suspicious`): admit nothing until
        ``until`` unless a later success explains it away (its witnesses are looked at)."""
        self._hold_until = max(self._hold_until, until)

    def outage_explains(self, sequence: int | None) -> bool:
        """Whether the batch is paused, or paused after ``sequence`` went out."""
        return self.state is BreakerState.PAUSED or 0 < (sequence or 0) <= self._paused_at

    def pauses(self, sequence: int | None) -> bool:
        """Running with the pause rule on, and ``sequence``'s failure unexplained (may pause)."""
        return (self.policy or _OFF).pause_after_failures is not None and self.unexplained(sequence)

    def withholds(self, sequence: int | None) -> bool:
        """Whether an admitted ``sequence`` must not go now: stopped, or paused and no probe."""
        return self.state is not BreakerState.RUNNING and not self.is_probe(sequence)

    def is_probe(self, sequence: int | None) -> bool:
        return sequence is not None and sequence == self._probe

    def healthy_age(self) -> float:
        """How old a probe's task must be seen running to be healthy (0: once answered): twice
        the youngest failure age, at most three warm-up ages."""
        if math.isinf(self._failure_age) or self.policy is None:
            return 0.0
        return min(2.0 * self._failure_age, 3.0 * self.policy.warmup_age)

    def record(
        self,
        sequence: int | None,
        outcome: Outcome,
        *,
        now: float,
        failure_class: FailureClass | None = None,
        age: float | None = None,
    ) -> Transition | None:
        """Count how ``sequence`` ended (None: resumed; ``age``: a failed task's when seen
        failed); return the change of course, if any."""
        policy, transition = self.policy or _OFF, None
        if outcome not in (Outcome.UNREACHABLE, Outcome.OTHER):
            self._first_sent = math.inf
        if outcome is not Outcome.UNANSWERED:
            self._unanswered_run = 0
        if outcome is Outcome.SUCCEEDED:
            self.warming_up = False
            if sequence is not None and sequence > self.newest_good:
                self.newest_good = sequence
                self._bad = {s for s in self._bad if s > sequence}
            if self.state is BreakerState.PAUSED and (sequence or 0) > self._paused_at:
                transition = self._resume()  # a probe, or another submission after the pause
        elif outcome in (Outcome.RETRYABLE, Outcome.UNREACHABLE):
            if age is not None:  # the youngest age is the tightest bound of when it failed
                self._failure_age = min(self._failure_age, age)
                if outcome is Outcome.RETRYABLE and (sequence or 0) > self.newest_good:
                    self.failing_since = min(self.failing_since, now - age)
            if sequence is not None and sequence > self.newest_good:  # else a later success
                self._bad.add(sequence)  # says the provider works
                if len(self._bad) >= (policy.pause_after_failures or math.inf):
                    transition = self._pause("outage", len(self._bad), now)
        elif outcome is Outcome.UNANSWERED:
            self.unanswered += 1
            self._unanswered_run += 1
            if self._unanswered_run >= (policy.pause_after_unanswered or math.inf):
                transition = self._pause("unanswered", self._unanswered_run, now)
        if outcome is Outcome.REFUSED:
            self.refusals = self.refusals + 1 if self._refused is failure_class else 1
            self._refused = failure_class
            if self.refusals >= (policy.stop_after_refusals or math.inf):
                transition = self._stop("refused", self.refusals, failure_class)
        else:
            self._refused, self.refusals = None, 0
        give_up = policy.give_up_unreachable or math.inf  # a rule off (None): never
        if outcome is Outcome.UNREACHABLE and now - self._first_sent >= give_up:
            transition = self._stop("unreachable", len(self._bad), None)
        if self.is_probe(sequence) and self.state is BreakerState.PAUSED:
            self._probe = None  # it failed: the next one waits longer
            self._wait = min(self._wait * policy.probe_wait_factor, policy.probe_wait_max)
            self._next_probe = now + self._wait
        if self.warming_up and sequence is not None:
            self._ended.add(sequence)
            if self.state is BreakerState.RUNNING and len(self._ended) >= self._sequence:
                # Every warm-up submission ended with neither proof nor stop (unknown failures,
                # refusals of mixed reasons): another round, rather than hold the batch forever.
                self._warmup = self._sequence + (policy.warmup or 1)
        if self.state is BreakerState.RUNNING and not self._bad:
            self.failing_since = math.inf  # explained by a later success, or the outage ended
        return transition

    def _resume(self) -> Transition:
        self.state, self._why, self._probe = BreakerState.RUNNING, (None, None, 0), None
        self._unanswered_run = 0  # also when another process's probe was answered
        self._bad.clear()
        self._failure_age = self.failing_since = math.inf
        self.warming_up = False
        return Transition.RESUMED

    def _pause(self, reason: str, streak: int, now: float) -> Transition | None:
        if self.state is not BreakerState.RUNNING or self.policy is None:
            return None
        self.state, self._why = BreakerState.PAUSED, (reason, None, streak)
        self._paused_at = self._sequence  # a success of a later submission ends the pause
        self._wait = self.policy.probe_wait_initial
        self._next_probe = now + self._wait
        return Transition.PAUSED

    def _stop(self, reason: str, streak: int, failure: FailureClass | None) -> Transition | None:
        if self.state is BreakerState.STOPPED:
            return None
        self.state, self._why, self._probe = BreakerState.STOPPED, (reason, failure, streak), None
        return Transition.STOPPED

    def course(self, *, at: float, by: str, now: float) -> Course:
        """This breaker's decision at ``now``, to share with the processes of the batch: ``at``
        is the same moment on the wall clock, which they share."""
        since = None if math.isinf(self.failing_since) else at - (now - self.failing_since)
        return Course(self.state, *self._why, at, by, since)

    def adopt(self, course: Course, now: float, *, at: float) -> Transition | None:
        """Take the course another process of the batch decided; return the change, if any.
        ``at``: ``now`` on the wall clock, to place the failures it saw on this clock."""
        if self.policy is None or self.state is BreakerState.STOPPED:
            return None
        if course.state is BreakerState.STOPPED:
            return self._stop(course.reason or "refused", course.streak, course.failure_class)
        if course.state is BreakerState.PAUSED:
            transition = self._pause(course.reason or "outage", course.streak, now)
            if transition is not None:  # its failures began then: this process's jobs too
                since = course.at if course.failing_since is None else course.failing_since
                self.failing_since = min(self.failing_since, now - (at - since))
            return transition
        if self.state is BreakerState.PAUSED:  # resumed elsewhere: its probe succeeded
            return self._resume()
        return None

    def snapshot(self) -> BreakerSnapshot:
        waiting = self.state is BreakerState.PAUSED and self._probe is None
        next_probe = self._next_probe if waiting else None
        warming = self.warming_up and self.state is not BreakerState.STOPPED
        return BreakerSnapshot(
            self.state, *self._why, self._probes, next_probe, self.unanswered, warming
        )


COURSE_META = "breaker"  # the job store's meta entry that carries the course


@dataclass(frozen=True, slots=True)
class Course:
    """A breaker's decision as the processes sharing a job store exchange it: ``at`` its
    wall-clock time (the newest wins), ``by`` the deciding scheduler's id, ``failing_since``
    when (wall clock) the oldest job whose failure made a pause was sent."""

    state: BreakerState
    reason: str | None
    failure_class: FailureClass | None
    streak: int
    at: float
    by: str
    failing_since: float | None = None

    def to_text(self) -> str:
        return _COURSE.dump_json(self).decode()

    @classmethod
    def from_text(cls, text: str | None) -> Course | None:
        """The decision in ``text``; None when absent or unreadable (never raises)."""
        try:
            return _COURSE.validate_json(text) if text else None
        except ValueError:  # pydantic's ValidationError, on bad JSON as on a bad field
            return None


_COURSE = TypeAdapter(Course)
