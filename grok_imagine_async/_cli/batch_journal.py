"""A batch's journal (a SQLite file, or a Redis every process shares): opened, read at the
start of a run, and asked which jobs of the input this process runs. The resume policy
(:mod:`~grok_imagine_async._scheduling.resume`) decides what a finished job needs, the
journal's ``claim`` who runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio

from .._errors import JournalError
from .._files import TaskLog, run_blocking
from .._journal.codec import request_digest
from .._journal.sqlite import SqliteJobStore
from .._models import FailureClass, Task, TaskStatus
from .._scheduling.inputs import InputSummary
from .._scheduling.jobs import (
    Claim,
    JobFinished,
    JobResult,
    JobSpec,
    JobStore,
    StoredJob,
    StoreRecord,
    StoreState,
)
from .._scheduling.resume import Reopening, must_retake, recorded_result, reopening, same_request
from .common import Connection, UsageError, note, printable, redis_url
from .progress import BatchProgress
from .report import MANIFEST_NAME, count_jobs

TASK_LOG_NAME = ".unrecorded-tasks"  # in --out: paid task ids the journal could not take
ENDPOINT_META = "endpoint"
EMULATED_ENDPOINT = "built-in emulator"


def is_redis_url(journal: str | None) -> bool:
    """Whether ``--journal`` names a Redis server rather than a file."""
    return journal is not None and journal.startswith(("redis://", "rediss://", "unix://"))


def batch_namespace(keys: frozenset[str], endpoint: str) -> str:
    """The Redis namespace of one batch: the same for every copy of the input, anywhere."""
    digest = hashlib.sha256(endpoint.encode())
    for key in sorted(keys):
        digest.update(b"\0" + key.encode())
    return f"batch-{digest.hexdigest()[:16]}"


_PARTIAL = re.compile(r"\..+\.[0-9a-f]{8}\.part")


def _remove_partial_downloads(out: Path) -> None:
    """Delete what downloads cut short by a crash left (``.<name>.<hex>.part``); called with
    the journal file locked, so no other run of this batch is downloading there."""
    for path in out.glob(".*.part"):
        if _PARTIAL.fullmatch(path.name):
            path.unlink(missing_ok=True)


async def open_store(
    stack: contextlib.AsyncExitStack,
    args: argparse.Namespace,
    connection: Connection,
    summary: InputSummary,
    journal_path: Path | None,
) -> JobStore:
    """Open the batch's journal: the SQLite file ``journal_path``, or the Redis ``--journal``."""
    if journal_path is not None:
        journal = SqliteJobStore(journal_path)
        await journal.open()
        stack.push_async_callback(journal.aclose)
        await run_blocking(_remove_partial_downloads, Path(args.out))
        return journal
    from ..redis import RedisJobStore, RedisRateLimiter

    client = connection.client
    limiter = client.limiter if isinstance(client.limiter, RedisRateLimiter) else None
    store = RedisJobStore(
        redis_url(args.journal),
        api_key=client.settings.api_key,
        namespace=batch_namespace(summary.keys, connection.label),
        max_credits=args.max_credits,
        lease=args.lease,
        finished_ttl=None,  # kept for the life of the batch: a rerun must not pay again
        limiter=limiter,
    )
    await stack.enter_async_context(store)
    policy = await store.eviction_policy()
    if policy.startswith("allkeys-"):
        note(
            f"Warning: this Redis evicts any key when full (maxmemory-policy {policy}): a "
            "finished job it drops would be generated, and paid, again. Use noeviction or a "
            "volatile-* policy for a shared batch."
        )
    return store


class Claims:
    """The jobs of the input this process runs, claimed from the journal one by one: a job
    nobody runs is claimed; a finished one is counted done (unless the resume policy, a
    changed request or its missing videos make this run take it up again); one a live process
    runs waits until it finishes, or its owner's lease runs out (then this process adopts it).
    """

    def __init__(
        self,
        store: JobStore,
        args: argparse.Namespace,
        out: Path,
        progress: BatchProgress,
        *,
        endpoint: str,
    ) -> None:
        self._store = store
        self._endpoint = endpoint
        self._wait = max(0.05, args.lease / 3)
        self._resubmit = args.on_ambiguous == "resubmit"
        self._out = Path(os.path.abspath(out))
        self._progress = progress
        self._done: set[str] = set()  # finished before this run could take them
        self._mine: set[str] = set()  # taken by this run
        self._listed: dict[str, dict[str, Any]] = {}  # completed lines of the last manifest
        # Jobs the journal lost and the last manifest lists completed (videos in --out), and
        # what they cost: recorded again from it, not paid again.
        self.recovered = self.recovered_credits = 0

    async def run(self, jobs: Iterable[JobSpec]) -> AsyncIterator[JobSpec]:
        self._listed = await run_blocking(completed_in_manifest, self._out, self._endpoint)
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

        remove = self._store.subscribe(on_change)
        try:
            for spec in jobs:
                if await self._take(spec):
                    yield spec
                elif spec.key not in self._done:
                    waiting[str(spec.key)] = spec
            recheck = True  # what finished before the listener saw it
            while waiting:
                for key in list(waiting) if recheck else [k for k in settled if k in waiting]:
                    if await self._take(waiting[key]):
                        yield waiting[key]
                    if key in self._done or key in self._mine:
                        del waiting[key]
                settled.clear()
                if waiting:
                    with anyio.move_on_after(self._wait) as timer:
                        await changed.wait()
                    recheck = timer.cancelled_caught  # quiet: look at every one once more
        finally:
            remove()

    async def _take(self, spec: JobSpec) -> bool:
        """True if this process runs ``spec`` now; else it is done, or a live process runs it."""
        key = str(spec.key)
        claim = await self._claim(key, spec)
        if claim.status == "final":
            assert claim.job is not None
            record = claim.job.record
            assert record is not None
            if not self._retake(record, spec):
                self._done.add(key)
                now = anyio.current_time()
                result = recorded_result(record, spec.request, at=now)
                self._progress(JobFinished(key=key, at=now, result=result))
                return False
            if not same_request(record, spec.request):
                note(
                    f"job {printable(key)} was done with another request (another input with the "
                    "same ids?): it is generated again for this one."
                )
            claim = await self._claim(key, spec, reopen=True)
        if claim.status == "created" and await self._recover(key, spec):
            return False
        if claim.owned:
            self._mine.add(key)
            return True
        return False

    async def _recover(self, key: str, spec: JobSpec) -> bool:
        """Record ``key`` from the last manifest if it lists it completed (same request, videos
        still there): a journal that lost it (Redis wiped, the file deleted) must not pay again."""
        entry = self._listed.get(key)
        if entry is None or entry.get("request_digest") != request_digest(spec.request):
            return False
        now = anyio.current_time()
        task = Task(
            task_id=entry["task_id"],
            status=TaskStatus.COMPLETED,
            raw_status="completed",
            videos=tuple(entry["videos"]),
        )
        result = JobResult(
            key=key,
            request=spec.request,
            task=task,
            error=None,
            failure_class=None,
            attempts=int(entry.get("attempts") or 1),
            credits=int(entry.get("credits") or 0),
            polls=0,
            submitted_at=None,
            finished_at=now,
            files=tuple(self._out / f for f in entry["files"]),
            from_journal=True,
        )
        await self._store.record_finished(result)
        self._done.add(key)
        self.recovered += 1
        self.recovered_credits += result.credits
        self._progress(JobFinished(key=key, at=now, result=result))
        return True

    async def _claim(self, key: str, spec: JobSpec, *, reopen: bool = False) -> Claim:
        while True:
            try:
                return await self._store.claim(key, create=spec.request, reopen=reopen)
            except JournalError:
                if not self._passing():
                    raise  # a refusal (a permission, a full disk), not an outage
                # The jobs already claimed go on meanwhile.
                await anyio.sleep(self._wait)

    def _passing(self) -> bool:
        """Whether a shared journal's trouble passes by itself: Redis unreachable, or back from
        losing its data (every process writes its jobs back within a lease)."""
        store = self._store
        if not getattr(store, "available", True):
            return True
        may_create = getattr(store, "may_create", None)
        return may_create is not None and not may_create()

    def _retake(self, record: StoreRecord, spec: JobSpec) -> bool:
        """Whether this run must take a finished job up again."""
        if must_retake(record, spec.request, resubmit_ambiguous=self._resubmit):
            return True
        if record.state is not StoreState.COMPLETED or not record.files:
            return False
        files = [Path(os.path.abspath(f)) for f in record.files]
        # Videos recorded in this --out and missing there: downloaded again (another host's
        # videos are its own).
        return all(f.is_relative_to(self._out) for f in files) and not all(
            f.is_file() for f in files
        )


async def take_back(journal: JobStore, kept: dict[str, str]) -> int:
    """Record the task ids a run kept in its task log (its journal could not take them) for
    the jobs whose outcome the journal does not know; return how many."""
    taken = 0
    for key, task_id in kept.items():
        record = await journal.load(key)
        unknown = (
            record is not None
            and not record.task_id
            and (
                record.state is StoreState.INTENT
                or record.failure_class is FailureClass.AMBIGUOUS_SUBMIT
            )
        )
        if not unknown:
            continue  # recorded after all, or not a job of this journal
        claim = await journal.claim(key, reopen=True)
        if claim.owned:
            await journal.record_submitted(key, task_id)
            taken += 1
    return taken


def endpoint_of(connection: Connection) -> str:
    """Where a batch's tasks live, as its journal and manifest name it (no password)."""
    return EMULATED_ENDPOINT if connection.emulated else connection.label


def completed_in_manifest(out: Path, endpoint: str) -> dict[str, dict[str, Any]]:
    """The lines of ``out``'s manifest for jobs completed against ``endpoint`` whose videos
    are all still there."""
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


async def forget_unsent(journal: JobStore, known: set[str] | None) -> None:
    """After the scheduler stopped in good order, forget the intents it left: every POST sent
    ended recorded (its answer is read under a shield), so such an intent is a job stopped
    before sending (Ctrl-C) or refused outright (a rejected token), not an unknown outcome."""
    if known is None:
        return
    unsent = [
        r.key
        async for r in journal.records()
        if r.state is StoreState.INTENT and r.key not in known
    ]
    for key in unsent:
        await journal.forget(key)
    if unsent:
        note(
            f"{len(unsent)} jobs were stopped before their submission was sent (or it was "
            "refused): they start afresh next time."
        )


async def prepare(
    args: argparse.Namespace, journal: JobStore, connection: Connection, tasks: TaskLog
) -> set[str] | None:
    """Check the journal fits this run, take back the task ids ``tasks`` kept for it, set
    aside room for the next ones, and say what it will resume.

    Returns:
        The jobs whose outcome was unknown before this run (None: no such jobs are kept).

    Raises:
        UsageError: The journal holds jobs run against another endpoint.
    """
    endpoint = endpoint_of(connection)
    recorded = await journal.get_meta(ENDPOINT_META)
    if recorded is not None and recorded != endpoint:
        raise UsageError(
            f"journal {journal_name(journal)} holds jobs run against {recorded}, not "
            f"{endpoint}: their task ids mean nothing there. Use another --journal (or --out)."
        )
    if recorded is None:
        await journal.set_meta(ENDPOINT_META, endpoint)
    taken = await take_back(journal, await run_blocking(tasks.read))
    if taken:
        note(
            f"The task ids of {count_jobs(taken)} the journal could not record were kept in "
            f"{tasks.path}: they are polled, not sent again."
        )
    try:  # before anything is paid: the log needs no new space when the disk is full
        await run_blocking(tasks.reserve)
        if taken:
            await run_blocking(tasks.write, {})  # recorded now: not taken back twice
    except OSError as exc:
        note(f"Warning: cannot set aside {tasks.path} ({exc.strerror})")
    records = [r async for r in journal.records()]
    if connection.emulator is not None:
        # Those the emulator did not take up (not kept, or not sent) start again, at no cost.
        known = set(connection.emulator.task_ids())
        in_flight = [
            r
            for r in records
            if r.state is StoreState.INTENT
            or (r.state is StoreState.SUBMITTED and r.task_id not in known)
        ]
        for record in in_flight:
            await journal.forget(record.key)
        note_jobs(
            len(in_flight),
            "in flight when the last emulated run stopped will start again: the emulator did "
            "not keep their tasks.",
        )
        records = [r for r in records if r not in in_flight]
    # The scheduler applies the library's resume policy to each job; count what it will do.
    resubmit = args.on_ambiguous == "resubmit"
    kinds = Counter(reopening(r, resubmit_ambiguous=resubmit) for r in records)
    note_jobs(
        kinds[Reopening.UNPAID],
        "that failed without being paid (the credit budget, or a request the API refused) "
        "will be submitted again.",
    )
    note_jobs(
        kinds[Reopening.UNDOWNLOADED],
        "completed but not downloaded will be downloaded again (already paid: not submitted "
        "again).",
    )
    intents = {r.key for r in records if r.state is StoreState.INTENT}
    if connection.emulated:
        return None  # every unknown outcome was forgotten above
    if resubmit:
        note_jobs(
            kinds[Reopening.AMBIGUOUS],
            "whose submission outcome was unknown will be submitted again, as --on-ambiguous "
            "resubmit asks: some may be paid twice.",
        )
        return None
    if isinstance(journal, SqliteJobStore):  # shared: maybe a live process's
        note_jobs(
            len(intents),
            "had a submission in flight when the last run stopped. Whether it started a task "
            "is unknown, so they are not sent again: that could pay twice.",
        )
    return intents


def note_jobs(n: int, text: str) -> None:
    """``note`` "<n> jobs <text>", if there are any."""
    if n:
        note(f"{count_jobs(n)} {text}")


def journal_name(journal: JobStore) -> str:
    """The journal, for messages: its file, or the Redis store (never its URL's password)."""
    path = getattr(journal, "path", None)
    return str(path) if path is not None else repr(journal)
