"""``grok-imagine batch INPUT --journal redis://HOST:PORT/DB``: one batch split over processes.

Every process (on any host) run on the same input with the same Redis takes the jobs nobody
owns yet, so each job is done once: a process writes the videos it downloaded to its ``--out``
and appends its own lines to ``DIR/manifest.jsonl``. Jobs owned by a process that stopped are
adopted once its lease runs out (``--lease``): polled if their task id is known, reported as
ambiguous if their POST was in flight. Run again after a crash, any process finishes what is
left. The rate limit and ``--max-credits`` are shared too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import ConfigurationError, GrokImagineError, JournalError
from .._scheduling.inputs import InputSummary, JobFile
from .._scheduling.jobs import JobEvent, JobResult, JobSpec, JournalRecord, JournalState
from .._settings import ENV_API_KEY
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    connect,
    error,
    run_until_interrupted,
    scaled_poll,
    target_url,
)
from .progress import BatchProgress, start_display
from .report import MANIFEST_NAME, manifest_entry

if TYPE_CHECKING:
    from ..redis import RedisJobStore, StoredJob


_CLAIM_AHEAD = 16
"""Jobs a process claims beyond those it has started."""


def is_redis_url(journal: str | None) -> bool:
    """Whether ``--journal`` names a Redis server rather than a file."""
    return journal is not None and journal.startswith(("redis://", "rediss://", "unix://"))


def batch_namespace(keys: frozenset[str], endpoint: str) -> str:
    """The store namespace of one batch: the same for every copy of the input, anywhere."""
    digest = hashlib.sha256(endpoint.encode())
    for key in sorted(keys):
        digest.update(b"\0" + key.encode())
    return f"batch-{digest.hexdigest()[:16]}"


async def run_shared(
    args: argparse.Namespace, jobs: JobFile, summary: InputSummary, live: bool = False
) -> int:
    """Run this process's part of the batch; return the exit status.

    ``live``: show the progress with a live ``rich`` display (else, unless ``--no-progress``,
    a plain line every ten seconds of the server's time).
    """
    if args.emulate:
        error("batch", "--journal redis:// needs a real or served emulator (--base-url), "
              "not --emulate: each process's built-in emulator would be its own")  # fmt: skip
        return EXIT_USAGE
    if not args.redis_url:
        args.redis_url = args.journal  # the same Redis shares the rate limit
    outcome: dict[str, int] = {}

    async def work() -> int:
        return await _work(args, jobs, summary, outcome, live=live)

    try:
        status, interrupted = await run_until_interrupted(work)
    except ConfigurationError as exc:
        error("batch", exc)
        return EXIT_USAGE
    except (JournalError, GrokImagineError) as exc:
        error("batch", exc)
        return EXIT_FAILED
    if outcome:
        print(
            "This process: {here} jobs finished ({completed} completed); {elsewhere} done by "
            "other processes; {left} not completed.".format(**outcome),
            flush=True,
        )
    if interrupted:
        return EXIT_INTERRUPTED
    return status if status is not None else EXIT_FAILED


async def _work(
    args: argparse.Namespace,
    jobs: JobFile,
    summary: InputSummary,
    outcome: dict[str, int],
    *,
    live: bool,
) -> int:
    from .._scheduling.polling import DurationModel
    from .._scheduling.scheduler import DEFAULT_SCHEDULER_POLL, JobScheduler
    from ..redis import RedisJobStore, RedisRateLimiter

    out = Path(args.out)
    api_key = args.api_key if args.api_key is not None else os.environ.get(ENV_API_KEY, "")
    async with connect(args) as connection:
        client = connection.client
        limiter = client.limiter if isinstance(client.limiter, RedisRateLimiter) else None
        store = RedisJobStore(
            args.journal,
            api_key=api_key,
            namespace=batch_namespace(summary.keys, client.base_url),
            max_credits=args.max_credits,
            lease=args.lease,
            limiter=limiter,
        )
        async with store:
            print(
                f"{summary.jobs} jobs from {summary.path} -> {out} (shared through Redis as "
                f"process {store.id})",
                flush=True,
            )
            scale = connection.time_scale
            progress = BatchProgress(
                summary.jobs,
                time_scale=scale,
                period=connection.rate_limit.period,
                endpoint=target_url(args),
            )
            moved = anyio.Event()  # set by the next job event, then renewed

            def on_event(event: JobEvent) -> None:
                nonlocal moved
                progress(event)
                moved.set()
                moved = anyio.Event()

            scheduler = JobScheduler(
                client,
                max_in_flight=args.max_in_flight,
                resubmit=args.resubmit,
                journal=store,
                download_dir=out,
                max_downloads=args.max_downloads,
                stream_results=True,
                on_event=on_event,
                poll=scaled_poll(DEFAULT_SCHEDULER_POLL, scale),
                duration_model=DurationModel(prior_median=DurationModel().prior_median / scale),
            )
            elsewhere = 0
            listed = await anyio.to_thread.run_sync(_listed_keys, out)
            known = _Completed(out, listed)

            async def claimed() -> AsyncIterator[JobSpec]:
                nonlocal elsewhere
                async for spec, done_elsewhere in _claim_all(store, jobs, args.lease, known):
                    if done_elsewhere:
                        elsewhere += 1
                        progress.elsewhere += 1
                        continue
                    yield spec
                    # Claim no further ahead than this process can start soon: the rest is
                    # left to the other processes. Every job leaving the queue is an event.
                    while scheduler.statistics().queued >= _CLAIM_AHEAD:
                        with anyio.move_on_after(1.0):  # and a look a second, whatever comes
                            await moved.wait()

            here = completed = 0
            async with scheduler, anyio.create_task_group() as tg:
                if not args.no_progress:
                    title = f"grok-imagine batch ({store.id})"
                    start_display(tg, progress, scheduler.statistics, title=title, live=live)
                scheduler.feed(claimed())
                async with contextlib.aclosing(scheduler.results()) as results:
                    async for result in results:
                        here += 1
                        completed += result.ok
                        known.ours(result.key, completed=result.ok)
                        await anyio.to_thread.run_sync(_append_manifest, out, result)
                tg.cancel_scope.cancel()
            left = await _settle(store, summary.keys, known, out)
            outcome.update(here=here, completed=completed, elsewhere=elsewhere, left=left)
            return EXIT_OK if left == 0 else EXIT_FAILED


async def _claim_all(
    store: RedisJobStore, jobs: JobFile, lease: float, completed: _Completed
) -> AsyncIterator[tuple[JobSpec, bool]]:
    """Each job of the input this process must run (False), or that another finished (True).

    Jobs a live process owns are put aside until the store says they finished (pub/sub) or
    their owner's lease ran out (then this process adopts them, or another one does).
    """
    waiting: dict[str, JobSpec] = {}
    settled: set[str] = set()
    changed = anyio.Event()

    def on_change(job: StoredJob | None) -> None:
        nonlocal changed
        if job is None or (job.key in waiting and job.final):
            if job is not None:
                settled.add(job.key)
                completed.note(job)
            changed.set()
            changed = anyio.Event()

    remove = store.add_listener(on_change)
    try:
        for spec in jobs:
            assert spec.key is not None
            outcome = await _take(store, spec, completed)
            if outcome is None:
                waiting[spec.key] = spec
            else:
                yield spec, outcome
        recheck = True  # what finished before the listener saw it
        while waiting:
            if recheck:
                for key in list(waiting):
                    outcome = await _take(store, waiting[key], completed)
                    if outcome is not None:
                        yield waiting.pop(key), outcome
                recheck = False
            for key in [k for k in settled if k in waiting]:
                yield waiting.pop(key), True
            settled.clear()
            for job in await store.adopt_orphans():
                if job.key in waiting:
                    yield waiting.pop(job.key), False
            if waiting:
                with anyio.move_on_after(max(0.05, lease / 3)) as timer:
                    await changed.wait()
                recheck = timer.cancelled_caught and not settled  # quiet: look once more
    finally:
        remove()


async def _take(store: RedisJobStore, spec: JobSpec, completed: _Completed) -> bool | None:
    """True: finished by someone; False: this process runs it; None: a live process does."""
    assert spec.key is not None
    while True:
        try:
            claim = await store.claim(spec.key, create=spec.request)
            break
        except JournalError:  # Redis unreachable: the jobs already claimed go on meanwhile
            await anyio.sleep(max(0.05, store.lease / 3))
    if claim.status == "final":
        assert claim.job is not None
        completed.note(claim.job)
        return True
    return False if claim.owned else None


class _Completed:
    """The jobs known to have completed, and what this folder's manifest lacks of them.

    A process stopped after a job finished and before it wrote the job's manifest line leaves
    the job completed in Redis, its videos in ``out`` and no line. The claims of the next run
    read the job's record anyway: those records are kept here, and their lines written at the
    end (:func:`_settle`).
    """

    def __init__(self, out: Path, listed: set[str]) -> None:
        self.keys: set[str] = set()
        self.unlisted: dict[str, JournalRecord] = {}
        self._out = Path(os.path.abspath(out))  # no look at the disk: this runs per claim
        self._listed = listed

    def note(self, job: StoredJob) -> None:
        """A job another process (or an earlier run) recorded as final."""
        record = job.record
        if record is None or record.state is not JournalState.COMPLETED:
            return
        self.keys.add(job.key)
        here = record.files and all(
            Path(os.path.abspath(f)).is_relative_to(self._out) for f in record.files
        )
        if here and job.key not in self._listed:
            self.unlisted[job.key] = record

    def ours(self, key: str, *, completed: bool) -> None:
        """A job this process finished; its line is being written."""
        self._listed.add(key)
        self.unlisted.pop(key, None)
        if completed:
            self.keys.add(key)


async def _settle(store: RedisJobStore, keys: frozenset[str], known: _Completed, out: Path) -> int:
    """Write the manifest lines ``out`` lacks; return how many jobs Redis does not record as
    completed (of those not ``known`` to be)."""
    for record in known.unlisted.values():
        if all(_ours(f, out) for f in record.files):  # still there, and not another host's
            await anyio.to_thread.run_sync(_append_line, out, manifest_entry(record, out))
    left = 0
    for key in keys - known.keys:
        while True:
            try:
                job = await store.peek(key)
                break
            except JournalError:  # Redis unreachable: wait for it
                await anyio.sleep(max(0.05, store.lease / 3))
        if job is None or job.record is None or job.record.state is not JournalState.COMPLETED:
            left += 1
    return left


def _ours(file: str, out: Path) -> bool:
    """Whether a recorded video is in this process's output folder (not another host's)."""
    path = Path(file)
    return path.is_file() and path.resolve().is_relative_to(out.resolve())


def _listed_keys(out: Path) -> set[str]:
    """The keys of the lines in ``out``'s manifest (this process's and earlier runs')."""
    keys: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                keys.add(json.loads(line)["key"])
    return keys


def _append_manifest(out: Path, result: JobResult) -> None:
    """Append this process's line for ``result`` (one ``write``: lines of processes sharing
    ``out`` do not interleave)."""
    entry: dict[str, Any] = {
        "key": result.key,
        "status": "completed" if result.ok else "failed",
        "task_id": result.task_id,
        "files": [_relative(f, out) for f in result.files],
        "error": None if result.error is None else str(result.error),
        "failure_class": None if result.failure_class is None else result.failure_class.value,
        "attempts": result.attempts,
        "credits": result.credits,
        "prompt": result.request.prompt,
    }
    _append_line(out, entry)


def _append_line(out: Path, entry: dict[str, Any]) -> None:
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    with (out / MANIFEST_NAME).open("a", encoding="utf-8") as handle:
        handle.write(line)


def _relative(path: Path, out: Path) -> str:
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)
