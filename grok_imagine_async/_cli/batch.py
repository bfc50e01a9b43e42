"""``grok-imagine batch INPUT --out DIR``: many videos through a journal (a SQLite file, or a
Redis server the processes on one input share), resumable after any crash; the manifest, summary
and advice come from the journal, so they cover every job whichever run or process did it."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import itertools
import json
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from .._errors import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    GrokImagineError,
    InvalidRequestError,
)
from .._files import replacing, run_blocking
from .._journal.records import excerpt
from .._journal.sqlite import JournalError, SqliteJobStore
from .._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest
from .._scheduling.breaker import BreakerSnapshot, refusals_text
from .._scheduling.config import SchedulerConfig
from .._scheduling.inputs import InputError, InputSummary, JobFile
from .._scheduling.jobs import (
    FINAL_STATES,
    BreakerEvent,
    Claim,
    JobEvent,
    JobFinished,
    JobResult,
    JobSpec,
    JobStore,
    JobSubmitted,
    StoredJob,
    StoreRecord,
    StoreState,
    request_digest,
)
from .._scheduling.resume import Reopening, must_retake, recorded_result, reopening, same_request
from .._scheduling.scheduler import JobScheduler
from .._settings import with_redis_password
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Connection,
    UsageError,
    add_connection_options,
    at_least_0,
    check_file_target,
    check_folder,
    command_line,
    connect,
    count,
    describe_failure,
    error,
    for_cli,
    leaf_error,
    note,
    positive,
    printable,
    rejected_token,
    run_until_interrupted,
)

if TYPE_CHECKING:
    from .._scheduling.jobs import SchedulerStatistics
    from ..redis import RedisJobStore

    Journal = SqliteJobStore | RedisJobStore  # the batch's journal: a file, or shared

MANIFEST_NAME = "manifest.jsonl"
PLAIN_INTERVAL = 10.0  # seconds between two progress lines to a pipe or a file (the CLI guide)
_SAMPLES = 10
_CHUNK = 1000
_RETRIED_FAILURES = ("budget_exceeded", "request_error")  # what a re-run reopens
_CLAIM_AHEAD = 16  # jobs a process claims beyond those it has started
MAX_PROBLEMS_SHOWN = 20  # bad input lines listed before the rest are only counted
TASK_LOG_NAME = ".unrecorded-tasks"  # in --out: paid task ids the journal could not take
TASK_LOG_SIZE = 32 * 1024  # about 500 task ids
ENDPOINT_META = "endpoint"
_PARTIAL = re.compile(r"\..+\.[0-9a-f]{8}\.part")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``batch`` subcommand."""
    parser = subparsers.add_parser(
        "batch",
        help="generate many videos, resumable after any crash",
        description="Generate one video per job of INPUT into DIR, through a journal that "
        "makes the batch resumable: run the same command again after a crash or Ctrl-C and it "
        "carries on without paying twice. INPUT is a text file (one prompt a line), JSONL "
        "(prompt, mode, ratio, images, id or key) or CSV with a header. Writes DIR/manifest.jsonl. "
        "Exit status: 0 all completed, 1 some did not, 2 bad options or input (or a rejected "
        "token), 3 stopped after ten refusals in a row (fix the prompts, run again), 130 Ctrl-C.",
    )
    add = parser.add_argument
    # fmt: off
    add("input", metavar="INPUT", help="the jobs: .txt, .jsonl or .csv")
    add("--out", required=True, metavar="DIR", help="folder for the videos and the manifest")
    add("--journal", metavar="FILE", help="the journal (default: DIR/journal.db; DIR/journal-"
        "emulated.db with --emulate); redis://HOST:PORT/DB shares the batch with every process "
        "run on the same INPUT with the same Redis: each job is done once, by one of them")
    add("--lease", type=positive, default=10.0, metavar="SECONDS", help="with a redis:// journal: "
        "seconds before a stopped process's jobs are taken over (default: %(default)g)")
    add("--name", default="{key}", metavar="TEMPLATE", help="video file names: {key} (the "
        "line's id, or a hash of its request), {index} (its position in INPUT), {slug} (the "
        "prompt's first words); {key} or {index} is required, e.g. '{index:03d}-{slug}' "
        "(default: %(default)s)")
    add("--format", choices=["text", "jsonl", "csv"], metavar="FORMAT",
        help="INPUT's format: text, jsonl or csv (default: from its extension)")
    add("--mode", metavar="MODE",
        help="mode of jobs that do not set one: fun, normal or spicy (default: normal)")
    add("--ratio", metavar="RATIO",
        help="ratio of jobs that do not set one: 2:3, 3:2 or 1:1 (default: 1:1)")
    add("--allow-unlisted", action="store_true", help="accept modes and ratios the API does "
        "not document, such as 16:9 (default: refuse)")
    add("--max-credits", type=at_least_0, metavar="N", help="never start a job that could take "
        "spending past N credits (default: no limit)")
    add("--max-in-flight", type=count, metavar="N", help="cap on jobs generating at once "
        "(default: eight times what the plan sustains)")
    add("--max-downloads", type=count, default=4, metavar="N",
        help="concurrent downloads (default: %(default)s)")
    add("--resubmit", type=at_least_0, default=1, metavar="N",
        help="resubmissions after a transient failure, per job (default: %(default)s)")
    add("--max-at-risk", type=count, metavar="N", help="at most N submissions leave after the "
        "newest one seen working, so an outage that begins at any moment costs about N paid "
        "tasks, at the price of speed (BreakerPolicy.max_at_risk; default: a chunk sized to the "
        "plan's rate)")
    add("--on-ambiguous", choices=["report", "resubmit"], default="report", metavar="POLICY",
        help="a submission whose answer was lost may have been paid: report it and do not "
        "resend it, or resubmit it, accepting to maybe pay twice (default: %(default)s)")
    add("--no-progress", action="store_true", help="no live progress display, only the "
        "summary (default: live when on a terminal)")
    add("--otel", action="store_true", help="export OpenTelemetry traces and metrics as the "
        "OTEL_* variables say (default exporter: otlp; needs opentelemetry-sdk; default: off)")
    # fmt: on
    add_connection_options(parser)
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Run ``grok-imagine batch``; return the exit status."""
    try:  # the defaults on their own, so that an error names the option, not a line
        GenerationRequest(
            prompt="defaults",
            mode=args.mode or "normal",
            ratio=args.ratio or "1:1",
            allow_unlisted=args.allow_unlisted,
        )
    except InvalidRequestError as exc:
        raise UsageError(for_cli(f"--mode/--ratio: {'; '.join(exc.problems) or exc}")) from None
    shared = (args.journal or "").startswith(("redis://", "rediss://", "unix://"))
    if shared and args.emulate:
        raise UsageError(
            "--journal redis:// needs a real or served emulator (--base-url), not --emulate: "
            "each process's built-in emulator would be its own"
        )
    try:
        jobs = JobFile(
            args.input,
            format=args.format,
            mode=args.mode,
            ratio=args.ratio,
            allow_unlisted=args.allow_unlisted,
            name=args.name,
        )
    except ConfigurationError as exc:  # --format is one of its choices: the template
        raise UsageError(f"--name: {exc}") from None
    try:  # the whole file first: a bad line must not leave half a batch submitted
        summary = jobs.check(max_problems=MAX_PROBLEMS_SHOWN)
    except InputError as exc:
        if exc.problem_count == 1:
            raise UsageError(for_cli(f"{exc} (nothing was submitted)")) from None
        for problem in exc.problems:
            error("batch", for_cli(str(problem)))
        hidden = exc.problem_count - len(exc.problems)
        shown = f" (the first {len(exc.problems)} are shown above)" if hidden else ""
        raise UsageError(
            f"{exc.problem_count} problems in {exc.path}{shown}; nothing was submitted. Fix them "
            "and run the same command again."
        ) from None
    out = Path(args.out)
    # Emulated jobs must never pass for real ones in a later run against the API.
    default_journal = "journal-emulated.db" if args.emulate else "journal.db"
    journal_path = None if shared else Path(args.journal or out / default_journal)
    try:  # every place written to, before the first credit: paid videos must have a home
        check_folder(out, "output folder")  # the one probe of --out: not again for its files
        check_file_target(out / MANIFEST_NAME, "manifest", checked=out)
        if journal_path is not None:
            check_file_target(journal_path, "journal", checked=out)
    except UsageError as exc:
        raise UsageError(f"{exc} (nothing was submitted)") from None
    if args.emulate and journal_path is not None:  # its tasks beside the journal: Ctrl-C resumes
        args.emulator_state = journal_path.with_name(f"{journal_path.stem}-tasks.json")
    if shared and not args.redis_url:
        args.redis_url = args.journal  # the same Redis shares the rate limit
    try:
        async with contextlib.AsyncExitStack() as stack:
            if args.otel:
                try:
                    from .._telemetry import telemetry_from_environment

                    telemetry = telemetry_from_environment("grok-imagine-batch")
                    args.telemetry = stack.enter_context(telemetry)
                except ModuleNotFoundError as exc:  # the OpenTelemetry API itself
                    raise UsageError(
                        '--otel needs the otel extra, the SDK and an exporter: pip install "grok-'
                        f'imagine-async[otel]" opentelemetry-sdk opentelemetry-exporter-otlp '
                        f"({exc})"
                    ) from None
                except ImportError as exc:  # the SDK or an exporter: the message says what
                    raise UsageError(f"--otel {exc}") from None
            # The configuration first (a token, a URL): no journal for a run that cannot start.
            connection = await stack.enter_async_context(connect(args))
            store = await open_store(stack, args, connection, summary, journal_path)
            return await Batch(args, connection, store).run(jobs, summary)
    except JournalError as exc:  # it cannot be used: nothing was sent
        raise UsageError(exc) from None


class Batch:
    """One run of a batch through its journal: what it takes up from earlier runs, the jobs it
    claims (one a live process runs waits until it finishes or its owner is gone), its report."""

    def __init__(self, args: argparse.Namespace, connection: Connection, store: Journal) -> None:
        self.args, self.store, self.connection = args, store, connection
        self.out, self.endpoint = Path(args.out), connection.endpoint
        self.sqlite = store if isinstance(store, SqliteJobStore) else None
        self.shared = None if isinstance(store, SqliteJobStore) else store  # through Redis
        self.tasks = TaskLog(self.out / TASK_LOG_NAME)
        self._resubmit = args.on_ambiguous == "resubmit"
        self._wait = max(0.05, args.lease / 3)
        self._folder = Path(os.path.abspath(args.out))
        self._done: set[str] = set()  # finished before this run could take them
        self._recovered: list[JobResult] = []  # lost by the journal, completed in the manifest

    async def run(self, jobs: JobFile, summary: InputSummary) -> int:
        """Take up the journal, run the jobs, write the manifest; return the exit status."""
        args, store, out, endpoint = self.args, self.store, self.out, self.endpoint
        unknown, earlier_credits = await self._prepare(summary.keys)
        process = self.shared.id if self.shared else None  # a shared journal's name for us
        where = f"shared through Redis as process {process}"
        where = f"journal {self.sqlite.path}" if self.sqlite else where
        print(
            f"{summary.jobs} jobs from {summary.path} -> {args.out} ({where}; {endpoint}, "
            f"{self.connection.quota})",
            flush=True,
        )
        scale = self.connection.time_scale
        self.progress = progress = BatchProgress(
            summary.jobs,
            time_scale=scale,
            endpoint=endpoint,
            notices=not args.no_progress,
            earlier_credits=earlier_credits,
        )
        breaker = self.connection.client.settings.breaker
        if args.max_at_risk is not None and breaker is not None:
            breaker = replace(breaker, max_at_risk=args.max_at_risk)
        scheduler = JobScheduler(
            self.connection.client,
            SchedulerConfig(
                max_in_flight=args.max_in_flight,
                resubmit=args.resubmit,
                max_downloads=args.max_downloads,
                breaker=breaker,
            ),
            # A shared journal reserves every POST's credits in one budget for every process.
            max_credits=args.max_credits if self.sqlite else None,
            journal=store,
            download_dir=out,
            file_stem=summary.file_stem,
            on_event=progress,
        )

        async def claimed() -> AsyncIterator[JobSpec]:
            async for spec in self._claimed(jobs):
                yield spec
                # Claim no further ahead than this process can start soon: with a shared journal
                # the rest is left to the other processes. Every job leaving the queue is an event.
                while scheduler.statistics().queued >= _CLAIM_AHEAD:
                    with anyio.move_on_after(1.0):  # and a look a second, whatever comes
                        await progress.moved.wait()

        async def work() -> None:
            async with scheduler, anyio.create_task_group() as tg:
                if not args.no_progress:
                    title = f"grok-imagine batch ({process})" if process else "grok-imagine batch"
                    live = sys.stdout.isatty()
                    tg.start_soon(show_progress, progress, scheduler.statistics, title, live)
                scheduler.feed(claimed())
                async with contextlib.aclosing(scheduler.results()) as results:
                    async for _ in results:
                        pass  # the journal records each result; the hook counts it
                tg.cancel_scope.cancel()

        interrupted = False
        try:
            interrupted = await run_until_interrupted(work)
        except AuthenticationError as exc:
            error("batch", rejected_token(exc, endpoint))
            await self._forget_unsent(unknown)
            return EXIT_USAGE
        except JournalError as exc:
            error("batch", exc)
            self.tasks.keep(exc)
            return EXIT_FAILED
        except Exception as exc:  # a fault that stopped the batch: still report every paid job
            leaf = leaf_error(exc)
            if args.log_level == "debug" and not isinstance(exc, GrokImagineError):
                traceback.print_exception(exc)
            error("batch", f"the batch stopped: {describe_failure(leaf, endpoint)}")
            if isinstance(leaf, GrokImagineError):
                self.tasks.keep(leaf)
        else:
            await self._forget_unsent(unknown)
        try:
            outcome = await write_manifest(store, jobs, summary.keys, out, endpoint=endpoint)
        except OSError as exc:
            return error("batch", f"cannot write the manifest in {out}: {exc.strerror or exc}")
        except InputError as exc:  # the file changed under the run: the journal has every job
            return error("batch", f"cannot list the jobs not started: {exc}")
        outcome.earlier_credits = earlier_credits + sum(r.credits for r in self._recovered)
        note_jobs(
            len(self._recovered),
            f"the journal had lost {{are}} listed completed in {out / MANIFEST_NAME} with their "
            "videos: recorded again from it, not paid again.",
        )
        emulated = self.connection.emulator is not None
        advice = advice_after(args, outcome, interrupted, emulated)
        if progress.unreachable:
            advice.insert(
                0,
                f"{count_jobs(progress.unreachable)} could not reach {endpoint}: check the URL "
                "(--base-url) and the network, then run the same command again.",
            )
        print_summary(outcome, advice=advice, emulated=emulated)
        if interrupted:
            return EXIT_INTERRUPTED
        # Stopped by systematic refusals: one line says so.
        if progress.stopped and (refused := refusals_text(progress.stopped)):
            unsent = outcome.not_started
            prompts = "1 prompt was" if unsent == 1 else f"{unsent} prompts were"
            return error(
                "batch",
                f"{refused}; {prompts} not submitted; fix the prompts and rerun",
                EXIT_REFUSED,
            )
        return EXIT_OK if outcome.completed == outcome.total else EXIT_FAILED

    async def _prepare(self, keys: frozenset[str]) -> tuple[set[str] | None, int]:
        """Check the journal's endpoint, take back the task ids the task log kept, say what will
        resume; return the jobs of unknown outcome (None: none kept) and ``keys``' credits."""
        journal, tasks, endpoint = self.store, self.tasks, self.endpoint
        emulator = self.connection.emulator
        recorded = await journal.get_meta(ENDPOINT_META)
        if recorded is None:
            await journal.set_meta(ENDPOINT_META, endpoint)
        elif recorded != endpoint:
            name = self.sqlite.path if self.sqlite else repr(journal)
            raise UsageError(
                f"journal {name} holds jobs run against {recorded}, not {endpoint}: their task "
                "ids mean nothing there. Use another --journal (or --out)."
            )
        kept, taken = await run_blocking(tasks.read), 0
        for key, task_id in kept.items():
            record = await journal.load(key)
            if record is None or record.task_id or _status(record) != "ambiguous":
                continue  # recorded after all, or not a job of this journal
            if (await journal.claim(key, reopen=True)).owned:
                await journal.record_submitted(key, task_id)
                taken += 1
        if taken:
            note(
                f"The task ids of {count_jobs(taken)} the journal could not record were kept in "
                f"{tasks.path}: they are polled, not sent again."
            )
        try:  # before anything is paid: the log needs no new space when the disk is full
            await run_blocking(tasks.write, {} if taken else kept)  # taken: recorded now
        except OSError as exc:
            note(f"Warning: cannot set aside {tasks.path} ({exc.strerror})")
        records = [r async for r in journal.records()]
        if emulator is not None:
            # Those the emulator did not take up (not kept, or not sent) start again, at no cost.
            known = set(emulator.task_ids())  # an intent has no task id: never known
            lost = {
                r.key for r in records if r.state not in FINAL_STATES and r.task_id not in known
            }
            for key in lost:
                await journal.forget(key)
            note_jobs(
                len(lost),
                "in flight when the last emulated run stopped will start again: the emulator "
                "did not keep their tasks.",
            )
            records = [r for r in records if r.key not in lost]
        earlier = sum(_spent(_status(r), r.credits) for r in records if r.key in keys)
        # The scheduler applies the library's resume policy to each job; count what it will do.
        kinds = Counter(reopening(r, resubmit_ambiguous=self._resubmit) for r in records)
        for kind, text in _REOPENINGS.items():
            if kind is not Reopening.AMBIGUOUS or emulator is None:  # emulated: sent again, free
                note_jobs(kinds[kind], text)
        if emulator is not None or self._resubmit:
            return None, earlier  # every unknown outcome was forgotten above, or is sent again
        intents = {r.key for r in records if r.state is StoreState.INTENT}
        if self.sqlite:  # shared: maybe a live process's
            note_jobs(
                len(intents),
                "had a submission in flight when the last run stopped. Whether it started a task "
                "is unknown, so they are not sent again: that could pay twice.",
            )
        return intents, earlier

    async def _forget_unsent(self, known: set[str] | None) -> None:
        """Forget the new intents a scheduler stopped in good order left: every POST sent was
        recorded (its answer is read under a shield), so these were never sent."""
        if known is None:
            return
        unsent = {r.key async for r in self.store.records() if r.state is StoreState.INTENT}
        unsent -= known
        for key in unsent:
            await self.store.forget(key)
        note_jobs(
            len(unsent),
            "{were} stopped before the submission was sent (or it was refused): they start "
            "afresh next time.",
        )

    async def _claimed(self, jobs: Iterable[JobSpec]) -> AsyncIterator[JobSpec]:
        """The jobs this process runs, claimed one by one: a finished one is counted done
        unless it must run again; one a live process runs waits for its end or its owner's."""
        listed = await run_blocking(completed_in_manifest, self._folder, self.endpoint)
        waiting: dict[str, JobSpec] = {}
        settled: set[str] = set()
        changed = anyio.Event()

        def on_change(job: StoredJob | None) -> None:
            nonlocal changed
            if job is None or (job.key in waiting and job.final):
                if job is not None:
                    settled.add(job.key)
                changed.set()
                changed = anyio.Event()

        remove = self.store.subscribe(on_change)
        try:
            for spec in jobs:
                if await self._take(spec, listed):
                    yield spec
                elif spec.key not in self._done:
                    waiting[str(spec.key)] = spec
            recheck = True  # what finished before the listener saw it
            while waiting:
                for key in list(waiting) if recheck else [k for k in settled if k in waiting]:
                    if await self._take(waiting[key], listed):
                        yield waiting.pop(key)
                    elif key in self._done:
                        del waiting[key]
                settled.clear()
                if waiting:
                    with anyio.move_on_after(self._wait) as timer:
                        await changed.wait()
                    recheck = timer.cancelled_caught  # quiet: look at every one once more
        finally:
            remove()

    async def _take(self, spec: JobSpec, listed: dict[str, dict[str, Any]]) -> bool:
        """True if this process runs ``spec`` now, else it is done or a live process runs it; a
        job the journal lost and ``listed`` (the last manifest) has is recorded, not paid again."""
        key = str(spec.key)
        claim = await self._claim(key, spec)
        if claim.status == "final":
            record = claim.job.record if claim.job is not None else None
            assert record is not None
            if not self._retake(record, spec):
                self._count_done(record, spec)
                return False
            if not same_request(record, spec.request):
                note(
                    f"job {printable(key)} was done with another request (another input with the "
                    "same ids?): it is generated again for this one."
                )
            claim = await self._claim(key, spec, reopen=True)
        entry = listed.get(key) if claim.status == "created" else None
        if entry is None or entry.get("request_digest") != request_digest(spec.request):
            return claim.owned
        record = StoreRecord(
            key,
            spec.request,
            StoreState.COMPLETED,
            task_id=entry["task_id"],
            attempts=int(entry.get("attempts") or 1),
            credits=int(entry.get("credits") or 0),
            videos=tuple(entry["videos"]),
            files=tuple(str(self._folder / f) for f in entry["files"]),
        )
        result = self._count_done(record, spec)
        await self.store.record_finished(result)
        self._recovered.append(result)
        return False

    def _count_done(self, record: StoreRecord, spec: JobSpec) -> JobResult:
        """Count ``record``'s job as done before this run could take it; return its result."""
        now = anyio.current_time()
        result = recorded_result(record, spec.request, at=now)
        self._done.add(record.key)
        self.progress(JobFinished(key=record.key, at=now, result=result))
        return result

    async def _claim(self, key: str, spec: JobSpec, *, reopen: bool = False) -> Claim:
        """Claim ``key``, waiting out a shared journal's passing trouble (Redis unreachable, or
        back from losing its data: every process writes its jobs back within a lease)."""
        while True:
            try:
                return await self.store.claim(key, create=spec.request, reopen=reopen)
            except JournalError:
                if self.shared is None or (self.shared.available and self.shared.may_create()):
                    raise  # a refusal (a permission, a full disk), not an outage
                await anyio.sleep(self._wait)

    def _retake(self, record: StoreRecord, spec: JobSpec) -> bool:
        """Whether this run must take a finished job up again."""
        if must_retake(record, spec.request, resubmit_ambiguous=self._resubmit):
            return True
        if record.state is not StoreState.COMPLETED or not record.files:
            return False
        # Missing videos recorded in this --out are fetched again (another host's are its own).
        files = [Path(os.path.abspath(f)) for f in record.files]
        inside = all(f.is_relative_to(self._folder) for f in files)
        return inside and not all(f.is_file() for f in files)


_REOPENINGS = {
    Reopening.UNPAID: "that failed without being paid (the credit budget, or a request the API "
    "refused) will be submitted again.",
    Reopening.UNDOWNLOADED: "completed but not downloaded will be downloaded again (already "
    "paid: not submitted again).",
    Reopening.AMBIGUOUS: "whose submission outcome was unknown will be submitted again, as "
    "--on-ambiguous resubmit asks: some may be paid twice.",
}


# -- the journal ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLog:
    """Paid task ids a journal could not take (a full disk): lines ``key task_id`` padded with
    NULs to a size allocated before anything is paid, so writing them needs no new space."""

    path: Path

    def read(self) -> dict[str, str]:
        """The task ids kept, by job key (empty if there is no file)."""
        try:
            with self._open(os.O_RDONLY, "rb") as file:
                data = file.read(TASK_LOG_SIZE)
        except OSError:
            return {}
        lines = data.split(b"\0", 1)[0].decode("utf-8", "replace").splitlines()
        return {k: t for k, t in (line.rpartition(" ")[::2] for line in lines) if k and t}

    def write(self, tasks: dict[str, str]) -> int:
        """Write ``tasks`` (key: task id) over the file's whole size; return how many fit."""
        lines = [f"{key} {task_id}\n".encode("utf-8", "replace") for key, task_id in tasks.items()]
        kept = sum(size <= TASK_LOG_SIZE for size in itertools.accumulate(map(len, lines)))
        data = b"".join(lines[:kept])
        with self._open(os.O_WRONLY | os.O_CREAT, "wb") as file:
            file.write(data + bytes(TASK_LOG_SIZE - len(data)))  # real blocks, not a hole
            file.flush()
            os.fsync(file.fileno())
        return kept

    def _open(self, flags: int, mode: str) -> IO[bytes]:
        return os.fdopen(os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600), mode)

    def keep(self, exc: GrokImagineError) -> None:
        """Print the paid tasks the journal may not hold and keep them for the next run."""
        if not (pending := exc.pending_tasks):
            return
        were = "job ended or was" if len(pending) == 1 else "jobs ended or were"
        note(
            f"{len(pending)} paid {were} in flight without the journal recording it; their task "
            "ids (key task_id):"
        )
        for key, task_id in pending.items():
            note(f"  {key} {task_id}")
        try:
            kept = self.write(dict(pending))
        except OSError as failure:
            note(f"(could not keep them in {self.path}: {failure.strerror})")
            return
        note(f"Kept {kept} of them in {self.path}: the next run polls them, without paying again.")


def batch_namespace(keys: frozenset[str], endpoint: str) -> str:
    """The Redis namespace of one batch: the same for every copy of the input, anywhere."""
    digest = hashlib.sha256(endpoint.encode())
    for key in sorted(keys):
        digest.update(b"\0" + key.encode())
    return f"batch-{digest.hexdigest()[:16]}"


async def open_store(
    stack: contextlib.AsyncExitStack,
    args: argparse.Namespace,
    connection: Connection,
    summary: InputSummary,
    journal_path: Path | None,
) -> Journal:
    """Open the batch's journal: the SQLite file ``journal_path``, or the Redis ``--journal``."""
    if journal_path is not None:
        journal = await stack.enter_async_context(SqliteJobStore(journal_path))
        # Downloads a crash cut short: the journal is locked, so no other run is downloading.
        for path in await run_blocking(lambda: list(Path(args.out).glob(".*.part"))):
            if _PARTIAL.fullmatch(path.name):
                path.unlink(missing_ok=True)
        return journal
    from ..redis import RedisJobStore, RedisRateLimiter

    client = connection.client
    redis = RedisJobStore(
        with_redis_password(args.journal),
        api_key=client.settings.api_key,
        namespace=batch_namespace(summary.keys, connection.endpoint),
        max_credits=args.max_credits,
        lease=args.lease,
        finished_ttl=None,  # kept for the life of the batch: a rerun must not pay again
        limiter=client.limiter if isinstance(client.limiter, RedisRateLimiter) else None,
    )
    store = await stack.enter_async_context(redis)
    policy = await store.eviction_policy()
    if policy.startswith("allkeys-"):
        note(
            f"Warning: this Redis evicts any key when full (maxmemory-policy {policy}): a "
            "finished job it drops would be generated, and paid, again. Use noeviction or a "
            "volatile-* policy for a shared batch."
        )
    return store


def note_jobs(n: int, text: str) -> None:
    """``note`` "<n> jobs <text>" if n; ``{are}``/``{were}`` replaced (paths may hold braces)."""
    if n:
        are, were = ("is", "was") if n == 1 else ("are", "were")
        note(f"{count_jobs(n)} {text.replace('{are}', are).replace('{were}', were)}")


# -- progress ------------------------------------------------------------------------------------


class BatchProgress:
    """A scheduler hook counting a batch's events (rates in the server's time)."""

    def __init__(
        self,
        total: int,
        *,
        time_scale: float = 1.0,
        endpoint: str = "",
        notices: bool = True,
        earlier_credits: int = 0,
    ) -> None:
        self.total, self.endpoint, self.time_scale = total, endpoint, time_scale
        # What earlier runs spent on these jobs: the scheduler's count of credits takes it in
        # as it takes each job up, so the line says so (the summary shows the two apart).
        self.earlier_credits = earlier_credits
        self._keep_notices = notices  # off (--no-progress): nothing would ever show them
        self.completed = self.failed = self.from_journal = self.submitted = 0
        self.unreachable = 0  # jobs that failed because the server could not be reached
        self.stopped: BreakerSnapshot | None = None  # why submissions stopped, if they did
        self.notices: list[str] = []
        self.moved = anyio.Event()  # set by the next event, then renewed
        self._started = anyio.current_time()

    def __call__(self, event: JobEvent) -> None:
        self.moved.set()
        self.moved = anyio.Event()
        if isinstance(event, JobSubmitted):
            self.submitted += 1
        elif isinstance(event, BreakerEvent):  # a change of the batch's course (BreakerPolicy)
            state = event.breaker
            if event.transition == "stopped":
                self.stopped = state
            why = "leaving submissions unanswered" if state.reason == "unanswered" else "failing"
            notices = {
                "paused": f"the API is {why} ({state.streak} of the newest jobs): new submissions "
                "paused, jobs in flight still polled; probing until it answers again",
                "probing": f"probing the API with one submission (probe {state.probes})",
                "resumed": "the API works again: submitting at full speed",
            }
            if self._keep_notices:
                self.notices.append(notices.get(event.transition, "submissions stopped"))
        elif isinstance(event, JobFinished) and (result := event.result) is not None:
            self.completed += result.ok
            self.failed += not result.ok
            self.from_journal += result.from_journal
            failure = result.failure_class
            if not (result.ok or result.from_journal or failure is FailureClass.NOT_SUBMITTED):
                self.unreachable += isinstance(result.error, APIConnectionError)
                if self._keep_notices:
                    message = describe_failure(result.error, self.endpoint)
                    why = (failure or FailureClass.UNKNOWN).value
                    self.notices.append(f"failed {result.key} ({why}): {message}")

    def line(self, stats: SchedulerStatistics) -> str:
        """One line of progress (a pipe's, and the live display's under its bar)."""
        elapsed = anyio.current_time() - self._started
        done = self.completed + self.failed
        live = done - self.from_journal  # finished in this run
        eta = None if done < self.total else 0.0
        if done < self.total and live and elapsed > 0:
            eta = (self.total - done) * elapsed / live
        waiting = max(0, self.total - done - stats.submitting - stats.in_flight)
        held = ""  # why the waiting jobs wait, if not for the rate limit
        if waiting and stats.breaker.warming_up:
            held = " (warm-up: until a first job shows the API works)"
        elif waiting and stats.at_risk_held:
            held = " (--max-at-risk: until a look shows the newest submissions working)"
        earlier = f", {self.from_journal} from earlier runs" if self.from_journal else ""
        credits = " (with earlier runs')" if self.earlier_credits else ""
        rate, limit, scale = stats.requests_per_minute, stats.limit_per_minute, self.time_scale
        return (
            f"[{format_duration(elapsed)}] {done}/{self.total} done "
            f"({self.completed} completed, {self.failed} failed{earlier}) | {waiting} waiting"
            f"{held}, "
            f"{stats.submitting} submitting, {stats.in_flight} generating | "
            f"{self.submitted} submitted | {stats.credits_consumed} credits{credits} | "
            f"{rate / scale:.0f}/{limit / scale:.0f} req/min"
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


async def show_progress(
    progress: BatchProgress, statistics: Callable[[], SchedulerStatistics], title: str, live: bool
) -> None:
    """Show ``progress`` until cancelled: live with rich, else a line every PLAIN_INTERVAL s."""
    display: Any = contextlib.nullcontext()
    if live and importlib.util.find_spec("rich") is None:
        note('For a live progress display: pip install "grok-imagine-async[cli]"')
        live = False
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

    with display:
        try:
            await anyio.sleep(0.0 if live else PLAIN_INTERVAL)
            while True:
                show()
                await anyio.sleep(0.25 if live else PLAIN_INTERVAL)
        finally:
            show(line=live)


# -- the manifest, the summary and the advice ----------------------------------------------------


@dataclass
class BatchOutcome:
    """The manifest's jobs tallied; ambiguous jobs' last POST is in ``uncertain_credits``."""

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

    def note(self, entry: dict[str, Any]) -> None:
        """Count one manifest entry."""
        status = entry["status"]
        setattr(self, status, getattr(self, status) + 1)
        self.total += 1
        self.credits += _spent(status, entry.get("credits", 0))
        self.uncertain_credits += CREDITS_PER_GENERATION if status == "ambiguous" else 0
        self.files += len(entry.get("files", ()))
        if status == "failed":
            self.failures[entry.get("failure_class") or "unknown"] += 1
        if len(self.samples) < _SAMPLES and status in ("failed", "ambiguous"):
            self.samples.append((entry["key"], status, entry.get("error") or ""))


def _status(record: StoreRecord) -> str:
    """The manifest's status of a job the journal knows (the CLI guide's schema)."""
    if record.state in (StoreState.COMPLETED, StoreState.SUBMITTED):
        return "completed" if record.state is StoreState.COMPLETED else "running"
    if record.state is StoreState.INTENT or record.failure_class is FailureClass.AMBIGUOUS_SUBMIT:
        return "ambiguous"
    return "failed"


def _spent(status: str, credits: int) -> int:
    """A job's credits but an ambiguous one's last POST (maybe not charged: counted apart)."""
    return max(0, credits - CREDITS_PER_GENERATION) if status == "ambiguous" else credits


def manifest_line(
    job: StoreRecord | JobSpec, endpoint: str, folders: tuple[Path, ...]
) -> dict[str, Any]:
    """The manifest's line of a job from its journal record (a spec: never started), files
    relative to the first of ``folders`` (the output folder, resolved and as given) holding them."""
    record = job if isinstance(job, StoreRecord) else None
    status = "not_started" if record is None else _status(record)
    error = record and record.error
    if status == "ambiguous" and error is None:
        error = "a submission was in flight when the run stopped: outcome unknown"
    files = [Path(f) for f in record.files] if record else []
    return {
        "key": str(job.key),
        "status": status,
        "task_id": record and record.task_id,
        "files": [
            str(next((f.relative_to(d) for d in folders if f.is_relative_to(d)), f)) for f in files
        ],
        "videos": list(record.videos) if record else [],
        "error": error,
        "failure_class": record and record.failure_class and record.failure_class.value,
        "attempts": record.attempts if record else 0,
        "credits": record.credits if record else 0,
        "prompt": excerpt(job.request.prompt),
        "request_digest": (record and record.request_digest) or request_digest(job.request),
        "endpoint": endpoint,
    }


async def write_manifest(
    journal: JobStore, jobs: JobFile, keys: frozenset[str], out_dir: Path, *, endpoint: str = ""
) -> BatchOutcome:
    """Write ``out_dir/manifest.jsonl`` atomically, owner-only: the journal's jobs, then those
    never started, in input order."""
    target = out_dir / MANIFEST_NAME
    outcome = BatchOutcome(manifest=target)
    folders = (await run_blocking(out_dir.resolve), out_dir)  # once, not per file
    seen: set[str] = set()
    async with replacing(target, mode=0o600) as out:

        def write(entries: Iterable[dict[str, Any]]) -> None:
            for entry in entries:
                outcome.note(entry)
                out.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")

        entries: list[dict[str, Any]] = []
        async for record in journal.records():
            if record.key in keys:
                seen.add(record.key)
                entries.append(manifest_line(record, endpoint, folders))
                if len(entries) >= _CHUNK:
                    await run_blocking(write, entries)
                    entries = []
        await run_blocking(write, entries)
        unstarted = (s for s in jobs if s.key not in seen) if len(seen) < len(keys) else ()
        lines = (manifest_line(spec, endpoint, folders) for spec in unstarted)
        await run_blocking(write, lines)  # a second pass over the input, streamed
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
    counts = [("jobs", outcome.total), ("completed", outcome.completed), ("failed", outcome.failed)]
    counts += [(f"  {name}", n) for name, n in sorted(outcome.failures.items())]
    unfinished = {
        "outcome unknown": outcome.ambiguous,
        "still running": outcome.running,
        "not started": outcome.not_started,
    }
    counts += [(label, n) for label, n in unfinished.items() if n]
    counts.append(("video files", outcome.files))
    rows = [(label, str(n)) for label, n in counts]

    price = "emulated, nothing paid" if emulated else "about {:.2f} USD"  # of credits / 100
    spent = max(0, outcome.credits - outcome.earlier_credits)  # the rest: by earlier runs
    rows.append(("credits this run", f"{spent} ({price.format(spent / 100)})"))
    if earlier := outcome.earlier_credits:
        rows.append(("credits earlier", f"{earlier} ({price.format(earlier / 100)}, earlier runs)"))
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
    lines = ["Batch summary", *(f"  {label:<{width}}  {value}" for label, value in rows)]
    if outcome.samples:
        lines.append("Problems (first ones):")
        lines += (f"  {printable(k)}  {s}  {printable(m)[:160]}" for k, s, m in outcome.samples)
    print("\n".join([*lines, *advice]), flush=True)


def count_jobs(n: int) -> str:
    """``1 job``, ``2 jobs``."""
    return "1 job" if n == 1 else f"{n} jobs"


def advice_after(
    args: argparse.Namespace, outcome: BatchOutcome, interrupted: bool, emulated: bool
) -> list[str]:
    """The lines after the summary: what became of unfinished jobs, and what to run next."""
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
        if outcome.running:
            then = "They go on generating; the next run polls them and does not pay for them again."
            if emulated:  # run() keeps the emulator's tasks beside the journal
                then = f"The emulator kept its tasks in {args.emulator_state}: the next run "
                then += "polls them, as it would the API's."
            kept = f"Jobs still in flight: {outcome.running}. {then}"
        lines.append(f"Interrupted. Every job is recorded in the journal. {kept}")
        lines += ["To carry on where this run stopped, run the same command again:", f"  {resume}"]
    elif outcome.not_started or outcome.running:
        lines.append(f"Some jobs did not finish. Run the same command to carry on: {resume}")
    elif any(outcome.failures.get(name) for name in _RETRIED_FAILURES):
        lines.append(
            "Jobs refused by the credit budget or by the API, and videos that could not be "
            "saved, are tried again when you run the same command (a task already paid is "
            f"not paid again): {resume}"
        )
    return lines
