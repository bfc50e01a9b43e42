"""The end of a batch: ``manifest.jsonl`` (one line per job) and the summary shown to people.

Both are built from the journal (a SQLite file or a shared Redis), so they describe every job
of the input, whichever run or process did its work, and they are right even after an
interrupted run. The manifest's schema is documented in ``docs/guides/cli.md``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._blocking import run_blocking
from .._files import create_temp
from .._journal.codec import excerpt, request_digest
from .._models import CREDITS_PER_GENERATION, FailureClass
from .._scheduling.inputs import JobFile
from .._scheduling.jobs import JobStore, StoreRecord, StoreState
from .text import printable

__all__ = [
    "BatchOutcome",
    "credits_recorded",
    "manifest_entry",
    "print_summary",
    "write_manifest",
]

MANIFEST_NAME = "manifest.jsonl"
_SAMPLES = 10
_CHUNK = 1000


@dataclass
class BatchOutcome:
    """What the manifest found, tallied for the summary and the exit status.

    Attributes:
        total: Jobs in the input.
        completed: Jobs completed.
        failed: Jobs failed, ambiguous ones excluded.
        ambiguous: Jobs whose submission's outcome is unknown (maybe paid, not resent).
        running: Jobs submitted and not finished (an interrupted run; they resume next time).
        not_started: Jobs never submitted.
        credits: Credits recorded for the input's jobs, over every run, the last POST of
            ambiguous jobs left out.
        earlier_credits: Of those, what earlier runs had spent when this one started.
        uncertain_credits: Credits ambiguous jobs may have cost: their last POST's, which may
            or may not have been charged.
        files: Video files downloaded.
        failures: Failures by class.
        samples: The first few failed or ambiguous jobs, as (key, status, message).
        manifest: Where the manifest was written.
    """

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

    @property
    def all_completed(self) -> bool:
        """True when every job of the input completed."""
        return self.completed == self.total

    def note(self, entry: dict[str, Any]) -> None:
        """Count one manifest entry."""
        self.total += 1
        status = entry["status"]
        credits = entry.get("credits", 0)
        if status == "ambiguous":  # its last POST may or may not have been charged
            self.uncertain_credits += CREDITS_PER_GENERATION
            credits = max(0, credits - CREDITS_PER_GENERATION)
        self.credits += credits
        self.files += len(entry.get("files", ()))
        if status == "completed":
            self.completed += 1
            return
        if status == "failed":
            self.failed += 1
            self.failures[entry.get("failure_class") or "unknown"] += 1
        elif status == "ambiguous":
            self.ambiguous += 1
        elif status == "running":
            self.running += 1
        else:
            self.not_started += 1
        if len(self.samples) < _SAMPLES and status in ("failed", "ambiguous"):
            self.samples.append((entry["key"], status, entry.get("error") or ""))


def manifest_entry(record: StoreRecord, out_dir: Path, endpoint: str = "") -> dict[str, Any]:
    """One manifest line for a job the journal knows, run against ``endpoint``."""
    if record.state is StoreState.COMPLETED:
        status = "completed"
    elif record.state is StoreState.SUBMITTED:
        status = "running"
    elif record.state is StoreState.INTENT or (
        record.failure_class is FailureClass.AMBIGUOUS_SUBMIT
    ):
        status = "ambiguous"
    else:
        status = "failed"
    error = record.error
    if status == "ambiguous" and error is None:
        error = "a submission was in flight when the run stopped: outcome unknown"
    return {
        "key": record.key,
        "status": status,
        "task_id": record.task_id,
        "files": [_relative(Path(f), out_dir) for f in record.files],
        "videos": list(record.videos),
        "error": error,
        "failure_class": None if record.failure_class is None else record.failure_class.value,
        "attempts": record.attempts,
        "credits": record.credits,
        "prompt": excerpt(record.request.prompt),
        "request_digest": record.request_digest or request_digest(record.request),
        "endpoint": endpoint,
    }


async def credits_recorded(journal: JobStore, keys: frozenset[str], out_dir: Path) -> int:
    """The credits the journal records for the jobs in ``keys`` (what runs so far spent).

    Tallied as the summary tallies them, so that the summary's "this run" is a difference of
    like with like.
    """
    tally = BatchOutcome()
    async for record in journal.records():
        if record.key in keys:
            tally.note(manifest_entry(record, out_dir))
    return tally.credits


async def write_manifest(
    journal: JobStore, jobs: JobFile, keys: frozenset[str], out_dir: Path, *, endpoint: str = ""
) -> BatchOutcome:
    """Write ``out_dir/manifest.jsonl``: one line per job of the input, atomically.

    Jobs the journal knows come first (in the order they were first recorded, for a SQLite
    journal), then the jobs never started, in input order. The file is created readable by
    its owner only: it holds prompts and task ids.
    """
    outcome = BatchOutcome()
    target = out_dir / MANIFEST_NAME
    seen: set[str] = set()
    # A random name, created exclusively: a file or link planted at a fixed name cannot
    # receive the manifest (or redirect it elsewhere).
    partial, raw = await run_blocking(functools.partial(create_temp, target, mode=0o600))
    handle = io.TextIOWrapper(raw, encoding="utf-8")
    try:
        lines: list[str] = []

        async def emit(entry: dict[str, Any]) -> None:
            outcome.note(entry)
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
            if len(lines) >= _CHUNK:
                await _flush(handle, lines)

        async for record in journal.records():
            if record.key in keys:
                seen.add(record.key)
                await emit(manifest_entry(record, out_dir, endpoint))
        await _flush(handle, lines)
        if len(seen) < len(keys):  # a second streamed pass over the input, in a worker thread
            await run_blocking(_write_unstarted, handle, jobs, seen, outcome, endpoint)
        await run_blocking(_sync, handle)
    finally:
        await run_blocking(handle.close)
    await run_blocking(os.replace, partial, target)
    outcome.manifest = target
    return outcome


def _write_unstarted(
    handle: Any, jobs: JobFile, seen: set[str], outcome: BatchOutcome, endpoint: str
) -> None:
    for spec in jobs:
        if spec.key in seen:
            continue
        entry: dict[str, Any] = {
            "key": spec.key,
            "status": "not_started",
            "task_id": None,
            "files": [],
            "videos": [],
            "error": None,
            "failure_class": None,
            "attempts": 0,
            "credits": 0,
            "prompt": excerpt(spec.request.prompt),
            "request_digest": request_digest(spec.request),
            "endpoint": endpoint,
        }
        outcome.note(entry)
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


async def _flush(handle: Any, lines: list[str]) -> None:
    text = "".join(lines)
    lines.clear()
    await run_blocking(handle.write, text)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder.resolve()))
    except ValueError:
        try:
            return str(path.relative_to(folder))
        except ValueError:
            return str(path)


# -- the summary -------------------------------------------------------------------------------


def summary_rows(outcome: BatchOutcome, *, emulated: bool = False) -> list[tuple[str, str]]:
    """The summary as (label, value) rows; an emulated run's credits are priced at nothing."""
    rows = [
        ("jobs", str(outcome.total)),
        ("completed", str(outcome.completed)),
        ("failed", str(outcome.failed)),
    ]
    rows += [(f"  {name}", str(n)) for name, n in sorted(outcome.failures.items())]
    if outcome.ambiguous:
        rows.append(("outcome unknown", str(outcome.ambiguous)))
    if outcome.running:
        rows.append(("still running", str(outcome.running)))
    if outcome.not_started:
        rows.append(("not started", str(outcome.not_started)))
    rows.append(("video files", str(outcome.files)))

    def price(credits: int) -> str:
        return "emulated, nothing paid" if emulated else f"about {credits / 100:.2f} USD"

    spent = outcome.credits_this_run
    rows.append(("credits this run", f"{spent} ({price(spent)})"))
    if outcome.earlier_credits:
        earlier = outcome.earlier_credits
        rows.append(("credits earlier", f"{earlier} ({price(earlier)}, earlier runs)"))
    if outcome.uncertain_credits:
        rows.append(
            ("possibly charged", f"{outcome.uncertain_credits} more (outcome unknown, see above)")
        )
    if outcome.manifest is not None:
        rows.append(("manifest", str(outcome.manifest)))
    return rows


def print_summary(
    outcome: BatchOutcome, *, rich: bool, advice: Iterable[str] = (), emulated: bool = False
) -> None:
    """Print the summary table, the first problem jobs, and ``advice`` lines."""
    rows = summary_rows(outcome, emulated=emulated)
    samples = [(printable(k), s, printable(m)[:160]) for k, s, m in outcome.samples]
    if rich:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console()
        table = Table(title="Batch summary", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        for label, value in rows:
            table.add_row(label, value)
        console.print(table)
        if samples:
            problems = Table(title="Problems (first ones)", title_justify="left")
            for name in ("key", "status", "error"):
                problems.add_column(name, overflow="fold")
            for sample in samples:  # Text: "[...]" in server text is not markup
                problems.add_row(*(Text(cell) for cell in sample))
            console.print(problems)
        for line in advice:
            console.print(line, markup=False, highlight=False)
        return
    width = max(len(label) for label, _ in rows)
    print("Batch summary")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    if samples:
        print("Problems (first ones):")
        for key, status, message in samples:
            print(f"  {key}  {status}  {message}")
    for line in advice:
        print(line)
    sys.stdout.flush()
