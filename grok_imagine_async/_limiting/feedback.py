"""The feedback interpreter of both limiters, pure: an :class:`Estimate` that reads every answer
(:func:`read_answer`), gives every permit (:func:`grant`) and says when the next may go
(:func:`ready_at`). The model is in ``docs/guides/rate-limits.md``."""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

from .plans import RateLimit

DEFAULT_HEADROOM = 0.02  # fraction of the interval added between permits: 98 % of the quota
LOWEST_FACTOR = 1 / 16  # the least share of the plan's pace, whatever 429s or others' use
STALL_WAIT = 1.0  # seconds a server that stopped answering is waited for before more permits
RECOVERY = 1 / 32  # share of the plan's pace regained with each answer that is not a 429


@dataclass(slots=True)
class Estimate:
    """What a limiter believes of the server's quota, and its own pacing bucket (a GCRA), updated
    in place. ``size``: one more than the largest ``Remaining`` seen (at most ``ceiling``);
    ``factor``: the share of the plan's pace believed; ``others``: others' requests a second;
    ``tat``: when the bucket is full again; ``serial``, ``reported_at``, ``reported``,
    ``in_order``: the newest answer saying ``Remaining``; ``latency``, ``jitter``: RFC 6298's."""

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
    # Derived (_settle): the plan's rate less the headroom; whether the server counts a window
    # (it holds half the quota or more); permits at once (one kept for jitter); the pace now.
    plan_pace: float = field(init=False)
    is_window: bool = field(init=False)
    burst: float = field(init=False)
    pace: float = field(init=False)

    def __post_init__(self) -> None:
        self.plan_pace = self.limit.per_second / (1.0 + self.headroom)
        _settle(self)

    def copy(self) -> Estimate:
        """A snapshot that later updates of this estimate leave alone."""
        return copy.copy(self)

    @property
    def shared_pace(self) -> float:
        """The pace of a schedule without bursts or places (Redis's)."""
        plan = self.plan_pace
        return max(plan * LOWEST_FACTOR, plan * self.factor - max(0.0, self.others))

    @property
    def places(self) -> int:
        """Requests of ours a window may hold: the quota less others', at most the size seen."""
        if not self.is_window:
            return self.limit.requests
        taken = math.ceil(max(0.0, self.others) * self.limit.period)
        return max(1, min(self.limit.requests - taken, math.floor(self.size)))


def _settle(est: Estimate) -> None:
    """Derive the cached fields after ``size``, ``factor`` or ``others`` changed."""
    size = est.size
    est.is_window = 2 * size > est.limit.requests
    est.burst = size - (1.0 if size >= 3 else 0.0)
    est.pace = _pace(est, est.others)


def _pace(est: Estimate, others: float) -> float:
    """The pace were others to take ``others`` requests a second (a window's take places)."""
    plan = est.plan_pace
    taken = others if not est.is_window and others > 0.0 else 0.0
    pace, lowest = plan * est.factor - taken, plan * LOWEST_FACTOR
    return pace if pace > lowest else lowest


def ready_at(estimate: Estimate, *, now: float) -> float:
    """The earliest clock time the next permit may be granted (``now`` or later)."""
    when = estimate.tat - (estimate.burst - 1.0) * (1.0 / estimate.pace)
    hold = estimate.hold_until
    if hold > now:
        now = hold
    return when if when > now else now


def held_until(estimate: Estimate, *, unanswered: int, oldest: float, now: float) -> float:
    """When requests on their way let the next permit go: while no answer comes for longer than
    the latency explains, no more than the bucket holds (a stalled server counts them at once)."""
    if unanswered < estimate.size or estimate.is_window:
        return now
    late = _slowest(estimate.latency, estimate.jitter) + estimate.limit.interval
    silent_since = estimate.answered_at + late
    if now - oldest <= late or now <= silent_since:
        return now
    return max(now, silent_since + STALL_WAIT)


def _slowest(latency: float | None, jitter: float) -> float:
    """RFC 6298's timeout: the longest latency the answers explain (none seen: no bound)."""
    return math.inf if latency is None else latency + 4.0 * jitter


def grant(estimate: Estimate, *, now: float) -> None:
    """A permit was granted at ``now``: it takes one request from the pacing bucket."""
    tat = estimate.tat
    estimate.tat = (now if now > tat else tat) + 1.0 / estimate.pace


def window_tolerance(estimate: Estimate) -> int:
    """Requests a window may count beyond ours with no one else on the token (jitter, and two)."""
    limit = estimate.limit
    spread = 4.0 * estimate.jitter * limit.per_second
    return math.ceil(estimate.headroom * limit.requests + spread) + 2


def _refilled_tat(
    estimate: Estimate,
    later: Sequence[float],
    remaining: int,
    arrived: float,
    close: int,
    pace: float,
    gap: float | None = None,
) -> float:
    """Our bucket as the server's word sets it: it held ``remaining`` when the request arrived
    (``arrived``), and every permit granted since comes out of it (``gap``: the smallest
    between two ``later`` in a row, if known)."""
    emission = 1.0 / pace
    # A window's places already hold every request in flight, whatever order they arrive in.
    if estimate.is_window:
        close = 0
    tat = arrived + (estimate.size - remaining + close) * emission
    if not later:
        return tat
    last = later[-1]
    count = len(later)
    # Grants more than an emission apart, the first after the bucket refilled: each finds it
    # empty again, and the replay below ends at the last one's (the margin: its rounding).
    margin = 1e-9 * (1.0 + abs(last))
    if (
        count > 1
        and tat + (count - 1) * emission + margin < last
        and (min(map(operator.sub, later[1:], later)) if gap is None else gap) > emission + margin
    ):
        return last + emission
    for index, when in enumerate(later):
        if tat >= last:  # grants in time order: the rest each add one emission
            return tat + (len(later) - index) * emission
        if when > tat:
            tat = when
        tat += emission
    return tat


def read_answer(
    est: Estimate,
    serial: int,
    granted_at: float,
    now: float,
    status_code: int,
    remaining: int | None = None,
    reset_after: float | None = None,
    retry_after: float | None = None,
    grants_between: Sequence[float] | None = None,
    earlier_in_flight: Sequence[float] = (),
    own_in_window: int | None = None,
    own_at_most: int | None = None,
    later_grants: Sequence[float] = (),
    overlapped: bool = False,
    later_gap: float | None = None,
    *,
    default_pause: float | None = None,
) -> None:
    """Read into the estimate, in place, the answer at ``now`` to permit ``serial`` granted at
    ``granted_at``, with the grant times of our permits around it: ``grants_between`` the
    previous report's and this one (None: unknown), ``earlier_in_flight`` unanswered before it,
    ``later_grants`` after it (``later_gap``: the smallest gap between two in a row, if known);
    ``own_in_window`` ours in the period up to it, ``own_at_most`` ours the server may have
    counted with it; ``overlapped``: others answered meanwhile; ``default_pause`` after a 429
    that names no time (None: one period). Conditional expressions stand for max()/min() (bit
    for bit the same) where it runs on every answer."""
    limit = est.limit
    interval = limit.interval
    round_trip = now - granted_at
    latency = est.latency
    jitter = est.jitter
    # A bucket's request arrived as late as its answer is later than the latencies explain (a
    # stalled server counts it late); permits before it granted close to it, held up as long or
    # overdue may reach the server after it. A window's places hold whatever is on its way.
    late = 0.0
    if not est.is_window:
        slowest = _slowest(latency, jitter)
        if round_trip - slowest > 0.0:
            late = round_trip - slowest
    arrived = granted_at + late
    overtaking = 4.0 * jitter if 4.0 * jitter > interval else interval
    close = 0
    if earlier_in_flight:  # most answers have none: nothing to compare them with
        since = granted_at - (late if late > overtaking else overtaking)
        overdue = -math.inf if est.is_window else now - (slowest + interval)
        for when in earlier_in_flight:
            if when > since or when < overdue:
                close += 1
    # The smoothed latency and jitter with this answer's (gains 1/8 and 1/4, as RFC 6298).
    taken = round_trip if round_trip > 0.0 else 0.0
    if latency is None:
        est.latency = taken
    else:
        est.jitter = jitter + 0.25 * (abs(latency - taken) - jitter)
        est.latency = latency + 0.125 * (taken - latency)
    if now > est.answered_at:
        est.answered_at = now
    if status_code == 429:
        # Every sender stops for Retry-After, else the reset, else default_pause (one period
        # clears any window), within an interval and a period.
        hint = retry_after if retry_after is not None else reset_after
        if hint is None:
            hint = limit.period if default_pause is None else default_pause
        est.hold_until = max(est.hold_until, now + max(min(hint, limit.period), 1.0 / est.pace))
        est.ceiling = ceiling = max(1.0, math.floor(est.size / 2))
        est.size = min(est.size, ceiling)
        est.factor = max(LOWEST_FACTOR, est.factor / 2)
        _settle(est)
        # The bucket was empty; the server's hint says when it has room again.
        est.tat = max(est.tat, est.hold_until + (est.burst - 1.0) / est.pace)
        return
    ceiling = est.ceiling
    if ceiling != limit.requests:  # once the quota, it stays
        ceiling += 1.0
        requests = float(limit.requests)
        if not ceiling < requests:
            ceiling = requests
        est.ceiling = ceiling
    changed = False
    if remaining is not None:
        seen = remaining + 1.0
        if ceiling < seen:
            seen = ceiling
        if seen > est.size:
            est.size = seen
            changed = True
    factor = est.factor
    if factor != 1.0:
        factor += RECOVERY
        est.factor = factor if factor < 1.0 else 1.0
        changed = True
    if changed:
        _settle(est)
    if remaining is None:
        return
    if serial <= est.serial:
        # Older than the newest word read, it may have been counted after it: lower only.
        refilled = _refilled_tat(est, later_grants, remaining, arrived, close, est.pace, later_gap)
        if refilled > est.tat:
            est.tat = refilled
        return
    window = est.is_window
    others = est.others
    hold = est.hold_until
    # Only an answer to a request with none granted close to it says what others did.
    settled = close == 0 and (not later_grants or later_grants[0] - granted_at >= overtaking)
    unexplained = 0
    told = True  # whether the answer says how many others took (none, or so many)
    # Read by a window and by an empty answer alone (the limiter counts them only then).
    if own_in_window is not None and (window or remaining == 0):
        count = limit.requests - own_in_window - remaining
        tolerance = window_tolerance(est)
        if count > tolerance:
            # Others only if even all ours the server may have counted (a late-counted burst
            # too) leave too many; then the count by grant time says how many.
            at_most = own_at_most
            surely = count if at_most is None else limit.requests - at_most - remaining
            unexplained = count if surely > tolerance else 0
            told = bool(unexplained)
    if window and settled and told:
        others = unexplained / limit.period
    # A full window that ours do not fill refills at its reset: everyone waits for it. Without
    # our own requests to model a bucket by, an unexplained full one is taken for a window.
    if (
        remaining == 0
        and reset_after is not None
        and (
            (window and (unexplained or own_in_window is None))
            or (grants_between is None and unexplained)
        )
    ):
        hold = max(hold, now + min(reset_after, limit.period))
    # A bucket's others are read off two answers in a row to requests sent one at a time at
    # our pace: what our grants since the previous report leave in the bucket, less what it holds.
    if grants_between and settled and est.in_order and not window:
        rate = limit.per_second
        emission = 1.0 / rate
        previous = est.reported_at
        tat = previous + (est.size - est.reported) / rate
        for when in grants_between:
            if when - previous < interval:
                break  # not an interval apart: nothing to read
            previous = when
            tat = (when if when > tat else tat) + emission
        else:
            elapsed = granted_at - est.reported_at
            if elapsed > 0:
                shortfall = est.size - (tat - grants_between[-1]) * rate - remaining
                # Averaged over 2 s, 30 intervals at least: Remaining's rounding moves it by one.
                span = 30.0 * interval if 30.0 * interval > 2.0 else 2.0
                weight = elapsed / span if elapsed / span < 1.0 else 1.0
                others += weight * (shortfall / elapsed - others)
    # The server's word replaces our bucket.
    pace = est.pace if others == est.others else _pace(est, others)
    tat = _refilled_tat(est, later_grants, remaining, arrived, close, pace, later_gap)
    if window and hold > now:
        # A full window: nothing until its reset, then its quota less what is on its way.
        tat = hold + (len(later_grants) + close) / pace
    if overlapped and est.tat > tat:
        tat = est.tat
    est.others = others
    est.pace = pace
    est.hold_until = hold
    est.serial = serial
    est.reported_at = granted_at
    est.reported = remaining
    est.in_order = settled
    est.tat = tat
