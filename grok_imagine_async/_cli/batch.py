"""``grok-imagine batch INPUT --out DIR``: many videos, resumable after any crash.

Every job is written through a journal (default ``DIR/journal.db``): the intent before each
POST, the task id right after its answer. Running the same command again resumes: completed
jobs are not requested again, jobs in flight are polled (not paid again), and only jobs never
started are submitted.

Example:
    $ grok-imagine batch examples/prompts.txt --emulate --out videos
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._blocking import run_blocking
from .._errors import (
    AuthenticationError,
    ConfigurationError,
    GrokImagineError,
    InvalidRequestError,
)
from .._journal.sqlite import JournalError, SqliteJournal
from .._requests import build_request
from .._scheduling.inputs import InputError, InputSummary, JobFile
from .._scheduling.jobs import JournalState
from .._scheduling.resume import Reopening, reopening
from .batch_shared import is_redis_url, run_shared
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Connection,
    add_connection_options,
    connect,
    count,
    describe_failure,
    error,
    leaf_error,
    run_until_interrupted,
    scaled_poll,
    target_url,
)
from .messages import (
    MAX_PROBLEMS_SHOWN,
    advice_after,
    count_jobs,
    for_cli,
    print_pending,
    report_input_problems,
)
from .preflight import PreflightError, check_file_target, check_folder
from .progress import BatchProgress, start_display
from .report import MANIFEST_NAME, credits_recorded, print_summary, write_manifest

if TYPE_CHECKING:
    from .._scheduling.jobs import SchedulerStatistics
    from .._scheduling.scheduler import JobScheduler

ENDPOINT_META = "endpoint"
EMULATED_ENDPOINT = "built-in emulator"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``batch`` subcommand."""
    parser = subparsers.add_parser(
        "batch",
        help="generate many videos, resumable after any crash",
        description="Generate one video per job of INPUT into DIR, through a journal that "
        "makes the batch resumable: run the same command again after a crash or Ctrl-C and it "
        "carries on without paying twice. INPUT is a text file (one prompt a line), JSONL "
        "(prompt, mode, ratio, images, id or key) or CSV with a header. Writes DIR/manifest.jsonl. "
        "Exit status: 0 all completed, 1 some did not, 2 bad options or input, 130 Ctrl-C.",
    )
    add = parser.add_argument
    add("input", metavar="INPUT", help="the jobs: .txt, .jsonl or .csv")
    add("--out", required=True, metavar="DIR", help="folder for the videos and the manifest")
    add(
        "--journal",
        metavar="FILE",
        help="the journal (default: DIR/journal.db; DIR/journal-emulated.db with --emulate); "
        "redis://HOST:PORT/DB shares the batch with every process run on the same INPUT "
        "with the same Redis: each job is done once, by one of them",
    )
    add(
        "--lease",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with a redis:// journal: seconds before a stopped process's jobs are taken over "
        "(default: %(default)g)",
    )
    add(
        "--format",
        choices=["text", "jsonl", "csv"],
        metavar="FORMAT",
        help="INPUT's format: text, jsonl or csv (default: from its extension)",
    )
    add(
        "--mode",
        metavar="MODE",
        help="mode of jobs that do not set one: fun, normal or spicy (default: normal)",
    )
    add(
        "--ratio",
        metavar="RATIO",
        help="ratio of jobs that do not set one: 2:3, 3:2 or 1:1 (default: 1:1)",
    )
    add(
        "--allow-unlisted",
        action="store_true",
        help="accept modes and ratios the API does not document, such as 16:9 (default: refuse)",
    )
    add(
        "--max-credits",
        type=int,
        metavar="N",
        help="never start a job that could take spending past N credits (default: no limit)",
    )
    add(
        "--max-in-flight",
        type=count,
        metavar="N",
        help="cap on jobs generating at once (default: eight times what the plan sustains)",
    )
    add(
        "--max-downloads",
        type=count,
        default=4,
        metavar="N",
        help="concurrent downloads (default: %(default)s)",
    )
    add(
        "--resubmit",
        type=int,
        default=1,
        metavar="N",
        help="resubmissions after a transient failure, per job (default: %(default)s)",
    )
    add(
        "--on-ambiguous",
        choices=["report", "resubmit"],
        default="report",
        metavar="POLICY",
        help="a submission whose answer was lost may have been paid: report it and do not "
        "resend it, or resubmit it, accepting to maybe pay twice (default: %(default)s)",
    )
    add(
        "--no-progress",
        action="store_true",
        help="no live progress display, only the summary (default: live when on a terminal)",
    )
    add(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces and metrics as the OTEL_* variables say (default "
        "exporter: otlp; needs opentelemetry-sdk; default: off)",
    )
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``grok-imagine batch``; return the exit status."""
    if args.max_credits is not None and args.max_credits < 0:
        error("batch", "--max-credits must be >= 0")
        return EXIT_USAGE
    if args.resubmit < 0:
        error("batch", "--resubmit must be >= 0")
        return EXIT_USAGE
    try:  # the defaults on their own, so that an error names the option, not a line
        build_request(
            "defaults", mode=args.mode or "normal", ratio=args.ratio or "1:1",
            allow_unlisted=args.allow_unlisted,
        )  # fmt: skip
    except InvalidRequestError as exc:
        error("batch", for_cli(f"--mode/--ratio: {'; '.join(exc.problems) or exc}"))
        return EXIT_USAGE
    jobs = JobFile(
        args.input,
        format=args.format,
        mode=args.mode,
        ratio=args.ratio,
        allow_unlisted=args.allow_unlisted,
    )
    try:  # the whole file first: a bad line must not leave half a batch submitted
        summary = jobs.check(max_problems=MAX_PROBLEMS_SHOWN)
    except InputError as exc:
        report_input_problems(exc)
        return EXIT_USAGE
    out = Path(args.out)
    shared = is_redis_url(args.journal)  # a journal server, not a file of ours
    journal_path = Path(args.journal) if args.journal else out / _default_journal(args)
    try:  # every place written to, before the first credit: paid videos must have a home
        check_folder(out, "output folder")
        check_file_target(out / MANIFEST_NAME, "manifest")
        if not shared:
            check_file_target(journal_path, "journal")
    except PreflightError as exc:
        error("batch", f"{exc} (nothing was submitted)")
        return EXIT_USAGE
    if shared:
        return anyio.run(run_shared, args, jobs, summary, _use_live_display(args))
    with contextlib.ExitStack() as stack:
        if args.otel:
            try:
                args.telemetry = stack.enter_context(_telemetry_from_environment())
            except ImportError as exc:
                error("batch", f"--otel {exc}")
                return EXIT_USAGE
        return anyio.run(_batch, args, jobs, summary, journal_path)


def _telemetry_from_environment() -> contextlib.AbstractContextManager[Any]:
    try:
        from .._telemetry.sdk import telemetry_from_environment
    except ImportError as exc:
        raise ImportError(
            'needs the otel extra, the SDK and an exporter: pip install "grok-imagine-async[otel]" '
            f"opentelemetry-sdk opentelemetry-exporter-otlp ({exc})"
        ) from None
    return telemetry_from_environment("grok-imagine-batch")


_PARTIAL = re.compile(r"\..+\.[0-9a-f]{8}\.part")


def _remove_partial_downloads(out: Path) -> None:
    """Delete what downloads cut short by a crash left behind (``.<name>.<hex>.part``).

    Called with the journal locked, so no other run of this batch is downloading there.
    """
    for path in out.glob(".*.part"):
        if _PARTIAL.fullmatch(path.name):
            path.unlink(missing_ok=True)


def _default_journal(args: argparse.Namespace) -> str:
    # Emulated jobs must never pass for real ones in a later run against the API.
    return "journal-emulated.db" if args.emulate else "journal.db"


async def _batch(
    args: argparse.Namespace, jobs: JobFile, summary: InputSummary, journal_path: Path
) -> int:
    journal = SqliteJournal(journal_path)
    try:
        await journal.open()
    except JournalError as exc:
        error("batch", exc)
        return EXIT_USAGE
    try:
        await run_blocking(_remove_partial_downloads, Path(args.out))
        return await _with_journal(args, jobs, summary, journal)
    finally:
        await journal.aclose()


async def _with_journal(
    args: argparse.Namespace, jobs: JobFile, summary: InputSummary, journal: SqliteJournal
) -> int:
    out = Path(args.out)
    live = _use_live_display(args)
    progress: BatchProgress | None = None
    scheduler: JobScheduler | None = None
    emulated = False
    known_unknowns: set[str] | None = None  # jobs whose outcome was unknown before this run
    earlier_credits = 0  # what earlier runs spent on this input's jobs

    def statistics() -> SchedulerStatistics | None:
        return scheduler.statistics() if scheduler is not None else None

    async def work() -> None:
        nonlocal progress, scheduler, emulated, known_unknowns, earlier_credits
        async with connect(args) as connection:
            emulated = connection.emulated
            if not await _prepare(args, journal, connection):
                raise _UsageError
            if args.on_ambiguous == "report" and not emulated:
                known_unknowns = set(await journal.keys_in(JournalState.INTENT))
            earlier_credits = await credits_recorded(journal, summary.keys, out)
            _announce(args, summary, journal, connection)
            progress = BatchProgress(
                summary.jobs,
                time_scale=connection.time_scale,
                period=connection.rate_limit.period,
                endpoint=target_url(args),
            )
            scheduler = _scheduler(args, connection, journal, out, progress)
            async with scheduler, anyio.create_task_group() as tg:
                if not args.no_progress:
                    start_display(tg, progress, statistics, title="grok-imagine batch", live=live)
                scheduler.feed(jobs)
                async with contextlib.aclosing(scheduler.results()) as results:
                    async for _ in results:
                        pass  # the journal records each result; the hook counts it
                tg.cancel_scope.cancel()

    try:
        _, interrupted = await run_until_interrupted(work)
    except _UsageError:
        return EXIT_USAGE
    except (ConfigurationError, AuthenticationError) as exc:
        error("batch", exc)
        await _forget_unsent(journal, known_unknowns)
        return EXIT_USAGE
    except JournalError as exc:
        error("batch", exc)
        print_pending(exc)
        return EXIT_FAILED
    except GrokImagineError as exc:  # a systemic fault (e.g. the network) that stopped the batch
        error("batch", f"the batch stopped: {describe_failure(exc, args)}")
        print_pending(exc)
        interrupted = False
    except Exception as exc:  # a fault that stopped the batch: still report every paid job
        if getattr(args, "log_level", None) == "debug":
            traceback.print_exception(exc)
        error("batch", f"the batch stopped: {describe_failure(leaf_error(exc), args)}")
        interrupted = False
    else:
        await _forget_unsent(journal, known_unknowns)
    try:
        outcome = await write_manifest(journal, jobs, summary.keys, out)
    except OSError as exc:
        error("batch", f"cannot write the manifest in {out}: {exc.strerror or exc}")
        return EXIT_FAILED
    except InputError as exc:  # the file changed under the run: the journal has every job
        error("batch", f"cannot list the jobs not started: {exc}")
        return EXIT_FAILED
    outcome.earlier_credits = earlier_credits
    advice = advice_after(args, outcome, interrupted, emulated)
    if progress is not None and progress.unreachable:
        advice.insert(
            0,
            f"{count_jobs(progress.unreachable)} could not reach {target_url(args)}: check the URL "
            "(--base-url) and the network, then run the same command again.",
        )
    print_summary(outcome, rich=live, advice=advice)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.all_completed else EXIT_FAILED


async def _forget_unsent(journal: SqliteJournal, known: set[str] | None) -> None:
    """After the scheduler stopped in good order, forget the intents it left that were not sent.

    With the default policy every POST that left this process ended recorded: its task id
    written (the answer is read under a cancellation shield), or failed (ambiguous or
    refused). So an intent left by this run belongs to a job stopped between recording it and
    sending (Ctrl-C), or whose POST was refused outright (a rejected token): nothing was
    started, and it must not come back as "outcome unknown" next time.
    """
    if known is None:
        return
    forgotten = await journal.forget([JournalState.INTENT], keep=known)
    if forgotten:
        print(
            f"{forgotten} jobs were stopped before their submission was sent (or it was "
            "refused): they start afresh next time.",
            file=sys.stderr,
        )


class _UsageError(Exception):
    """Internal: a problem already reported; exit with the usage status."""


async def _prepare(
    args: argparse.Namespace, journal: SqliteJournal, connection: Connection
) -> bool:
    """Check the journal fits this run, and apply the resume choices; False on a mismatch."""
    endpoint = EMULATED_ENDPOINT if connection.emulated else connection.client.base_url
    recorded = await journal.get_meta(ENDPOINT_META)
    if recorded is not None and recorded != endpoint:
        error(
            "batch",
            f"journal {journal.path} holds jobs run against {recorded}, not {endpoint}: their "
            "task ids mean nothing there. Use another --journal (or --out).",
        )
        return False
    if recorded is None:
        await journal.set_meta(ENDPOINT_META, endpoint)
    if connection.emulated:
        restarted = await journal.forget([JournalState.INTENT, JournalState.SUBMITTED])
        if restarted:
            print(
                f"{count_jobs(restarted)} in flight when the last emulated run stopped will start "
                "again: the emulator's tasks ended with that run.",
                file=sys.stderr,
            )
    # The scheduler applies the library's resume policy to each job; count what it will do.
    resubmit = args.on_ambiguous == "resubmit"
    kinds = Counter([reopening(r, resubmit_ambiguous=resubmit) async for r in journal.records()])
    unpaid, undownloaded = kinds[Reopening.UNPAID], kinds[Reopening.UNDOWNLOADED]
    if unpaid:
        print(
            f"{count_jobs(unpaid)} that failed without being paid (the credit budget, or a request "
            "the API refused) will be submitted again.",
            file=sys.stderr,
        )
    if undownloaded:
        print(
            f"{count_jobs(undownloaded)} completed but not downloaded will be downloaded again "
            "(already paid: not submitted again).",
            file=sys.stderr,
        )
    if connection.emulated:
        return True  # every unknown outcome was forgotten above
    if resubmit:
        retried = kinds[Reopening.AMBIGUOUS]
        if retried:
            print(
                f"{count_jobs(retried)} whose submission outcome was unknown will be submitted "
                "again, as --on-ambiguous resubmit asks: some may be paid twice.",
                file=sys.stderr,
            )
    else:
        unknown = (await journal.counts())[JournalState.INTENT]
        if unknown:
            print(
                f"{count_jobs(unknown)} had a submission in flight when the last run stopped. "
                "Whether it started a task is unknown, so they are not sent again: that could "
                "pay twice.",
                file=sys.stderr,
            )
    return True


def _announce(
    args: argparse.Namespace,
    summary: InputSummary,
    journal: SqliteJournal,
    connection: Connection,
) -> None:
    limit = connection.rate_limit
    plan = connection.plan
    speed = f", {connection.time_scale:g}x real time" if connection.time_scale != 1 else ""
    print(
        f"{summary.jobs} jobs from {summary.path} -> {args.out} "
        f"(journal {journal.path}; {connection.label}, plan {plan}: "
        f"{limit.requests} requests per {limit.period * connection.time_scale:g} s{speed})",
        flush=True,
    )


def _scheduler(
    args: argparse.Namespace,
    connection: Connection,
    journal: SqliteJournal,
    out: Path,
    progress: BatchProgress,
) -> JobScheduler:
    from .._scheduling.polling import DurationModel
    from .._scheduling.scheduler import DEFAULT_SCHEDULER_POLL, JobScheduler

    scale = connection.time_scale
    return JobScheduler(
        connection.client,
        max_in_flight=args.max_in_flight,
        max_credits=args.max_credits,
        resubmit=args.resubmit,
        journal=journal,
        download_dir=out,
        max_downloads=args.max_downloads,
        on_event=progress,
        stream_results=True,
        poll=scaled_poll(DEFAULT_SCHEDULER_POLL, scale),
        duration_model=DurationModel(prior_median=DurationModel().prior_median / scale),
    )


def _use_live_display(args: argparse.Namespace) -> bool:
    if args.no_progress or not sys.stdout.isatty():
        return False
    if importlib.util.find_spec("rich") is None:
        print('For a live progress display: pip install "grok-imagine-async[cli]"', file=sys.stderr)
        return False
    return True
