"""When to look at each running job, blending an *idle* schedule (``wait()``'s) and a
*saturated* one (about one look per job, at the learned 95th percentile) by the spare quota
per job. Pure: time is passed in. The batches guide describes the regimes and the canaries."""

from __future__ import annotations

import bisect
import math
import random
import zlib
from collections import deque
from collections.abc import Callable
from statistics import NormalDist

from .._backoff import PollPolicy
from .._limiting.plans import RateLimit
from .._limiting.protocol import LimiterStatistics
from .breaker import Breaker, BreakerState
from .durations import DurationModel
from .jobs import JobRecord

_STANDARD = NormalDist()
_FIRST_LOOK = 0.95  # saturated: a job's first look finds it done this often
_EXPLORE_ONE_IN = 16  # saturated: one job in this many is first looked at near the median
_LATER_LOOK = 0.9  # saturated: and each later one, given that it was still running
_TAIL_STEP = 0.08  # saturated: never more than 8 % of the age between two looks
_BULK = 0.6  # saturated: past this quantile a job is in the tail
_ENDING_JOBS = 5  # saturated: a batch is ending once this few jobs are left
_ENDING_SHARE = 0.05  # or this share of the jobs held and finished lately
_PROBE_GROWTH = 2.0  # probes: each look at twice the previous age
_FOLLOW_GROWTH = 1.5  # the breaker's followed jobs: each look at 1.5 x the previous age
_PROBES = 3  # probe jobs at a time while the model is not confident
_CONFIDENT = 4  # completions after which the model is trusted
_SPARE = 0.8  # the part of the quota the planner counts on
_SATURATED_ALLOWANCE = 0.2  # polls per job per wait_initial at and below which: saturated
_REPLAN_MEDIAN = 0.1  # re-plan queued looks when the median moved by 10 % (in log terms)
_REPLAN_SIGMA = 0.1  # or the spread by 0.1
_REPLAN_WEIGHT = 0.25  # or the regime by a quarter of the way
_LIKELY = 0.95  # a look not due yet is taken early once a confident model says it succeeds
_WORTH = 0.01  # spare quota: a look due on the idle schedule is taken if it succeeds this often
_SAMPLE_EVERY = 0.25  # seconds between two samples of the limiter's counters
_SHARE_TICK = 0.1  # share_wait: how often to ask again, in wait_initial, for an overdue look
_CANARY_AGE = 3.0  # a canary's one early look, in wait_initial: an outage's failure shows by then
_CANARY_SHARE = 0.005  # the share of the quota spent on canaries' early looks
_CANARY_EVERY = 20  # and at least one POST in this many (a small quota's share is minutes)
_CANARY_MIN_GAP = 5.0  # but no closer than this many wait_initial
_BURST = 0.5  # POSTs leaving closer than this share of the plan's interval: a burst
_VOUCHED = 2.0  # a canary seen healthy vouches for bursts this long after it left (canary ages)
_CANARY_TIMEOUT = 3.0  # a burst waits at most this long for its canary's look (canary ages)
_BIG_BURST = 20  # requests waiting for permits that make a burst big (see leaving)
_VOUCHES = 10  # POSTs of a burst one healthy canary lets out at the least
_CHUNK_RATE = 2.0  # and at the most: twice what the plan's rate sends in a canary's age
_HOLD_SHARE = 0.1  # bursts wait for a canary only if its age is at most this share of the period


class PollPlanner:
    """Decides when the scheduler looks at each running job, and learns from each look.
    ``statistics``: the limiter's counters (traffic not the planner's own); ``unfinished``:
    the jobs held, queued or running (default: those seen submitted)."""

    def __init__(
        self,
        limit: RateLimit,
        policy: PollPolicy,
        model: DurationModel,
        rng: random.Random,
        *,
        statistics: Callable[[], LimiterStatistics] | None = None,
        unfinished: Callable[[], int] | None = None,
    ) -> None:
        self.limit = limit
        self._window = limit.period / 4  # the spare quota is counted per quarter period
        self._budget = _SPARE * limit.per_second * self._window  # requests counted on in one
        self.policy, self.model, self._rng, self._statistics = policy, model, rng, statistics
        self._recent: deque[float] = deque()  # every request noted, for the last period
        self._booked: list[float] = []  # when the urgent looks planned will go, sorted
        self._polls: deque[float] = deque()  # the polls among them
        self._samples: deque[tuple[float, int]] = deque()  # (time, permits granted)
        self._finished: deque[float] = deque()  # when jobs finished, lately
        self._running = 0
        self._unfinished = unfinished or (lambda: self._running)
        self.probes: set[str] = set()  # looked at on a doubling schedule until confident
        self.followed: set[str] = set()  # probes, warm-up jobs: looked at closely to the end
        self.canaries: set[str] = set()  # one early look each, to see an outage soon
        self._canary_out: tuple[str, float] | None = None  # the canary's key, when it left
        self._holding = False  # a burst waits for the canary's look
        self.vouched = -math.inf  # when the newest task seen healthy (a canary's) left
        self._vouches = 0.0  # burst POSTs let out on its word
        self._seen_healthy = -math.inf  # and when it was seen so
        self._last_left = -math.inf  # when the newest POST left
        self._at_risk: deque[float] = deque()  # when the POSTs since the vouched one left
        self._uncapped = False  # a resume vouched for every POST until the next canary's look
        self.capped = False  # max_at_risk has held a POST back
        self._cap_holds = False  # the hold now is max_at_risk's (not a burst's chunk)
        self.canary_age = _CANARY_AGE * policy.wait_initial  # a canary's look, after its POST
        self._chunk = max(_VOUCHES, _CHUNK_RATE * limit.per_second * self.canary_age)  # leaving
        self._canary_gap = max(2.0 * policy.wait_initial, 1.0 / (_CANARY_SHARE * limit.per_second))
        self.next_canary = -math.inf  # when the next POST out is a canary (a failure: now)
        self._since_canary, self._last_canary = 0, -math.inf  # submissions since it, and when
        self._ending = True  # few jobs left (or none yet): their last looks decide the end
        self._planned = (model.mu, model.sigma, False, 0.0, True)
        self._next_spare = -math.inf  # no look on spare quota before this time (pacing)
        self.quota_bound = False  # submissions waited for the quota: looks only when likely

    def note_request(self, now: float, *, poll: bool = False) -> None:
        """Count one request sent at ``now`` (``poll``: one of this planner's looks)."""
        horizon = now - self.limit.period
        for times in (self._recent, self._polls) if poll else (self._recent,):
            times.append(now)
            while times and times[0] <= horizon:
                times.popleft()

    def book(self, when: float) -> None:
        """An urgent look (a canary's, a followed job's) will be sent at ``when``."""
        bisect.insort(self._booked, when)

    def unbook(self, when: float) -> None:
        """The urgent look booked for ``when`` is being sent, or will not be."""
        index = bisect.bisect_left(self._booked, when)
        if index < len(self._booked) and self._booked[index] == when:
            del self._booked[index]

    def share_wait(self, now: float) -> float:
        """Seconds until the period's requests and next period's urgent looks leave a permit."""
        recent, horizon = self._recent, now - self.limit.period
        while recent and recent[0] <= horizon:
            recent.popleft()
        ahead = bisect.bisect_left(self._booked, now + self.limit.period)
        if ahead == 0 or len(recent) + ahead < self.limit.requests:
            return 0.0
        waits = [recent[0] - horizon] if recent else []
        if self._booked and self._booked[0] > now:
            waits.append(self._booked[0] - now)
        return min([*waits, _SHARE_TICK * max(self.policy.wait_initial, 1e-3)])

    def requests_since(self, since: float) -> int:
        """Requests noted after ``since`` (within the last period)."""
        return len(self._recent) - bisect.bisect_right(self._recent, since)

    def allowance(self, now: float) -> float:
        """Polls per ``wait_initial`` each job could have from the spare quota."""
        window = self._window
        own = len(self._polls) - bisect.bisect_right(self._polls, now - window)
        others = max(0.0, self._total_since(now) - own) / window
        spare = max(0.0, _SPARE * self.limit.per_second - others)
        horizon = max(self.model.median, self.policy.wait_initial)
        while self._finished and self._finished[0] < now - horizon:
            self._finished.popleft()
        held = self._unfinished()
        jobs = max(1, held + len(self._finished))
        self._ending = held <= max(_ENDING_JOBS, _ENDING_SHARE * jobs)
        return spare * max(self.policy.wait_initial, 1e-3) / jobs

    def _total_since(self, now: float) -> float:
        window = self._window
        if self._statistics is None:
            return float(self.requests_since(now - window))
        samples = self._samples
        if not samples or now - samples[-1][0] >= _SAMPLE_EVERY:
            samples.append((now, self._statistics().permits_granted))
        while len(samples) > 2 and samples[1][0] <= now - window:
            samples.popleft()
        (then, before), (_, after) = samples[0], samples[-1]
        span = now - then
        return (after - before) * (window / span) if span > 0 else 0.0

    def weight(self, now: float) -> float:
        """How saturated the schedule is: 0 idle, 1 saturated, log-linear in between."""
        allowance = self.allowance(now)
        if allowance >= 1.0:
            return 0.0
        if allowance <= _SATURATED_ALLOWANCE:
            return 1.0
        return math.log(1.0 / allowance) / math.log(1.0 / _SATURATED_ALLOWANCE)

    def _enlist(self, key: str) -> None:
        """Make a job a probe while the model is not confident and probes are few."""
        if self.model.count < _CONFIDENT and len(self.probes) < _PROBES:
            self.probes.add(key)

    def submitted(self, key: str, *, follow: bool = False) -> None:
        """A job's task was created: maybe a probe, followed (``follow``) or the canary."""
        self._running += 1
        self._enlist(key)
        out = self._canary_out
        if follow:
            self.followed.add(key)
        elif out is not None and out[0] == key:
            self.canaries.add(key)

    def leaving(self, key: str, now: float, breaker: Breaker) -> bool:
        """A job's POST has its permit: True to hold it back while a burst waits for its
        canary's look; else it leaves, as the canary if one is due (see the batches guide)."""
        out = self._canary_out
        if out is not None and out[0] == key:
            return False  # the canary's own retry
        burst = now - self._last_left < _BURST * self.limit.interval
        if (
            breaker.policy is None
            or breaker.warming_up
            or breaker.state is not BreakerState.RUNNING
            or key in self.followed
        ):
            self._last_left = now
            return False
        if out is not None and now >= out[1] + _CANARY_TIMEOUT * self.canary_age:
            self._canary_out = out = None  # its look never came: hold nothing back on it
            self._holding = False
        # BreakerPolicy.max_at_risk: no more POSTs out than that after the newest vouched for
        # (a resume vouches for all until a canary's look); a canary leaves every third.
        at_risk, cap = self._at_risk, breaker.policy.max_at_risk
        if cap is not None:
            while at_risk and at_risk[0] <= self.vouched:
                at_risk.popleft()
            if self._uncapped:
                cap = None
            elif out is not None and len(at_risk) >= cap:
                self._holding = self.capped = self._cap_holds = True
                return True
        vouched = now - self.vouched < _VOUCHED * self.canary_age
        # A big burst: only a canary seen healthy this very moment vouches for it.
        stats = self._statistics
        if vouched and burst and stats is not None and stats().waiting >= _BIG_BURST:
            vouched = now - self._seen_healthy <= self.policy.wait_initial
        # A look shows the provider as it was when the canary left: one look lets out a chunk
        # of the burst, the next chunk's canary among it (a probe's burst goes whole).
        vouched = vouched and not (burst and self._vouches >= self._chunk)
        # A hold delays the burst by a canary's age: only if that is a small share of the period.
        holds = burst and not vouched and self.canary_age <= _HOLD_SHARE * self.limit.period
        if out is not None and (self._holding or holds):
            self._cap_holds = self._cap_holds and self._holding
            self._holding = True
            return True
        self._last_left = now
        if breaker.policy.max_at_risk is not None:
            at_risk.append(now)
        self._since_canary += 1
        self._vouches += burst and vouched
        spaced = now >= self._last_canary + _CANARY_MIN_GAP * self.policy.wait_initial
        if not (
            now >= self.next_canary
            or (self._since_canary >= _CANARY_EVERY and spaced)
            or self._holding
            or (burst and not vouched and out is None)
            or (burst and out is None and self._vouches >= self._chunk // 3)  # the next chunk's
            or (cap is not None and out is None and len(at_risk) >= max(1, cap // 3))
        ):
            return False
        self._since_canary, self._last_canary = 0, now
        gap = self.policy.wait_initial if breaker.suspicious else self._canary_gap
        self.next_canary = now + gap
        self._canary_out = (key, now)
        return False

    @property
    def cap_holding(self) -> bool:
        """Whether ``BreakerPolicy.max_at_risk`` holds submissions back now, until a look."""
        return self._holding and self._cap_holds and self._canary_out is not None

    def holding(self, now: float) -> float | None:
        """Until when at most a burst waits for the canary's look (None: it does not)."""
        out = self._canary_out
        if not self._holding or out is None:
            return None
        until = out[1] + _CANARY_TIMEOUT * self.canary_age
        return until if now < until else None

    def _canary_answered(self, key: str, *, healthy: bool, now: float = -math.inf) -> None:
        """The canary's look came back: healthy, the burst goes; else the next POST is one."""
        out = self._canary_out
        if out is None or out[0] != key:
            return
        self._canary_out = None
        if healthy:
            self.vouch(out[1])
            self._seen_healthy = now
        self._holding = not healthy

    def vouch(self, at: float, *, whole: bool = False) -> None:
        """A task created at ``at`` was seen healthy: a burst soon after needs no canary
        (``whole``: it goes whole, a probe having just ended a pause)."""
        if at >= self.vouched:
            self.vouched, self._vouches = at, -math.inf if whole else 0.0
            self._uncapped = whole
        self._holding = False

    def is_urgent(self, key: str) -> bool:
        """Whether a job is a canary or followed (looked at on its own, not queued)."""
        return key in self.canaries or key in self.followed

    def looked(self, job: JobRecord, *, now: float, finished: bool, completed: bool = True) -> None:
        """Learn from one answer: ``finished`` or still running at ``now`` (``job.last_look``:
        the previous look that found it running); only a completion teaches durations."""
        key, submitted_at, last_look = job.key, job.submitted_at, job.last_look
        if submitted_at is None:
            if finished:
                self._finished.append(now)
            return
        self.canaries.discard(key)
        self._canary_answered(key, healthy=not finished or completed, now=now)
        previous = last_look - submitted_at if last_look > submitted_at else None
        if not finished:
            self.model.observe_running(now - submitted_at, previous=previous)
            self._enlist(key)
            return
        self.gone(job)
        self._finished.append(now)
        if completed:
            self.model.observe(previous or 0.0, now - submitted_at)
        if self.model.count >= _CONFIDENT:
            self.probes.clear()

    def gone(self, job: JobRecord) -> None:
        """Forget a job that left without a completion to learn from (or before one)."""
        self._running = max(0, self._running - 1)
        self._canary_answered(job.key, healthy=False)
        for keys in (self.probes, self.followed, self.canaries):
            keys.discard(job.key)
        if job.submitted_at is not None and job.last_look > job.submitted_at:
            self.model.forget_running(job.last_look - job.submitted_at)

    def replan_needed(self, now: float) -> bool:
        """True once each time the model or the regime moved enough to re-plan queued looks."""
        mu, sigma, confident, planned, ending = self._planned
        model, weight = self.model, self.weight(now)  # it also decides whether the batch ends
        if (
            abs(model.mu - mu) < _REPLAN_MEDIAN
            and abs(model.sigma - sigma) < _REPLAN_SIGMA
            and confident == (model.count >= _CONFIDENT)
            and abs(weight - planned) < _REPLAN_WEIGHT
            and ending == self._ending
        ):
            return False
        self._planned = (model.mu, model.sigma, model.count >= _CONFIDENT, weight, self._ending)
        return True

    def queued(self) -> int:
        """Jobs the caller holds that have no task yet (submissions still to send)."""
        return max(0, self._unfinished() - self._running)

    def room(self, now: float) -> float:
        """Requests the quota has room for in this quarter period (0 while any wait for it)."""
        submissions = self.queued()
        if submissions == 0 and self._running == 0:
            self.quota_bound = False
        if self._statistics is not None and self._statistics().waiting > 0:
            self.quota_bound = self.quota_bound or submissions > 0  # waited: quota-bound to the end
            return 0.0
        return max(0.0, self._budget - self.requests_since(now - self._window))

    def has_room(self, now: float, *, chance: float, planned: Callable[[float], int]) -> bool:
        """Whether to take now an early look that finds a job done with ``chance``: a likely
        one needs room in the last window; any other, paced spare room in the next one."""
        room = self.room(now)
        if chance >= _LIKELY:
            return room >= 1.0
        if now < self._next_spare or room - self.queued() - planned(now + self._window) < 1.0:
            return False
        self._next_spare = now + self._window / self._budget
        return True

    def early_chance(self, job: JobRecord, now: float) -> float:
        """The chance a look now finds a job done if worth an early look, else 0."""
        submitted_at, last_look = job.submitted_at, job.last_look
        if submitted_at is None or self.is_urgent(job.key):
            return 0.0
        age = max(0.0, last_look - submitted_at)
        seen = self.model.cdf(age)
        if seen >= 1.0:
            return 1.0
        chance = max(1e-9, (self.model.cdf(now - submitted_at) - seen) / (1.0 - seen))
        due = now >= last_look + self._idle_gap(age)
        if not self.quota_bound and self._planned[3] > 0.0 and due:
            return chance if chance >= _WORTH else 0.0  # saturated (in part), but due if idle
        # Not due yet, but a confident model says the look very probably succeeds.
        return chance if self.model.count >= _CONFIDENT and chance >= _LIKELY else 0.0

    def next_look(self, job: JobRecord, now: float, earliest: float | None = None) -> float:
        """When to look at a job next, not before ``earliest`` (default ``now``)."""
        policy, key, submitted_at, last_look = self.policy, job.key, job.submitted_at, job.last_look
        earliest = now if earliest is None else earliest
        if submitted_at is None:  # age unknown: look at once, then on the idle floor
            return earliest if job.polls == 0 else earliest + self._jitter(policy.wait_initial)
        age = max(0.0, last_look - submitted_at)
        if age <= 0.0:
            self._enlist(key)  # a probe finished early: this one, not yet looked at, follows
        if key in self.canaries and age <= 0.0:  # one look, when an outage's failure shows
            return max(earliest, last_look + self._jitter(self.canary_age))
        weight, gap = self.weight(now), self._idle_gap(age)
        if weight > 0.0:
            gap = gap ** (1 - weight) * self._saturated_gap(key, age) ** weight
        return max(earliest, last_look + self._jitter(gap))

    def _idle_gap(self, age: float) -> float:
        policy = self.policy
        if age <= 0.0:
            return policy.wait_initial
        return min(max(policy.wait_initial, (policy.wait_factor - 1.0) * age), policy.wait_max)

    def _saturated_gap(self, key: str, age: float) -> float:
        floor = max(self.policy.wait_initial, 1e-3)
        if key in self.followed:
            return max(floor, (_FOLLOW_GROWTH - 1.0) * age)
        if key in self.probes:
            return max(floor, (_PROBE_GROWTH - 1.0) * age)
        model = self.model
        if age <= 0.0:
            explore = zlib.crc32(key.encode()) % _EXPLORE_ONE_IN == 0  # where the bulk lies
            return max(floor, model.quantile(0.5 if explore else _FIRST_LOOK))
        # F(t_next) = F(age) + p (1 - F(age)): in survival terms S(t_next) = (1 - p) S(age).
        survival, step = (1.0 - _LATER_LOOK) * model.survival(age), math.inf
        if survival > 1e-300:
            target = model.mu - model.sigma * _STANDARD.inv_cdf(min(survival, 1 - 1e-12))
            step = math.exp(target) - age
        if not self._ending:
            return max(floor, step)
        # The last few jobs decide when the batch ends: at most 8 % of the age between looks,
        # except for a job still in the bulk (looked at near the median).
        tail = _TAIL_STEP * age
        if age < model.quantile(_BULK):
            tail = max(tail, model.quantile(_FIRST_LOOK) - age)
        return max(floor, min(step, tail))

    def _jitter(self, gap: float) -> float:
        # Only later: a look planned at the 95th percentile must not slip to the 93rd.
        return gap * (1.0 + self.policy.wait_jitter * self._rng.random())
