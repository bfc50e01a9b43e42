"""Progress of a batch: a scheduler hook that counts events, and two ways to show the counts.

On a terminal, a live `rich` display refreshed a few times a second; elsewhere (a pipe, a log
file, CI) one plain line every few seconds. Failures are printed as they happen in both.
"""

from __future__ import annotations

import functools
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .._errors import APIConnectionError
from .._models import FailureClass
from .._scheduling.breaker import BreakerSnapshot
from .._scheduling.jobs import BreakerEvent, JobEvent, JobFinished, JobResumed, JobSubmitted
from .text import printable

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._scheduling.jobs import SchedulerStatistics

__all__ = [
    "BatchProgress",
    "ProgressSnapshot",
    "format_duration",
    "plain_line",
    "show_progress",
    "start_display",
]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a batch stands, for display.

    Every job is in exactly one of ``waiting``, ``submitting``, ``generating`` or done
    (``completed`` + ``failed``), so those four always add up to ``total``.

    Attributes:
        total: Jobs in the input.
        completed: Jobs completed (this run, and earlier runs' from the journal).
        failed: Jobs failed (likewise).
        from_journal: Of those, jobs whose result came from the journal (no request).
        waiting: Jobs not started yet in this run.
        submitting: Jobs whose POST waits for its turn in the quota or for its answer.
        generating: Jobs whose task exists and is being polled.
        submitted: Tasks created by this run's POSTs.
        resumed: Jobs picked up from the journal and polled, not submitted again.
        credits: Credits spent on the batch's jobs, this run and earlier ones.
        requests_per_minute: Requests sent (submissions and polls) in the last minute of the
            server's time, the span the plan's limit counts.
        limit_per_minute: The plan's limit per minute (likewise).
        rate_limited: HTTP 429 answers in this run.
        elapsed: Seconds since the run started.
        eta: Estimated seconds to the end, None until it can be estimated.
    """

    total: int
    completed: int
    failed: int
    from_journal: int
    waiting: int
    submitting: int
    generating: int
    submitted: int
    resumed: int
    credits: int
    requests_per_minute: float
    limit_per_minute: float
    rate_limited: int
    elapsed: float
    eta: float | None

    @property
    def done(self) -> int:
        """Jobs finished either way (here, in an earlier run, or by another process)."""
        return self.completed + self.failed

    @property
    def in_flight(self) -> int:
        """Jobs being submitted or generated."""
        return self.submitting + self.generating


class BatchProgress:
    """A :class:`~grok_imagine_async._scheduling.jobs.SchedulerHook` counting a batch's events.

    Args:
        total: Jobs in the input.
        time_scale: How much faster than real time the server runs; request rates are shown
            in the server's time, so they compare with the plan.
        period: The quota's period in (real) seconds: requests are counted over the last one.
        endpoint: Where requests go, named in the message of a job that could not reach it.
    """

    def __init__(
        self,
        total: int,
        *,
        time_scale: float = 1.0,
        period: float = 60.0,
        endpoint: str | None = None,
    ) -> None:
        self.total = total
        self.time_scale = time_scale
        self.period = period
        self.endpoint = endpoint
        self.completed = self.failed = self.from_journal = 0
        self.live_finished = self.submitted = self.resumed = 0
        self.unreachable = 0  # jobs that failed because the server could not be reached
        self.stopped: BreakerSnapshot | None = None
        """Why the batch stopped submitting (systematic refusals), if it did."""
        self.notices: list[str] = []
        self._started = anyio.current_time()
        # (time, requests sent so far): the count one period ago is the oldest sample kept.
        self._sent: deque[tuple[float, int]] = deque([(self._started, 0)])

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobSubmitted):
            self.submitted += 1
        elif isinstance(event, JobResumed):
            self.resumed += 1
        elif isinstance(event, JobFinished) and event.result is not None:
            result = event.result
            if result.ok:
                self.completed += 1
            else:
                self.failed += 1
            if result.from_journal:
                self.from_journal += 1
            else:
                self.live_finished += 1
                if not result.ok and result.failure_class is not FailureClass.NOT_SUBMITTED:
                    failure = (result.failure_class or FailureClass.UNKNOWN).value
                    message = str(result.error)
                    if isinstance(result.error, APIConnectionError):
                        self.unreachable += 1
                        if self.endpoint:
                            message = f"cannot reach {self.endpoint}: {result.error}"
                    self.notices.append(f"failed {result.key} ({failure}): {message}")

        elif isinstance(event, BreakerEvent):
            self.notices.append(breaker_notice(event))
            if event.transition == "stopped":
                self.stopped = event.breaker

    def take_notices(self) -> list[str]:
        """The messages gathered since the last call (failures), oldest first."""
        notices, self.notices = self.notices, []
        return [printable(notice) for notice in notices]

    def _requests_last_period(self, now: float, sent: int) -> int:
        self._sent.append((now, sent))
        while len(self._sent) > 1 and self._sent[1][0] <= now - self.period:
            self._sent.popleft()
        return sent - self._sent[0][1]

    def snapshot(self, stats: SchedulerStatistics | None) -> ProgressSnapshot:
        """The counts now, completed by the scheduler's statistics if it is running."""
        now = anyio.current_time()
        elapsed = now - self._started
        done = self.completed + self.failed
        submitting = stats.submitting if stats is not None else 0
        generating = stats.in_flight if stats is not None else 0
        remaining = self.total - done
        eta: float | None = None
        if remaining <= 0:
            eta = 0.0
        elif self.live_finished and elapsed > 0:
            eta = remaining * elapsed / self.live_finished
        recent = self._requests_last_period(now, stats.requests_sent if stats is not None else 0)
        # The quota's period is the server's minute: a count over it is a rate per minute.
        per_minute = recent * 60.0 / (self.period * self.time_scale)
        return ProgressSnapshot(
            total=self.total,
            completed=self.completed,
            failed=self.failed,
            from_journal=self.from_journal,
            waiting=max(0, remaining - submitting - generating),
            submitting=submitting,
            generating=generating,
            submitted=self.submitted,
            resumed=self.resumed,
            credits=stats.credits_consumed if stats is not None else 0,
            requests_per_minute=per_minute,
            limit_per_minute=(stats.limit_per_minute / self.time_scale) if stats else 0.0,
            rate_limited=stats.rate_limited if stats is not None else 0,
            elapsed=elapsed,
            eta=eta,
        )


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` (or ``m:ss``); ``?`` when unknown."""
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plain_line(snap: ProgressSnapshot) -> str:
    """One line of progress, for logs and pipes."""
    earlier = f", {snap.from_journal} from earlier runs" if snap.from_journal else ""
    return (
        f"[{format_duration(snap.elapsed)}] {snap.done}/{snap.total} done "
        f"({snap.completed} completed, {snap.failed} failed{earlier}) | "
        f"{snap.waiting} waiting, {snap.submitting} submitting, {snap.generating} generating | "
        f"{snap.submitted} submitted | {snap.credits} credits | "
        f"{snap.requests_per_minute:.0f}/{snap.limit_per_minute:.0f} req/min | "
        f"ETA {format_duration(snap.eta)}"
    )


def _rich_view(snap: ProgressSnapshot, title: str) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    percent = 100 * snap.done // snap.total if snap.total else 100
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text(title, style="bold"),
        ProgressBar(total=max(snap.total, 1), completed=snap.done, width=32),
        Text(f"{snap.done}/{snap.total} ({percent}%)"),
        Text(f"ETA {format_duration(snap.eta)}", style="cyan"),
    )
    grid = Table.grid(padding=(0, 3))
    earlier = f" ({snap.from_journal} earlier)" if snap.from_journal else ""
    grid.add_row(
        f"waiting [bold]{snap.waiting}[/]",
        f"submitting [bold]{snap.submitting}[/]",
        f"generating [bold]{snap.generating}[/]",
        f"completed [bold green]{snap.completed}[/]{earlier}",
        f"failed [bold {'red' if snap.failed else 'green'}]{snap.failed}[/]",
    )
    usage = snap.requests_per_minute / snap.limit_per_minute if snap.limit_per_minute else 0
    grid.add_row(
        f"submitted [bold]{snap.submitted}[/]",
        f"credits [bold]{snap.credits}[/]",
        f"req/min [bold]{snap.requests_per_minute:.0f}[/]/{snap.limit_per_minute:.0f} "
        f"({usage:.0%})",
        f"429s {snap.rate_limited}",
        f"elapsed {format_duration(snap.elapsed)}",
    )
    return Group(head, grid)


async def show_progress(
    progress: BatchProgress,
    statistics: Callable[[], SchedulerStatistics | None],
    *,
    title: str,
    live: bool,
    interval: float,
    stream: TextIO | None = None,
) -> None:
    """Show ``progress`` until cancelled: live on a terminal, else a line per ``interval``.

    Args:
        progress: The counts.
        statistics: Returns the scheduler's statistics (None before it runs).
        title: Shown at the left of the live display.
        live: Use a live `rich` display (the caller checked the terminal and rich).
        interval: Seconds between two plain lines.
        stream: Where plain lines go (default: stdout).
    """
    out = stream or sys.stdout
    if not live:
        try:
            while True:
                await anyio.sleep(interval)
                for notice in progress.take_notices():
                    print(notice, file=out, flush=True)
                print(plain_line(progress.snapshot(statistics())), file=out, flush=True)
        finally:
            for notice in progress.take_notices():
                print(notice, file=out, flush=True)
    from rich.live import Live

    with Live(
        _rich_view(progress.snapshot(statistics()), title), auto_refresh=False, transient=False
    ) as display:
        try:
            while True:
                for notice in progress.take_notices():
                    display.console.print(notice, style="red", markup=False, highlight=False)
                display.update(_rich_view(progress.snapshot(statistics()), title), refresh=True)
                await anyio.sleep(0.25)
        finally:
            for notice in progress.take_notices():
                display.console.print(notice, style="red", markup=False, highlight=False)
            display.update(_rich_view(progress.snapshot(statistics()), title), refresh=True)


PLAIN_INTERVAL = 10.0
"""Seconds between two progress lines to a pipe or a file (as documented in the CLI guide)."""


def start_display(
    group: TaskGroup,
    progress: BatchProgress,
    statistics: Callable[[], SchedulerStatistics | None],
    *,
    title: str,
    live: bool,
) -> None:
    """Run :func:`show_progress` in ``group`` until it is cancelled.

    Plain lines come every :data:`PLAIN_INTERVAL` seconds of the reader's time, whatever the
    server's speed: a log or a pipe is read by a person (or grepped), not watched.
    """
    group.start_soon(
        functools.partial(
            show_progress, progress, statistics, title=title, live=live, interval=PLAIN_INTERVAL
        )
    )


def breaker_notice(event: BreakerEvent) -> str:
    """One line for a change of the batch's course (see ``BreakerPolicy``)."""
    state = event.breaker
    if event.transition == "paused":
        why = "submissions went unanswered" if state.reason == "unanswered" else "failing"
        return (
            f"the API is {why} ({state.streak} of the newest jobs): new submissions paused, "
            "jobs in flight still polled; probing until it answers again"
        )
    if event.transition == "probing":
        return f"probing the API with one submission (probe {state.probes})"
    if event.transition == "resumed":
        return "the API works again: submitting at full speed"
    return "submissions stopped"
