"""What the server's answers say about the quota: the one feedback interpreter. Pure, no I/O.

Both limiters keep one :class:`Estimate`, read every answer into it (:func:`read_answer`), take
every permit from it (:func:`grant`) and ask :func:`ready_at` when the next may go. The model
(``docs/guides/rate-limits.md``): the plan's rate is the ceiling; the server holds a bucket of
``size`` (one more than the largest ``Remaining`` seen: a window's is the quota, a leaky
bucket's its burst), which an answer's ``Remaining`` says it held when the request arrived, so
requests in flight at a steady rate are not a burst; a ``Remaining`` lower than ours explain is
someone else's rate (a bucket) or count (a window); a 429 pauses everyone and halves the rate
and size believed, which grow back with each answer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .plans import RateLimit

DEFAULT_HEADROOM = 0.02
"""Fraction of the plan's interval added between permits, for the jitter between a permit and
the moment the server counts its request: the pace is 98 % of the quota."""

LOWEST_FACTOR = 1 / 16
"""The pace never drops below this share of the plan's after 429s or others' use."""
STALL_WAIT = 1.0
"""Seconds a server that stopped answering is waited for before more permits go."""
RECOVERY = 1 / 32
"""Share of the plan's pace regained with each answer that is not a 429."""


@dataclass(slots=True)
class Estimate:
    """What a limiter believes of the server's quota, and its own pacing bucket (a GCRA).

    Updated in place (a copy per answer cost a tenth of a request's time); :meth:`copy` for a
    snapshot.

    Attributes:
        limit: The plan's quota: its rate is the ceiling.
        headroom: Fraction of the interval added between permits.
        size: Requests the server's bucket is believed to hold when full.
        ceiling: The largest size believed (halved by a 429, regained a step per answer).
        factor: Share of the plan's pace believed (halved by a 429, regained per answer).
        others: Requests per second other users of the token are seen to take.
        tat: When our pacing bucket is full again (GCRA's theoretical arrival time).
        hold_until: No permit before this clock time (a 429's pause, a full window's reset).
        serial: The permit of the newest answer that said ``Remaining`` (0: none yet).
        reported_at: That permit's grant time.
        reported: That answer's ``Remaining``.
        in_order: Whether that answer's request came with none granted close to it (so it
            can be compared with the next).
        latency: Smoothed time from permit to answer, in seconds (RFC 6298's estimator).
        jitter: Smoothed mean deviation of that time.
        answered_at: When the newest answer was read.
    """

    limit: RateLimit
    headroom: float = DEFAULT_HEADROOM
    size: float = 1.0
    ceiling: float = math.inf
    factor: float = 1.0
    others: float = 0.0
    tat: float = -math.inf
    hold_until: float = -math.inf
    serial: int = 0
    reported_at: float = -math.inf
    reported: int = 0
    in_order: bool = False
    latency: float | None = None
    jitter: float = 0.0
    answered_at: float = -math.inf

    def copy(self) -> Estimate:
        """A snapshot that later updates of this estimate leave alone."""
        return copy.copy(self)

    @property
    def plan_pace(self) -> float:
        """The ceiling: the plan's rate less the headroom, in permits per second."""
        return self.limit.per_second / (1.0 + self.headroom)

    @property
    def pace(self) -> float:
        """Permits per second now: the plan's pace, less 429s' halvings and others' share (a
        window's others take its :attr:`places` instead)."""
        return _pace(self, self.others)

    @property
    def shared_pace(self) -> float:
        """The pace of a schedule without bursts or places (Redis's): less others' share
        whatever the server's kind."""
        plan = self.plan_pace
        return max(plan * LOWEST_FACTOR, plan * self.factor - max(0.0, self.others))

    @property
    def overtaking(self) -> float:
        """Seconds within which two permits may reach the server in either order: an interval
        of the plan, or the spread of the answers' latencies (four mean deviations) if more."""
        return max(self.limit.interval, 4.0 * self.jitter)

    @property
    def slowest(self) -> float:
        """The longest latency the answers explain: their mean and four deviations (RFC 6298's
        timeout); ``inf`` before any answer."""
        return math.inf if self.latency is None else self.latency + 4.0 * self.jitter

    @property
    def late_after(self) -> float:
        """Seconds after its grant an unanswered request is overdue: :attr:`slowest` and an
        interval of the plan."""
        return self.slowest + self.limit.interval

    @property
    def is_window(self) -> bool:
        """Whether the bucket holds half the quota or more: a window's count, not a burst."""
        return 2 * self.size > self.limit.requests

    @property
    def burst(self) -> float:
        """Permits the pacing bucket may grant at once: the size, less one kept for jitter."""
        return self.size - (1.0 if self.size >= 3 else 0.0)

    @property
    def places(self) -> int:
        """Requests of ours any window may hold: the quota less others' part, and no more than
        the server was seen to hold."""
        if not self.is_window:
            return self.limit.requests
        taken = math.ceil(max(0.0, self.others) * self.limit.period)
        return max(1, min(self.limit.requests - taken, math.floor(self.size)))


def _pace(estimate: Estimate, others: float) -> float:
    """:attr:`Estimate.pace` were others to take ``others`` requests a second."""
    plan = estimate.plan_pace
    taken = 0.0 if estimate.is_window else max(0.0, others)
    return max(plan * LOWEST_FACTOR, plan * estimate.factor - taken)


@dataclass(slots=True)
class Answer:
    """One answer, with what the limiter knows of the permits around it.

    Attributes:
        serial: The permit's serial.
        granted_at: The permit's grant time.
        now: When the answer was read.
        status_code: The HTTP status.
        remaining: ``X-RateLimit-Remaining`` (None: not given).
        reset_after: Seconds until the window frees quota (None: not given).
        retry_after: ``Retry-After`` in seconds (None: not given).
        grants_between: Grant times of our permits after the previous report's, up to and
            including this one (None: unknown, e.g. other processes share the schedule).
        own_in_window: Our permits in the period that ended with this one (None: unknown).
        own_at_most: Our permits the server may have counted with this one, a burst it
            counted late included (None: as many as :attr:`own_in_window`).
        later_grants: Grant times of our permits after this one (not in its count).
        earlier_in_flight: Grant times of our unanswered permits before this one: those
            granted close to it, held up as long as it or overdue may reach the server after.
        overlapped: Other answers were read while this request was on its way, so it can
            lower the estimate but not raise it.
    """

    serial: int
    granted_at: float
    now: float
    status_code: int
    remaining: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None
    grants_between: Sequence[float] | None = None
    earlier_in_flight: Sequence[float] = ()
    own_in_window: int | None = None
    own_at_most: int | None = None
    later_grants: Sequence[float] = ()
    overlapped: bool = False


def ready_at(estimate: Estimate, *, now: float) -> float:
    """The earliest clock time the next permit may be granted (``now`` or later)."""
    emission = 1.0 / estimate.pace
    return max(now, estimate.hold_until, estimate.tat - (estimate.burst - 1.0) * emission)


def held_until(estimate: Estimate, *, unanswered: int, oldest: float, now: float) -> float:
    """When requests still on their way let the next permit go (``now``: at once).

    A stalled server counts what reached it meanwhile together, in one burst. So while no
    answer has come for longer than the latency explains, and the oldest of our ``unanswered``
    permits (granted at ``oldest``) is as late, no more than the bucket holds are let out: for
    :data:`STALL_WAIT` at most (beyond it, the requests are taken as lost or cancelled).
    """
    if unanswered < estimate.size or estimate.is_window:
        return now
    late = estimate.late_after
    silent_since = estimate.answered_at + late
    if now - oldest <= late or now <= silent_since:
        return now
    return max(now, silent_since + STALL_WAIT)


def grant(estimate: Estimate, *, now: float) -> None:
    """A permit was granted at ``now``: it takes one request from the pacing bucket."""
    estimate.tat = max(estimate.tat, now) + 1.0 / estimate.pace


def give_back(estimate: Estimate) -> None:
    """A permit's request never reached the server: its room goes back to the bucket."""
    estimate.tat -= 1.0 / estimate.pace


def rate_limited_pause(
    limit: RateLimit,
    pace: float,
    *,
    retry_after: float | None,
    reset_after: float | None,
    default: float | None = None,
) -> float:
    """How long a 429 stops every sender: ``Retry-After``, else the reset, else ``default`` (one
    period: the only wait that clears any window). At most a period (a longer hint is a skewed
    clock) and at least an interval (a zero hint must not make one 429 per interval).

    Example:
        >>> rate_limited_pause(RateLimit(100, 60.0), 1.0, retry_after=None, reset_after=None)
        60.0
    """
    hint = retry_after if retry_after is not None else reset_after
    if hint is None:
        hint = limit.period if default is None else default
    return max(min(hint, limit.period), 1.0 / pace)


def window_tolerance(estimate: Estimate) -> int:
    """Requests a window server may count beyond ours (by grant time) with no one else on the
    token: those the headroom's and the latencies' jitter put across a window's edge, and two."""
    limit = estimate.limit
    spread = 4.0 * estimate.jitter * limit.per_second
    return math.ceil(estimate.headroom * limit.requests + spread) + 2


def _timed(estimate: Estimate, answer: Answer) -> tuple[float, float]:
    """The smoothed latency and jitter with this answer's (gains 1/8 and 1/4, as RFC 6298)."""
    latency = max(0.0, answer.now - answer.granted_at)
    if estimate.latency is None:
        return latency, estimate.jitter
    jitter = estimate.jitter + 0.25 * (abs(estimate.latency - latency) - estimate.jitter)
    return estimate.latency + 0.125 * (latency - estimate.latency), jitter


def smoothing(limit: RateLimit) -> float:
    """Seconds over which a bucket's shortfalls are averaged into others' rate: two, and 30
    intervals at least, so that ``Remaining``'s rounding moves it by one request at most."""
    return max(2.0, 30.0 * limit.interval)


def _refilled_tat(
    estimate: Estimate,
    answer: Answer,
    remaining: int,
    arrived: float,
    close: int,
    *,
    pace: float | None = None,
) -> float:
    """Our bucket as the server's word sets it: it held ``remaining`` when the request arrived
    (``arrived``), and every permit granted since comes out of it."""
    emission = 1.0 / (estimate.pace if pace is None else pace)
    # A window's places already hold every request in flight, whatever order they arrive in.
    if estimate.is_window:
        close = 0
    tat = arrived + (estimate.size - remaining + close) * emission
    later = answer.later_grants
    if not later:
        return tat
    last = later[-1]
    # One step per request in flight, on every answer: kept to plain comparisons.
    for index, when in enumerate(later):
        if tat >= last:  # grants in time order: the rest each add one emission
            return tat + (len(later) - index) * emission
        if when > tat:
            tat = when
        tat += emission
    return tat


def _spaced(estimate: Estimate, grants: Sequence[float]) -> bool:
    """Whether the grants since the last report went out at least an interval apart."""
    interval = estimate.limit.interval
    previous = estimate.reported_at
    for when in grants:
        if when - previous < interval:
            return False
        previous = when
    return True


def _shortfall(estimate: Estimate, grants: Sequence[float], remaining: int) -> float:
    """Requests the server counted beyond ours since the previous report: what our own grants
    (replayed through a bucket of the believed size at the plan's rate) leave, less what it
    says it holds."""
    rate = estimate.limit.per_second
    tat = estimate.reported_at + (estimate.size - estimate.reported) / rate
    for when in grants:
        tat = max(tat, when) + 1.0 / rate
    expected = estimate.size - (tat - grants[-1]) * rate
    return expected - remaining


def read_answer(est: Estimate, answer: Answer, *, default_pause: float | None = None) -> None:
    """Read one answer into the estimate, in place; ``default_pause`` after a 429 that names no
    time (None: one period)."""
    limit = est.limit
    # A bucket's request arrived as late as its answer is later than the latencies explain
    # (held up on its way: a stalled server counts it late, with those behind it). The permits
    # before it that may reach the server after it: granted close to it, held up as long, or
    # overdue. (A window's places hold whatever is on its way.)
    late = overdue = -math.inf
    if not est.is_window:
        late = answer.now - answer.granted_at - est.slowest
        overdue = answer.now - est.late_after
    late = max(0.0, late)
    arrived = answer.granted_at + late
    overtaking = est.overtaking
    since = answer.granted_at - max(overtaking, late)
    close = sum(when > since or when < overdue for when in answer.earlier_in_flight)
    est.latency, est.jitter = _timed(est, answer)
    est.answered_at = max(est.answered_at, answer.now)
    if answer.status_code == 429:
        pause = rate_limited_pause(
            limit,
            est.pace,
            retry_after=answer.retry_after,
            reset_after=answer.reset_after,
            default=default_pause,
        )
        hold = max(est.hold_until, answer.now + pause)
        ceiling = max(1.0, math.floor(est.size / 2))
        est.factor = max(LOWEST_FACTOR, est.factor / 2)
        est.ceiling = ceiling
        est.size = min(est.size, ceiling)
        est.hold_until = hold
        # The bucket was empty; the server's hint says when it has room again.
        est.tat = max(est.tat, hold + (est.burst - 1.0) / est.pace)
        return
    remaining = answer.remaining
    ceiling = min(float(limit.requests), est.ceiling + 1.0)
    if remaining is not None:
        est.size = max(est.size, min(ceiling, float(remaining) + 1.0, float(limit.requests)))
    est.factor = min(1.0, est.factor + RECOVERY)
    est.ceiling = ceiling
    if remaining is None:
        return
    if answer.serial <= est.serial:
        # Older than the newest word read, it may have been counted after it: lower only.
        est.tat = max(est.tat, _refilled_tat(est, answer, remaining, arrived, close))
        return
    before_tat = est.tat
    others = est.others
    hold = est.hold_until
    # Only an answer to a request with none granted close to it says what others did (the
    # rest say what order ours arrived in).
    later = answer.later_grants
    settled = close == 0 and (not later or later[0] - answer.granted_at >= overtaking)
    unexplained = 0
    told = True  # whether the answer says how many others took (none, or so many)
    if answer.own_in_window is not None:
        count = limit.requests - answer.own_in_window - remaining
        tolerance = window_tolerance(est)
        if count > tolerance:
            # Others only if even every request of ours the server may have counted (a burst
            # counted late included) leaves too many; then the count by grant time says how many.
            at_most = answer.own_at_most
            surely = count if at_most is None else limit.requests - at_most - remaining
            unexplained = count if surely > tolerance else 0
            told = bool(unexplained)
    if est.is_window and settled and told:
        others = unexplained / limit.period
    # A full window that ours do not fill refills at its reset: everyone waits for it. Without
    # our own requests to model a bucket by, an unexplained full one is taken for a window.
    full = remaining == 0 and answer.reset_after is not None
    if full and (
        (est.is_window and (unexplained or answer.own_in_window is None))
        or (answer.grants_between is None and unexplained)
    ):
        assert answer.reset_after is not None
        hold = max(hold, answer.now + min(answer.reset_after, limit.period))
    grants = answer.grants_between
    # A bucket's others are read off two answers in a row to requests sent one at a time at
    # our pace (in a burst, the difference says more of the order they arrived in).
    paced = bool(grants) and settled and est.in_order
    if grants and paced and not est.is_window and _spaced(est, grants):
        elapsed = answer.granted_at - est.reported_at
        if elapsed > 0:
            weight = min(1.0, elapsed / smoothing(limit))
            others += weight * (_shortfall(est, grants, remaining) / elapsed - others)
    # The server's word replaces our bucket.
    pace = _pace(est, others)
    tat = _refilled_tat(est, answer, remaining, arrived, close, pace=pace)
    if est.is_window and hold > answer.now:
        # A full window: nothing until its reset, then its quota less what is on its way.
        taken = len(answer.later_grants) + close
        tat = hold + taken / pace
    if answer.overlapped:
        tat = max(tat, before_tat)
    est.others = others
    est.hold_until = hold
    est.serial = answer.serial
    est.reported_at = answer.granted_at
    est.reported = remaining
    est.in_order = settled
    est.tat = tat
