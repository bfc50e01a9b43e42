"""``grok-imagine batch INPUT --out DIR``: many videos, resumable after any crash.

Every job is written through a journal: a SQLite file (default ``DIR/journal.db``), or a Redis
server (``--journal redis://...``) that every process run on the same input shares, each job
done once, by one of them. The intent is recorded before each POST, the task id right after
its answer. Running the same command again resumes: completed jobs are not requested again,
jobs in flight are polled (not paid again), and only jobs never started are submitted. The
manifest (``DIR/manifest.jsonl``) is rewritten from the journal at the end of every run.

Example:
    $ grok-imagine batch examples/prompts.txt --emulate --out videos
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from .._errors import AuthenticationError, ConfigurationError, GrokImagineError, InvalidRequestError
from .._files import TaskLog
from .._journal.sqlite import JournalError, SqliteJobStore
from .._models import GenerationRequest
from .._scheduling.inputs import InputError, InputSummary, JobFile
from .._scheduling.jobs import JobEvent, JobSpec, JobStore
from .batch_journal import (
    TASK_LOG_NAME,
    Claims,
    endpoint_of,
    forget_unsent,
    is_redis_url,
    journal_name,
    note_jobs,
    open_store,
    prepare,
)
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Connection,
    PreflightError,
    UsageError,
    add_connection_options,
    check_file_target,
    check_folder,
    connect,
    count,
    describe_failure,
    error,
    leaf_error,
    note,
    run_until_interrupted,
)
from .progress import BatchProgress, start_display
from .report import (
    MANIFEST_NAME,
    advice_after,
    count_jobs,
    credits_recorded,
    print_summary,
    refused_line,
    write_manifest,
)


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
    # fmt: off
    add("input", metavar="INPUT", help="the jobs: .txt, .jsonl or .csv")
    add("--out", required=True, metavar="DIR", help="folder for the videos and the manifest")
    add("--journal", metavar="FILE", help="the journal (default: DIR/journal.db; "
        "DIR/journal-emulated.db with --emulate); redis://HOST:PORT/DB shares the batch with "
        "every process run on the same INPUT with the same Redis: each job is done once, by one "
        "of them")
    add("--lease", type=float, default=10.0, metavar="SECONDS", help="with a redis:// journal: "
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
    add("--max-credits", type=int, metavar="N", help="never start a job that could take "
        "spending past N credits (default: no limit)")
    add("--max-in-flight", type=count, metavar="N", help="cap on jobs generating at once "
        "(default: eight times what the plan sustains)")
    add("--max-downloads", type=count, default=4, metavar="N",
        help="concurrent downloads (default: %(default)s)")
    add("--resubmit", type=int, default=1, metavar="N",
        help="resubmissions after a transient failure, per job (default: %(default)s)")
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


def run(args: argparse.Namespace) -> int:
    """Run ``grok-imagine batch``; return the exit status."""
    if args.max_credits is not None and args.max_credits < 0:
        raise UsageError("--max-credits must be >= 0")
    if args.resubmit < 0:
        raise UsageError("--resubmit must be >= 0")
    try:  # the defaults on their own, so that an error names the option, not a line
        GenerationRequest(
            prompt="defaults", mode=args.mode or "normal", ratio=args.ratio or "1:1",
            allow_unlisted=args.allow_unlisted,
        )  # fmt: skip
    except InvalidRequestError as exc:
        raise UsageError(for_cli(f"--mode/--ratio: {'; '.join(exc.problems) or exc}")) from None
    shared = is_redis_url(args.journal)  # a journal server, not a file of ours
    if shared and args.emulate:
        raise UsageError(
            "--journal redis:// needs a real or served emulator (--base-url), not --emulate: "
            "each process's built-in emulator would be its own"
        )
    try:
        jobs = JobFile(
            args.input, format=args.format, mode=args.mode, ratio=args.ratio,
            allow_unlisted=args.allow_unlisted, name=args.name,
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None
    try:  # the whole file first: a bad line must not leave half a batch submitted
        summary = jobs.check(max_problems=MAX_PROBLEMS_SHOWN)
    except InputError as exc:
        report_input_problems(exc)
        return EXIT_USAGE
    out = Path(args.out)
    # Emulated jobs must never pass for real ones in a later run against the API.
    default_journal = "journal-emulated.db" if args.emulate else "journal.db"
    journal_path = None if shared else Path(args.journal or out / default_journal)
    try:  # every place written to, before the first credit: paid videos must have a home
        check_folder(out, "output folder")
        check_file_target(out / MANIFEST_NAME, "manifest")
        if journal_path is not None:
            check_file_target(journal_path, "journal")
    except PreflightError as exc:
        raise UsageError(f"{exc} (nothing was submitted)") from None
    if args.emulate and journal_path is not None:  # its tasks beside the journal: Ctrl-C resumes
        args.emulator_state = journal_path.with_name(f"{journal_path.stem}-tasks.json")
    if shared and not args.redis_url:
        args.redis_url = args.journal  # the same Redis shares the rate limit
    with contextlib.ExitStack() as stack:
        if args.otel:
            try:
                args.telemetry = stack.enter_context(_telemetry_from_environment())
            except ImportError as exc:
                raise UsageError(f"--otel {exc}") from None
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


async def _batch(
    args: argparse.Namespace, jobs: JobFile, summary: InputSummary, journal_path: Path | None
) -> int:
    try:
        async with contextlib.AsyncExitStack() as stack:
            # The configuration first (a token, a URL): no journal is created for a run that
            # cannot start.
            connection = await stack.enter_async_context(connect(args))
            store = await open_store(stack, args, connection, summary, journal_path)
            return await _with_store(args, jobs, summary, store, connection)
    except (ConfigurationError, JournalError) as exc:  # nothing was sent
        error("batch", exc)
        return EXIT_USAGE


async def _with_store(
    args: argparse.Namespace,
    jobs: JobFile,
    summary: InputSummary,
    store: JobStore,
    connection: Connection,
) -> int:
    out = Path(args.out)
    live = _use_live_display(args)
    emulated = connection.emulated
    shared = not isinstance(store, SqliteJobStore)
    tasks = TaskLog(out / TASK_LOG_NAME)
    unknown = await prepare(args, store, connection, tasks)
    earlier_credits = await credits_recorded(store, summary.keys, out)
    limit, scale = connection.client.limiter.limit, connection.time_scale
    speed = f", {scale:g}x real time" if scale != 1 else ""
    where = (
        f"shared through Redis as process {getattr(store, 'id', '?')}"
        if shared
        else f"journal {journal_name(store)}"
    )
    print(
        f"{summary.jobs} jobs from {summary.path} -> {args.out} ({where}; {connection.label}, "
        f"plan {connection.plan}: {limit.requests} requests per {limit.period * scale:g} s{speed})",
        flush=True,
    )
    progress = BatchProgress(
        summary.jobs,
        time_scale=connection.time_scale,
        period=connection.client.limiter.limit.period,
        endpoint=connection.label,
    )
    moved = anyio.Event()  # set by the next job event, then renewed

    def on_event(event: JobEvent) -> None:
        nonlocal moved
        progress(event)
        moved.set()
        moved = anyio.Event()

    from .._scheduling.scheduler import JobScheduler

    scheduler = JobScheduler(
        connection.client,
        max_in_flight=args.max_in_flight,
        # A shared journal reserves every POST's credits in one budget for every process.
        max_credits=None if shared else args.max_credits,
        resubmit=args.resubmit,
        journal=store,
        download_dir=out,
        file_stem=summary.file_stem,
        max_downloads=args.max_downloads,
        on_event=on_event,
        stream_results=True,
    )
    endpoint = endpoint_of(connection)
    claims = Claims(store, args, out, progress, endpoint=endpoint)

    async def claimed() -> AsyncIterator[JobSpec]:
        async for spec in claims.run(jobs):
            yield spec
            # Claim no further ahead than this process can start soon: with a shared journal
            # the rest is left to the other processes. Every job leaving the queue is an event.
            while scheduler.statistics().queued >= _CLAIM_AHEAD:
                with anyio.move_on_after(1.0):  # and a look a second, whatever comes
                    await moved.wait()

    async def work() -> None:
        async with scheduler, anyio.create_task_group() as tg:
            if not args.no_progress:
                process = getattr(store, "id", None)
                title = f"grok-imagine batch ({process})" if process else "grok-imagine batch"
                start_display(tg, progress, scheduler.statistics, title=title, live=live)
            scheduler.feed(claimed())
            async with contextlib.aclosing(scheduler.results()) as results:
                async for _ in results:
                    pass  # the journal records each result; the hook counts it
            tg.cancel_scope.cancel()

    interrupted = False
    try:
        _, interrupted = await run_until_interrupted(work)
    except AuthenticationError as exc:
        error("batch", exc)
        await forget_unsent(store, unknown)
        return EXIT_USAGE
    except JournalError as exc:
        error("batch", exc)
        _keep_pending(exc, tasks)
        return EXIT_FAILED
    except GrokImagineError as exc:  # a systemic fault (e.g. the network) that stopped the batch
        error("batch", f"the batch stopped: {describe_failure(exc, connection.label)}")
        _keep_pending(exc, tasks)
    except Exception as exc:  # a fault that stopped the batch: still report every paid job
        if getattr(args, "log_level", None) == "debug":
            traceback.print_exception(exc)
        leaf = leaf_error(exc)
        error("batch", f"the batch stopped: {describe_failure(leaf, connection.label)}")
        if isinstance(leaf, GrokImagineError):
            _keep_pending(leaf, tasks)
    else:
        await forget_unsent(store, unknown)
    try:
        outcome = await write_manifest(store, jobs, summary.keys, out, endpoint=endpoint)
    except OSError as exc:
        error("batch", f"cannot write the manifest in {out}: {exc.strerror or exc}")
        return EXIT_FAILED
    except InputError as exc:  # the file changed under the run: the journal has every job
        error("batch", f"cannot list the jobs not started: {exc}")
        return EXIT_FAILED
    outcome.earlier_credits = earlier_credits + claims.recovered_credits
    note_jobs(
        claims.recovered,
        f"the journal had lost are listed completed in {out / MANIFEST_NAME} with their "
        "videos: recorded again from it, not paid again.",
    )
    advice = advice_after(args, outcome, interrupted, emulated, connection.emulator_state)
    if progress.unreachable:
        advice.insert(
            0,
            f"{count_jobs(progress.unreachable)} could not reach {connection.label}: check the URL "
            "(--base-url) and the network, then run the same command again.",
        )
    print_summary(outcome, rich=live, advice=advice, emulated=emulated)
    if interrupted:
        return EXIT_INTERRUPTED
    if refused := refused_line(progress.stopped, outcome):
        error("batch", refused)
        return EXIT_REFUSED
    return EXIT_OK if outcome.all_completed else EXIT_FAILED


_CLAIM_AHEAD = 16
"""Jobs a process claims beyond those it has started."""


def _keep_pending(exc: GrokImagineError, tasks: TaskLog) -> None:
    """Print the paid tasks the journal may not hold, and keep them in the task log (whose
    space was set aside before the run), so that the next run polls them."""
    if not exc.pending_tasks:
        return
    note(
        f"{len(exc.pending_tasks)} paid jobs ended or were in flight without the journal "
        "recording it; their task ids (key task_id):"
    )
    for key, task_id in exc.pending_tasks.items():
        note(f"  {key} {task_id}")
    try:
        kept = tasks.write(dict(exc.pending_tasks))
    except OSError as failure:
        note(f"(could not keep them in {tasks.path}: {failure.strerror})")
        return
    note(f"Kept {kept} of them in {tasks.path}: the next run polls them, without paying again.")


def _use_live_display(args: argparse.Namespace) -> bool:
    if args.no_progress or not sys.stdout.isatty():
        return False
    if importlib.util.find_spec("rich") is None:
        note('For a live progress display: pip install "grok-imagine-async[cli]"')
        return False
    return True


MAX_PROBLEMS_SHOWN = 20
"""Bad input lines listed before the rest are only counted."""


def report_input_problems(exc: InputError) -> None:
    """Print every bad line gathered (the first ``MAX_PROBLEMS_SHOWN``), then how many in all."""
    if exc.problem_count == 1:
        error("batch", for_cli(f"{exc} (nothing was submitted)"))
        return
    for problem in exc.problems:
        error("batch", for_cli(str(problem)))
    hidden = exc.problem_count - len(exc.problems)
    shown = f" (the first {len(exc.problems)} are shown above)" if hidden else ""
    error(
        "batch",
        f"{exc.problem_count} problems in {exc.path}{shown}; nothing was submitted. Fix them "
        "and run the same command again.",
    )


def for_cli(message: str) -> str:
    """``message`` with the library's advice on keywords turned into the option to use."""
    return message.replace("pass allow_unlisted=True", "use --allow-unlisted")
