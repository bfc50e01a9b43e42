"""A durable journal of a batch in one SQLite file, so a crash loses no job and pays nothing twice.

The scheduler writes through it (see :class:`~grok_imagine_async._scheduling.jobs.JobStore`): the
intent to submit before each POST, the task id right after the answer, then the outcome and the
downloaded files. Every write is committed with ``synchronous=FULL`` in WAL mode, so it is on
disk when the call returns, and a ``SIGKILL`` a microsecond later cannot undo it.

Writes that arrive together are committed together (group commit): with 300 jobs in flight the
disk sees one flush per batch of answers, not one per answer. The file is locked for the
journal's lifetime, so two processes can never run the same batch at once and both pay for it.
Only the standard library's :mod:`sqlite3` is used; blocking calls run in a worker thread.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

from .._errors import JournalError, TaskFailedError
from .._files import run_blocking
from .._models import CREDITS_PER_GENERATION, GenerationRequest
from .._scheduling.jobs import Claim, JobResult, Listener, StoredJob, StoreRecord, StoreState
from .codec import request_digest
from .sqlite_file import (
    close,
    connect,
    journal_error,
    read_one,
    read_page,
    request_json,
)

__all__ = ["JournalError", "SqliteJobStore"]

_T = TypeVar("_T")


@dataclass
class _Op(Generic[_T]):
    """One read or write waiting for its turn, and how it went."""

    apply: Callable[[sqlite3.Connection], _T]
    write: bool
    done: bool = False
    result: _T | None = None
    error: BaseException | None = None


class SqliteJobStore:
    """The :class:`~grok_imagine_async._scheduling.jobs.JobStore` of one batch, in one SQLite file.

    Creating it does no I/O; the file is created or opened (and locked) by the first call that
    needs it, by :meth:`open`, or on entering ``async with``. Use one journal per run of a batch:
    re-running with the same file resumes it.

    Args:
        path: The journal file (created if missing; its folder must exist).

    Raises:
        JournalError: From the first call, if the file cannot be used (see the class).

    Example:
        >>> async def main() -> None:
        ...     async with SqliteJobStore("run.db") as journal:
        ...         print(await journal.counts())
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._pending: list[_Op[Any]] = []
        self._closed = False
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self._path)!r})"

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SqliteJobStore:
        """Open (creating if needed) and lock the file now rather than at first use.

        Returns:
            The journal itself.

        Raises:
            JournalError: If the file cannot be used.
        """
        async with self._lock:
            await self._ensure_open()
        return self

    async def __aenter__(self) -> SqliteJobStore:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Commit what is pending, close the file and release its lock. Idempotent."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                self._closed = True
                conn, self._conn = self._conn, None
                if conn is not None:
                    await run_blocking(close, conn)

    async def _ensure_open(self) -> sqlite3.Connection:
        # Called with the lock held.
        if self._closed:
            raise JournalError(f"journal {self._path} is closed", path=self._path)
        if self._conn is None:
            self._conn = await run_blocking(connect, self._path)
        return self._conn

    # -- the JobStore protocol ----------------------------------------------------------------

    async def load(self, key: str) -> StoreRecord | None:
        """The record for ``key``, or None if the journal never saw it."""
        return await self._read(functools.partial(read_one, key=key))

    async def record_intent(self, key: str, request: GenerationRequest, attempt: int) -> None:
        """Record that POST number ``attempt`` for ``key`` is about to be sent.

        The job's previous task id (of a failed attempt) is cleared: from now until
        :meth:`record_submitted`, the outcome of this POST is unknown. A call cancelled before
        its write started writes nothing, so a job stopped before its POST is not mistaken for
        an ambiguous one.
        """
        text, digest = request_json(request), request_digest(request)

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs (key, request, state, task_id, attempts, updated_at, "
                "request_digest) VALUES (?, ?, ?, NULL, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET request = excluded.request, "
                "state = excluded.state, task_id = NULL, "
                "attempts = max(jobs.attempts, excluded.attempts), "
                "error = NULL, failure_class = NULL, updated_at = excluded.updated_at, "
                "request_digest = excluded.request_digest",
                (key, text, StoreState.INTENT.value, attempt, time.time(), digest),
            )

        await self._write_told(key, apply, shield=False)

    async def record_submitted(self, key: str, task_id: str) -> None:
        """Record that the POST for ``key`` created ``task_id`` (and cost 40 credits).

        Shielded from cancellation: once the server answered, the task id must not be lost.
        """

        def apply(conn: sqlite3.Connection) -> None:
            now = time.time()
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, task_id = ?, credits = credits + ?, updated_at = ? "
                "WHERE key = ?",
                (StoreState.SUBMITTED.value, task_id, CREDITS_PER_GENERATION, now, key),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"record_submitted({key!r}) without record_intent")
            conn.execute(
                "INSERT INTO tasks (key, attempt, task_id, created_at) "
                "SELECT key, attempts, ?, ? FROM jobs WHERE key = ?",
                (task_id, now, key),
            )

        await self._write_told(key, apply, shield=True)

    async def record_finished(self, result: JobResult) -> None:
        """Record how the job ended: state, last task, videos, error and failure class.

        Attempts and credits never go down: the journal may know of POSTs from earlier runs.
        """
        state = StoreState.COMPLETED if result.ok else StoreState.FAILED
        error: str | None = None
        if not result.ok:
            if isinstance(result.error, TaskFailedError):  # the reason: a replay adds the rest
                failed = result.error.task
                error = failed.error_message or f"status {failed.raw_status!r}"
            elif result.error is not None:
                error = str(result.error)
            elif result.task is not None:
                error = result.task.error_message or f"status {result.task.raw_status!r}"
        values = (
            result.key,
            request_json(result.request),
            state.value,
            result.task_id,
            result.attempts,
            result.credits,
            # A completed task whose download failed keeps its URLs: a later run can retry.
            json.dumps(list(_videos(result))),
            json.dumps([str(f) for f in result.files]),
            error,
            None if result.failure_class is None else result.failure_class.value,
            time.time(),
            request_digest(result.request),
        )

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs (key, request, state, task_id, attempts, credits, videos, "
                "files, error, failure_class, updated_at, request_digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET state = excluded.state, "
                "request = excluded.request, request_digest = excluded.request_digest, "
                "task_id = coalesce(excluded.task_id, jobs.task_id), "
                "attempts = max(jobs.attempts, excluded.attempts), "
                "credits = max(jobs.credits, excluded.credits), videos = excluded.videos, "
                "files = CASE WHEN excluded.files = '[]' THEN jobs.files ELSE excluded.files END, "
                "error = excluded.error, failure_class = excluded.failure_class, "
                "updated_at = excluded.updated_at",
                values,
            )

        await self._write_told(result.key, apply, shield=True)

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        """Record that the job's videos were downloaded to ``files``."""
        text = json.dumps([str(f) for f in files])

        def apply(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE jobs SET files = ?, updated_at = ? WHERE key = ?", (text, time.time(), key)
            )
            if cursor.rowcount == 0:
                raise KeyError(f"record_files({key!r}) for a job the journal never saw")

        await self._write(apply, shield=True)

    # -- sharing: one process owns every job ------------------------------------------------

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """This process owns every job of its journal (the file is locked): ``"final"`` for a
        finished job unless ``reopen``, else ``"mine"``, ``"created"`` or ``"unknown"``."""
        record = await self.load(key)
        if record is None:
            if create is None:
                return Claim("unknown", None)
            return Claim("created", StoredJob(key, create, None))  # written at its intent
        job = StoredJob(key, record.request, record)
        if job.final:
            return Claim("reopened" if reopen else "final", job)
        return Claim("mine", job)

    async def forget(self, key: str) -> None:
        """Take ``key`` back to never started (its task history is kept)."""
        await self._write(
            lambda c: c.execute("DELETE FROM jobs WHERE key = ?", (key,)), shield=True
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each change of a job (this process is the only writer: the
        file is locked)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _write_told(
        self, key: str, apply: Callable[[sqlite3.Connection], object], *, shield: bool
    ) -> None:
        """Write, then tell the listeners of the job as written (read back in the same
        transaction: no extra trip to the worker thread)."""

        def apply_and_read(conn: sqlite3.Connection) -> StoreRecord | None:
            apply(conn)
            return read_one(conn, key=key) if self._listeners else None

        record = await self._write(apply_and_read, shield=shield)
        if record is not None:
            job = StoredJob(key, record.request, record)
            for listener in list(self._listeners):
                listener(job)

    # -- reading, for reports ----------------------------------------------------------------

    async def records(self, *, page_size: int = 1000) -> AsyncIterator[StoreRecord]:
        """Every record, in the order the jobs were first recorded, read a page at a time.

        Memory stays bounded whatever the journal's size.
        """
        after = 0
        while True:
            after, page = await self._read(
                functools.partial(read_page, after=after, size=page_size)
            )
            for record in page:
                yield record
            if len(page) < page_size:
                return

    async def counts(self) -> Mapping[StoreState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        rows = await self._read(
            lambda c: c.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        )
        found = dict(rows)
        return {state: int(found.get(state.value, 0)) for state in StoreState}

    async def task_ids(self, key: str) -> list[str]:
        """Every task id recorded for ``key``, oldest first (one per paid submission)."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT task_id FROM tasks WHERE key = ? ORDER BY rowid", (key,)
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    async def get_meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`, or None."""
        row = await self._read(
            lambda c: c.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def set_meta(self, name: str, value: str) -> None:
        """Store a small named value with the batch (e.g. the API base URL it ran against)."""
        await self._write(
            lambda c: c.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            ),
            shield=True,
        )

    # -- plumbing ----------------------------------------------------------------------------

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._run(query, write=False, shield=False)

    async def _write(self, apply: Callable[[sqlite3.Connection], _T], *, shield: bool) -> _T:
        return await self._run(apply, write=True, shield=shield)

    async def _run(
        self, apply: Callable[[sqlite3.Connection], _T], *, write: bool, shield: bool
    ) -> _T:
        # Whoever takes the lock runs every operation queued so far in one worker-thread trip
        # and one transaction (group commit); the others find theirs done when they get it.
        op: _Op[_T] = _Op(apply, write)
        self._pending.append(op)
        with anyio.CancelScope(shield=shield):
            try:
                async with self._lock:
                    if not op.done:
                        batch, self._pending = self._pending, []
                        try:
                            conn = await self._ensure_open()
                        except BaseException as exc:
                            for item in batch:
                                item.done, item.error = True, exc
                            raise
                        await run_blocking(self._execute, conn, batch)
            except BaseException:
                if not op.done and op in self._pending:
                    self._pending.remove(op)  # cancelled while waiting: never run
                raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def _execute(self, conn: sqlite3.Connection, batch: list[_Op[Any]]) -> None:
        # A savepoint per write, so one failing write does not take the others down with it.
        writes = [item for item in batch if item.write]
        try:
            if writes:
                conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                if item.write:
                    conn.execute("SAVEPOINT op")
                try:
                    item.result = item.apply(conn)
                except Exception as exc:
                    if item.write:
                        conn.execute("ROLLBACK TO op")
                    item.error = (
                        journal_error(self._path, exc)
                        if isinstance(exc, sqlite3.DatabaseError)
                        else exc
                    )
                if item.write:
                    conn.execute("RELEASE op")
            if writes:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = journal_error(self._path, exc)
            for item in writes:
                item.error = error
        finally:
            for item in batch:
                item.done = True


def _videos(result: JobResult) -> tuple[str, ...]:
    task = result.task
    return task.videos if task is not None and task.succeeded else ()
