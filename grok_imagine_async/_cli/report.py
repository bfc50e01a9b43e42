"""What a batch shows: its progress, then ``manifest.jsonl``, the summary and the advice, from
the journal, so that they cover every job whichever run or process did it."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import APIConnectionError
from .._files import replacing, run_blocking
from .._journal.records import excerpt
from .._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest
from .._scheduling.breaker import BreakerSnapshot
from .._scheduling.inputs import JobFile
from .._scheduling.jobs import (
    BreakerEvent,
    JobEvent,
    JobFinished,
    JobStore,
    JobSubmitted,
    StoreRecord,
    StoreState,
    request_digest,
)
from .common import command_line, describe_failure, printable

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._scheduling.jobs import SchedulerStatistics

MANIFEST_NAME = "manifest.jsonl"
PLAIN_INTERVAL = 10.0  # seconds between two progress lines to a pipe or a file (the CLI guide)
_SAMPLES = 10
_CHUNK = 1000
_RETRIED_FAILURES = ("budget_exceeded", "request_error")  # what a re-run reopens


# -- progress ------------------------------------------------------------------------------------


class BatchProgress:
    """A scheduler hook counting a batch's events (rates in the server's time)."""

    def __init__(self, total: int, *, time_scale: float = 1.0, endpoint: str = "") -> None:
        self.total, self.endpoint, self.time_scale = total, endpoint, time_scale
        self.completed = self.failed = self.from_journal = 0
        self.live_finished = self.submitted = 0
        self.unreachable = 0  # jobs that failed because the server could not be reached
        self.stopped: BreakerSnapshot | None = None  # why submissions stopped, if they did
        self.notices: list[str] = []
        self._started = anyio.current_time()

    def __call__(self, event: JobEvent) -> None:
        if isinstance(event, JobSubmitted):
            self.submitted += 1
        elif isinstance(event, BreakerEvent):
            self.notices.append(breaker_notice(event))
            if event.transition == "stopped":
                self.stopped = event.breaker
        elif isinstance(event, JobFinished) and (result := event.result) is not None:
            self.completed += result.ok
            self.failed += not result.ok
            if result.from_journal:
                self.from_journal += 1
                return
            self.live_finished += 1
            if not result.ok and result.failure_class is not FailureClass.NOT_SUBMITTED:
                failure = (result.failure_class or FailureClass.UNKNOWN).value
                self.unreachable += isinstance(result.error, APIConnectionError)
                message = describe_failure(result.error, self.endpoint)
                self.notices.append(f"failed {result.key} ({failure}): {message}")

    def line(self, stats: SchedulerStatistics) -> str:
        """One line of progress (what a pipe gets, and the live display under its bar); rates
        per minute of the server's time."""
        elapsed = anyio.current_time() - self._started
        done = self.completed + self.failed
        eta = None if done < self.total else 0.0
        if done < self.total and self.live_finished and elapsed > 0:
            eta = (self.total - done) * elapsed / self.live_finished
        waiting = max(0, self.total - done - stats.submitting - stats.in_flight)
        held = waiting and stats.breaker.warming_up
        earlier = f", {self.from_journal} from earlier runs" if self.from_journal else ""
        rate, limit = (
            n / self.time_scale for n in (stats.requests_per_minute, stats.limit_per_minute)
        )
        return (
            f"[{format_duration(elapsed)}] {done}/{self.total} done "
            f"({self.completed} completed, {self.failed} failed{earlier}) | {waiting} waiting"
            f"{' (warm-up: until a first job shows the API works)' if held else ''}, "
            f"{stats.submitting} submitting, {stats.in_flight} generating | "
            f"{self.submitted} submitted | {stats.credits_consumed} credits | "
            f"{rate:.0f}/{limit:.0f} req/min"
            f"{f' ({stats.rate_limited} 429s)' if stats.rate_limited else ''} | "
            f"ETA {format_duration(eta)}"
        )


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` (or ``m:ss``); ``?`` when unknown."""
    if seconds is None:
        return "?"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def start_display(
    group: TaskGroup,
    progress: BatchProgress,
    statistics: Callable[[], SchedulerStatistics],
    *,
    title: str,
    live: bool,
) -> None:
    """Show ``progress`` until cancelled: live with rich, else a line every
    :data:`PLAIN_INTERVAL` seconds whatever the server's speed (a log is read, not watched)."""
    display: Any = contextlib.nullcontext()
    if live:
        from rich.console import Group
        from rich.live import Live
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        display = Live(auto_refresh=False, transient=False)

    def show(line: bool = True) -> None:
        notices, progress.notices = progress.notices, []
        for notice in map(printable, notices):
            if live:
                display.console.print(notice, style="red", markup=False, highlight=False)
            else:
                print(notice, flush=True)
        text = progress.line(statistics())
        if line and live:
            done = progress.completed + progress.failed
            bar = ProgressBar(total=max(progress.total, 1), completed=done, width=40)
            display.update(Group(Text(title, style="bold"), bar, Text(text)), refresh=True)
        elif line:
            print(text, flush=True)

    async def run() -> None:
        with display:
            try:
                await anyio.sleep(0.0 if live else PLAIN_INTERVAL)
                while True:
                    show()
                    await anyio.sleep(0.25 if live else PLAIN_INTERVAL)
            finally:
                show(line=live)

    group.start_soon(run)


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


# -- the manifest, the summary and the advice ----------------------------------------------------


@dataclass
class BatchOutcome:
    """The manifest's jobs tallied; ``credits`` leaves out the last POST of ambiguous jobs
    (``uncertain_credits``: maybe charged)."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    ambiguous: int = 0
    running: int = 0
    not_started: int = 0
    credits: int = 0
    earlier_credits: int = 0
    uncertain_credits: int = 0
    files: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[str, str, str]] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def credits_this_run(self) -> int:
        """Credits this run spent (the rest was spent by earlier runs)."""
        return max(0, self.credits - self.earlier_credits)

    def note(self, entry: dict[str, Any]) -> None:
        """Count one manifest entry."""
        self.total += 1
        status = entry["status"]
        if status == "ambiguous":
            self.uncertain_credits += CREDITS_PER_GENERATION
        self.credits += _counted(status, entry.get("credits", 0))
        self.files += len(entry.get("files", ()))
        if status == "failed":
            self.failures[entry.get("failure_class") or "unknown"] += 1
        setattr(self, status, getattr(self, status) + 1)
        if len(self.samples) < _SAMPLES and status in ("failed", "ambiguous"):
            self.samples.append((entry["key"], status, entry.get("error") or ""))


def _entry(key: str, request: GenerationRequest, endpoint: str, **fields: Any) -> dict[str, Any]:
    """One manifest line: a job never started, unless ``fields`` say more."""
    return {
        "key": key, "status": "not_started", "task_id": None, "files": [], "videos": [],
        "error": None, "failure_class": None, "attempts": 0, "credits": 0,
        "prompt": excerpt(request.prompt), "request_digest": request_digest(request),
        "endpoint": endpoint, **fields,
    }  # fmt: skip


def _recorded(record: StoreRecord, out_dir: Path, endpoint: str) -> dict[str, Any]:
    """The manifest line of a job the journal knows."""
    status = _status(record)
    error = record.error
    if status == "ambiguous" and error is None:
        error = "a submission was in flight when the run stopped: outcome unknown"
    return _entry(
        record.key,
        record.request,
        endpoint,
        status=status,
        task_id=record.task_id,
        files=[_relative(Path(f), out_dir) for f in record.files],
        videos=list(record.videos),
        error=error,
        failure_class=None if record.failure_class is None else record.failure_class.value,
        attempts=record.attempts,
        credits=record.credits,
        request_digest=record.request_digest or request_digest(record.request),
    )


_STATUS = {StoreState.COMPLETED: "completed", StoreState.SUBMITTED: "running"}


def _status(record: StoreRecord) -> str:
    return _STATUS.get(record.state) or ("ambiguous" if outcome_unknown(record) else "failed")


def outcome_unknown(record: StoreRecord) -> bool:
    """Whether ``record``'s last submission may or may not have started a (paid) task."""
    return (
        record.state is StoreState.INTENT or record.failure_class is FailureClass.AMBIGUOUS_SUBMIT
    )


def _relative(path: Path, folder: Path) -> str:
    for base in (folder.resolve(), folder):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def _counted(status: str, credits: int) -> int:
    """A job's credits as spent: an ambiguous job's last POST may not have been charged, so it
    is counted apart (``uncertain_credits``)."""
    return max(0, credits - CREDITS_PER_GENERATION) if status == "ambiguous" else credits


def credits_recorded(records: Iterable[StoreRecord], keys: frozenset[str]) -> int:
    """``keys``' credits in ``records`` as the summary counts them (maybe-charged ones apart)."""
    return sum(_counted(_status(r), r.credits) for r in records if r.key in keys)


async def write_manifest(
    journal: JobStore, jobs: JobFile, keys: frozenset[str], out_dir: Path, *, endpoint: str = ""
) -> BatchOutcome:
    """Write ``out_dir/manifest.jsonl`` atomically, owner-only: the jobs the journal knows,
    then those never started, in input order."""
    outcome = BatchOutcome()
    target = out_dir / MANIFEST_NAME
    seen: set[str] = set()
    async with replacing(target, mode=0o600) as out:

        def write(entries: list[dict[str, Any]]) -> None:
            for entry in entries:
                outcome.note(entry)
            out.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode())

        def write_unstarted() -> None:  # a second streamed pass over the input
            for spec in jobs if len(seen) < len(keys) else ():
                if spec.key not in seen:
                    write([_entry(str(spec.key), spec.request, endpoint)])

        entries: list[dict[str, Any]] = []
        async for record in journal.records():
            if record.key in keys:
                seen.add(record.key)
                entries.append(_recorded(record, out_dir, endpoint))
                if len(entries) >= _CHUNK:
                    await run_blocking(write, entries)
                    entries = []
        await run_blocking(write, entries)
        await run_blocking(write_unstarted)
    outcome.manifest = target
    return outcome


def completed_in_manifest(out: Path, endpoint: str) -> dict[str, dict[str, Any]]:
    """``out``'s manifest lines of jobs completed against ``endpoint``, videos still there."""
    found: dict[str, dict[str, Any]] = {}
    try:
        handle = (out / MANIFEST_NAME).open(encoding="utf-8")
    except OSError:
        return found
    with handle:
        for line in handle:
            try:
                entry = json.loads(line)
                if entry["status"] != "completed" or entry["endpoint"] != endpoint:
                    continue
                files, videos = list(entry["files"]), list(entry["videos"])
            except (ValueError, TypeError, KeyError):
                continue  # not a line of ours (or of an older version): nothing to trust
            if files and videos and all((out / f).is_file() for f in files):
                found[str(entry["key"])] = entry
    return found


def summary_rows(outcome: BatchOutcome, *, emulated: bool = False) -> list[tuple[str, str]]:
    """The summary as (label, value) rows; an emulated run's credits are priced at nothing."""
    rows = [
        ("jobs", str(outcome.total)),
        ("completed", str(outcome.completed)),
        ("failed", str(outcome.failed)),
    ]
    rows += [(f"  {name}", str(n)) for name, n in sorted(outcome.failures.items())]
    unfinished = (outcome.ambiguous, outcome.running, outcome.not_started)
    labels = ("outcome unknown", "still running", "not started")
    rows += [(label, str(n)) for label, n in zip(labels, unfinished, strict=True) if n]
    rows.append(("video files", str(outcome.files)))

    def price(credits: int) -> str:
        return "emulated, nothing paid" if emulated else f"about {credits / 100:.2f} USD"

    spent = outcome.credits_this_run
    rows.append(("credits this run", f"{spent} ({price(spent)})"))
    if earlier := outcome.earlier_credits:
        rows.append(("credits earlier", f"{earlier} ({price(earlier)}, earlier runs)"))
    if outcome.uncertain_credits:
        rows.append(
            ("possibly charged", f"{outcome.uncertain_credits} more (outcome unknown, see above)")
        )
    if outcome.manifest is not None:
        rows.append(("manifest", str(outcome.manifest)))
    return rows


def print_summary(
    outcome: BatchOutcome, *, advice: Iterable[str] = (), emulated: bool = False
) -> None:
    """Print the summary table, the first problem jobs, and ``advice`` lines."""
    rows = summary_rows(outcome, emulated=emulated)
    width = max(len(label) for label, _ in rows)
    print("Batch summary")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    if outcome.samples:
        print("Problems (first ones):")
        for key, status, message in outcome.samples:
            print(f"  {printable(key)}  {status}  {printable(message)[:160]}")
    for line in advice:
        print(line)
    sys.stdout.flush()


def count_jobs(n: int) -> str:
    """``1 job``, ``2 jobs``."""
    return "1 job" if n == 1 else f"{n} jobs"


def advice_after(
    args: argparse.Namespace,
    outcome: BatchOutcome,
    interrupted: bool,
    emulated: bool,
) -> list[str]:
    """The lines after the summary: what became of unfinished jobs, and what to run next."""
    emulator_state = getattr(args, "emulator_state", None)  # where --emulate kept its tasks
    resume = command_line(args.argv)
    lines: list[str] = []
    if outcome.ambiguous and not emulated and args.on_ambiguous != "resubmit":
        again = command_line([*args.argv, "--on-ambiguous", "resubmit"])
        lines.append(
            f"{count_jobs(outcome.ambiguous)} may or may not have been submitted: "
            "the answer to the request was lost. They were not sent again, to avoid paying "
            "twice. Check your account; to send them again anyway, possibly paying twice, run: "
            f"{again}"
        )
    if interrupted:
        kept = "No job was left in flight."
        if emulated and emulator_state is None:
            kept = (
                "The emulator's tasks ended with this process, so the jobs that were in flight "
                "will start again, at no cost."
            )
        elif outcome.running:
            then = (
                f"The emulator kept its tasks in {emulator_state}: the next run polls them, as "
                "it would the API's."
                if emulated
                else "They go on generating; the next run polls them and does not pay for them "
                "again."
            )
            kept = f"Jobs still in flight: {outcome.running}. {then}"
        lines.append(f"Interrupted. Every job is recorded in the journal. {kept}")
        lines.append("To carry on where this run stopped, run the same command again:")
        lines.append(f"  {resume}")
    elif outcome.not_started or outcome.running:
        lines.append(f"Some jobs did not finish. Run the same command to carry on: {resume}")
    elif any(outcome.failures.get(name) for name in _RETRIED_FAILURES):
        lines.append(
            "Jobs refused by the credit budget or by the API, and videos that could not be "
            "saved, are tried again when you run the same command (a task already paid is "
            f"not paid again): {resume}"
        )
    return lines


def refused_line(stopped: BreakerSnapshot | None, outcome: BatchOutcome) -> str | None:
    """The one line for a batch stopped on systematic refusals, None if it was not."""
    if stopped is None or stopped.reason != "refused" or stopped.failure_class is None:
        return None
    why = stopped.failure_class.value.replace("_", " ")
    unsent = outcome.not_started
    prompts = "1 prompt was" if unsent == 1 else f"{unsent} prompts were"
    return (
        f"the last {stopped.streak} jobs were all refused for {why}; {prompts} not "
        "submitted; fix the prompts and rerun"
    )
