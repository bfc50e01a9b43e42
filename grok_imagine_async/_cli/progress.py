"""Progress of a batch: a scheduler hook that counts events, and two ways to show the counts.

On a terminal, a live `rich` display refreshed a few times a second; elsewhere (a pipe, a log
file, CI) one plain line every few seconds. Failures are printed as they happen in both.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import APIConnectionError
from .._models import FailureClass
from .._scheduling.breaker import BreakerSnapshot
from .._scheduling.jobs import BreakerEvent, JobEvent, JobFinished, JobSubmitted
from .common import printable

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._scheduling.jobs import SchedulerStatistics

__all__ = ["BatchProgress", "ProgressSnapshot", "format_duration", "plain_line", "start_display"]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a batch stands, for display: ``waiting + submitting + generating + done`` is
    ``total``. Request rates are per minute of the server's time, the span the plan counts;
    ``submitted`` counts this run's POSTs; ``eta`` is None until it can be estimated."""

    total: int
    completed: int
    failed: int
    from_journal: int
    waiting: int
    submitting: int
    generating: int
    submitted: int
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


class BatchProgress:
    """A scheduler hook counting a batch's events; rates are shown in the server's time
    (``time_scale``) over the quota's ``period``; a job that cannot reach ``endpoint`` names it."""

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
        self.live_finished = self.submitted = 0
        self.unreachable = 0  # jobs that failed because the server could not be reached
        self.stopped: BreakerSnapshot | None = None  # why submissions stopped, if they did
        self.notices: list[str] = []
        self._started = anyio.current_time()
        # (time, requests sent so far): the count one period ago is the oldest sample kept.
        self._sent: deque[tuple[float, int]] = deque([(self._started, 0)])

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobSubmitted):
            self.submitted += 1
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
        submitting, generating, sent, credits, limit, limited = (
            (stats.submitting, stats.in_flight, stats.requests_sent, stats.credits_consumed,
             stats.limit_per_minute, stats.rate_limited) if stats is not None else (0,) * 6
        )  # fmt: skip
        remaining = self.total - self.completed - self.failed
        eta: float | None = None
        if remaining <= 0:
            eta = 0.0
        elif self.live_finished and elapsed > 0:
            eta = remaining * elapsed / self.live_finished
        # The quota's period is the server's minute: a count over it is a rate per minute.
        per_minute = self._requests_last_period(now, sent) * 60.0 / (self.period * self.time_scale)
        return ProgressSnapshot(
            self.total, self.completed, self.failed, self.from_journal,
            max(0, remaining - submitting - generating), submitting, generating,
            self.submitted, credits, per_minute, limit / self.time_scale,
            limited, elapsed, eta,
        )  # fmt: skip


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
    """Show ``progress`` in ``group`` until cancelled: a live `rich` display (the caller
    checked the terminal and rich), else a plain line every :data:`PLAIN_INTERVAL` seconds of
    the reader's time, whatever the server's speed (a log is read, not watched)."""
    group.start_soon(functools.partial(_show, progress, statistics, title=title, live=live))


async def _show(
    progress: BatchProgress,
    statistics: Callable[[], SchedulerStatistics | None],
    *,
    title: str,
    live: bool,
) -> None:
    display: Any = contextlib.nullcontext()
    if live:
        from rich.live import Live

        view = _rich_view(progress.snapshot(statistics()), title)
        display = Live(view, auto_refresh=False, transient=False)

    def show(line: bool = True) -> None:
        for notice in progress.take_notices():
            if live:
                display.console.print(notice, style="red", markup=False, highlight=False)
            else:
                print(notice, flush=True)
        if line and live:
            display.update(_rich_view(progress.snapshot(statistics()), title), refresh=True)
        elif line:
            print(plain_line(progress.snapshot(statistics())), flush=True)

    delay = 0.0 if live else PLAIN_INTERVAL
    with display:
        try:
            while True:
                await anyio.sleep(delay)
                show()
                delay = 0.25 if live else PLAIN_INTERVAL
        finally:
            show(line=live)


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
