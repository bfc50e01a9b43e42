"""Progress of a batch: a scheduler hook that counts events, and two ways to show the counts.

On a terminal, a live `rich` display refreshed a few times a second; elsewhere (a pipe, a log
file, CI) one plain line every few seconds. Failures are printed as they happen in both.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .._models import FailureClass
from .._scheduling.jobs import JobEvent, JobFinished, JobResumed, JobSubmitted
from .text import printable

if TYPE_CHECKING:
    from .._scheduling.jobs import SchedulerStatistics

__all__ = ["BatchProgress", "ProgressSnapshot", "format_duration", "plain_line", "show_progress"]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a batch stands, for display.

    Attributes:
        total: Jobs in the input.
        completed: Jobs completed (this run, and earlier runs' from the journal).
        failed: Jobs failed (likewise).
        from_journal: Of those, jobs whose result came from the journal (no request).
        waiting: Jobs not started yet in this run.
        in_flight: Jobs being submitted or generated.
        submitted: POSTs sent in this run.
        resumed: Jobs picked up from the journal and polled, not submitted again.
        credits: Credits spent on the batch's jobs, this run and earlier ones.
        requests_per_minute: Recent request rate (in the server's time, see ``time_scale``).
        limit_per_minute: The plan's limit (likewise).
        rate_limited: HTTP 429 answers in this run.
        elapsed: Seconds since the run started.
        eta: Estimated seconds to the end, None until it can be estimated.
    """

    total: int
    completed: int
    failed: int
    from_journal: int
    waiting: int
    in_flight: int
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
        """Jobs finished either way."""
        return self.completed + self.failed


class BatchProgress:
    """A :class:`~grok_imagine_async._scheduling.jobs.SchedulerHook` counting a batch's events.

    Args:
        total: Jobs in the input.
        time_scale: How much faster than real time the server runs; request rates are shown
            in the server's time, so they compare with the plan.
    """

    def __init__(self, total: int, *, time_scale: float = 1.0) -> None:
        self.total = total
        self.time_scale = time_scale
        self.completed = self.failed = self.from_journal = 0
        self.live_finished = self.submitted = self.resumed = 0
        self.notices: list[str] = []
        self._started = anyio.current_time()

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
                if not result.ok:
                    failure = (result.failure_class or FailureClass.UNKNOWN).value
                    self.notices.append(f"failed {result.key} ({failure}): {result.error}")

    def take_notices(self) -> list[str]:
        """The messages gathered since the last call (failures), oldest first."""
        notices, self.notices = self.notices, []
        return [printable(notice) for notice in notices]

    def snapshot(self, stats: SchedulerStatistics | None) -> ProgressSnapshot:
        """The counts now, completed by the scheduler's statistics if it is running."""
        now = anyio.current_time()
        elapsed = now - self._started
        done = self.completed + self.failed
        in_flight = (stats.submitting + stats.in_flight) if stats is not None else 0
        remaining = self.total - done
        eta: float | None = None
        if remaining <= 0:
            eta = 0.0
        elif self.live_finished and elapsed > 0:
            eta = remaining * elapsed / self.live_finished
        scale = self.time_scale
        return ProgressSnapshot(
            total=self.total,
            completed=self.completed,
            failed=self.failed,
            from_journal=self.from_journal,
            waiting=max(0, remaining - in_flight),
            in_flight=in_flight,
            submitted=self.submitted,
            resumed=self.resumed,
            credits=stats.credits_consumed if stats is not None else 0,
            requests_per_minute=(stats.requests_per_minute / scale) if stats else 0.0,
            limit_per_minute=(stats.limit_per_minute / scale) if stats else 0.0,
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
        f"{snap.in_flight} in flight, {snap.waiting} waiting | {snap.submitted} submitted | "
        f"{snap.credits} credits | {snap.requests_per_minute:.0f}/{snap.limit_per_minute:.0f} "
        f"req/min | ETA {format_duration(snap.eta)}"
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
        f"submitted [bold]{snap.submitted}[/]",
        f"in flight [bold]{snap.in_flight}[/]",
        f"completed [bold green]{snap.completed}[/]{earlier}",
        f"failed [bold {'red' if snap.failed else 'green'}]{snap.failed}[/]",
    )
    usage = snap.requests_per_minute / snap.limit_per_minute if snap.limit_per_minute else 0
    grid.add_row(
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
