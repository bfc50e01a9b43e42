"""A durable journal of a batch in one SQLite file, so a crash loses no job and pays nothing twice.

The scheduler writes through it (see :class:`~grok_imagine_async._jobs.Journal`): the intent to
submit before each POST, the task id right after the answer, then the outcome and the downloaded
files. Every write is committed with ``synchronous=FULL`` in WAL mode, so it is on disk when the
call returns, and a ``SIGKILL`` a microsecond later cannot undo it.

Writes that arrive together are committed together (group commit): with 300 jobs in flight the
disk sees one flush per batch of answers, not one per answer. The file is locked for the
journal's lifetime, so two processes can never run the same batch at once and both pay for it.
Only the standard library's :mod:`sqlite3` is used; blocking calls run in a worker thread.
"""

from __future__ import annotations

import contextlib
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
import anyio.to_thread

from ._errors import GrokImagineError
from ._jobs import JobResult, JournalRecord, JournalState
from ._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest

__all__ = ["JournalError", "SqliteJournal"]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x47494A31  # "GIJ1": marks the file as ours, so a stray database is refused
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE jobs (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    credits INTEGER NOT NULL DEFAULT 0,
    videos TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    failure_class TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE tasks (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX tasks_key ON tasks (key);
"""
_COLUMNS = "key, request, state, task_id, attempts, credits, videos, files, error, failure_class"


class JournalError(GrokImagineError):
    """Raised when a journal file cannot be used.

    For instance: it is not a journal (another SQLite database, or not SQLite at all), it was
    written by a newer version of this library, it is corrupt, or another process has it open.

    Attributes:
        path: The journal file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class _Op(Generic[_T]):
    """One read or write waiting for its turn, and how it went."""

    apply: Callable[[sqlite3.Connection], _T]
    write: bool
    done: bool = False
    result: _T | None = None
    error: BaseException | None = None


class SqliteJournal:
    """The :class:`~grok_imagine_async._jobs.Journal` of one batch, in one SQLite file.

    Creating it does no I/O; the file is created or opened (and locked) by the first call that
    needs it, by :meth:`open`, or on entering ``async with``. Use one journal per run of a batch:
    re-running with the same file resumes it.

    Args:
        path: The journal file (created if missing; its folder must exist).

    Raises:
        JournalError: From the first call, if the file cannot be used (see the class).

    Example:
        >>> async def main() -> None:
        ...     async with SqliteJournal("run.db") as journal:
        ...         print(await journal.counts())
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._pending: list[_Op[Any]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteJournal({str(self._path)!r})"

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SqliteJournal:
        """Open (creating if needed) and lock the file now rather than at first use.

        Returns:
            The journal itself.

        Raises:
            JournalError: If the file cannot be used.
        """
        async with self._lock:
            await self._ensure_open()
        return self

    async def __aenter__(self) -> SqliteJournal:
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
                    await anyio.to_thread.run_sync(_close, conn)

    async def _ensure_open(self) -> sqlite3.Connection:
        # Called with the lock held.
        if self._closed:
            raise JournalError(f"journal {self._path} is closed", path=self._path)
        if self._conn is None:
            self._conn = await anyio.to_thread.run_sync(_connect, self._path)
        return self._conn

    # -- the Journal protocol ----------------------------------------------------------------

    async def load(self, key: str) -> JournalRecord | None:
        """The record for ``key``, or None if the journal never saw it."""
        return await self._read(functools.partial(_load, key=key))

    async def record_intent(self, key: str, request: GenerationRequest, attempt: int) -> None:
        """Record that POST number ``attempt`` for ``key`` is about to be sent.

        The job's previous task id (of a failed attempt) is cleared: from now until
        :meth:`record_submitted`, the outcome of this POST is unknown. A call cancelled before
        its write started writes nothing, so a job stopped before its POST is not mistaken for
        an ambiguous one.
        """
        text = _request_json(request)

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs (key, request, state, task_id, attempts, updated_at) "
                "VALUES (?, ?, ?, NULL, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET request = excluded.request, "
                "state = excluded.state, task_id = NULL, "
                "attempts = max(jobs.attempts, excluded.attempts), "
                "error = NULL, failure_class = NULL, updated_at = excluded.updated_at",
                (key, text, JournalState.INTENT.value, attempt, time.time()),
            )

        await self._write(apply, shield=False)

    async def record_submitted(self, key: str, task_id: str) -> None:
        """Record that the POST for ``key`` created ``task_id`` (and cost 40 credits).

        Shielded from cancellation: once the server answered, the task id must not be lost.
        """

        def apply(conn: sqlite3.Connection) -> None:
            now = time.time()
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, task_id = ?, credits = credits + ?, updated_at = ? "
                "WHERE key = ?",
                (JournalState.SUBMITTED.value, task_id, CREDITS_PER_GENERATION, now, key),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"record_submitted({key!r}) without record_intent")
            conn.execute(
                "INSERT INTO tasks (key, attempt, task_id, created_at) "
                "SELECT key, attempts, ?, ? FROM jobs WHERE key = ?",
                (task_id, now, key),
            )

        await self._write(apply, shield=True)

    async def record_finished(self, result: JobResult) -> None:
        """Record how the job ended: state, last task, videos, error and failure class.

        Attempts and credits never go down: the journal may know of POSTs from earlier runs.
        """
        state = JournalState.COMPLETED if result.ok else JournalState.FAILED
        error: str | None = None
        if not result.ok:
            if result.error is not None:
                error = str(result.error)
            elif result.task is not None:
                error = result.task.error_message or f"status {result.task.raw_status!r}"
        values = (
            result.key,
            _request_json(result.request),
            state.value,
            result.task_id,
            result.attempts,
            result.credits,
            json.dumps(list(result.videos)),
            json.dumps([str(f) for f in result.files]),
            error,
            None if result.failure_class is None else result.failure_class.value,
            time.time(),
        )

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs (key, request, state, task_id, attempts, credits, videos, "
                "files, error, failure_class, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET state = excluded.state, "
                "task_id = coalesce(excluded.task_id, jobs.task_id), "
                "attempts = max(jobs.attempts, excluded.attempts), "
                "credits = max(jobs.credits, excluded.credits), videos = excluded.videos, "
                "files = CASE WHEN excluded.files = '[]' THEN jobs.files ELSE excluded.files END, "
                "error = excluded.error, failure_class = excluded.failure_class, "
                "updated_at = excluded.updated_at",
                values,
            )

        await self._write(apply, shield=True)

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

    # -- reading, for reports ----------------------------------------------------------------

    async def records(self, *, page_size: int = 1000) -> AsyncIterator[JournalRecord]:
        """Every record, in the order the jobs were first recorded, read a page at a time.

        Memory stays bounded whatever the journal's size.
        """
        after = 0
        while True:
            after, page = await self._read(functools.partial(_page, after=after, size=page_size))
            for record in page:
                yield record
            if len(page) < page_size:
                return

    async def counts(self) -> Mapping[JournalState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        rows = await self._read(
            lambda c: c.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        )
        found = dict(rows)
        return {state: int(found.get(state.value, 0)) for state in JournalState}

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
                        await anyio.to_thread.run_sync(self._execute, conn, batch)
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
                        _journal_error(self._path, exc)
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
            error = _journal_error(self._path, exc)
            for item in writes:
                item.error = error
        finally:
            for item in batch:
                item.done = True


# -- synchronous helpers (run in a worker thread) ----------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    _check_header(path)
    try:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=0.5
        )
    except sqlite3.Error as exc:
        raise _journal_error(path, exc) from None
    try:
        # EXCLUSIVE: the lock taken by the first write below is held until close, so a second
        # process on the same journal fails at once instead of submitting the same jobs.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path}: cannot use WAL mode (got {mode})", path=path)
        conn.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
        conn.execute("BEGIN IMMEDIATE")
        try:
            _check_or_create_schema(conn, path)
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('created_at', ?)",
                (str(time.time()),),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise JournalError(
                f"journal {path} is in use by another process (another run of this batch?)",
                path=path,
            ) from None
        raise _journal_error(path, exc) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _journal_error(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise JournalError(
                f"cannot create journal {path}: folder {path.parent} does not exist", path=path
            ) from None
        return
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}", path=path) from None
    if head and head != b"SQLite format 3\x00":
        raise JournalError(f"{path} is not a journal (not an SQLite file)", path=path)


def _check_or_create_schema(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id == 0 and version == 0 and tables == 0:
        # One statement at a time: executescript() would COMMIT the open transaction.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        return
    if app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is an SQLite database but not a grok-imagine journal", path=path
        )
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, newer than this version of "
            f"grok-imagine-async understands ({SCHEMA_VERSION}): upgrade the package",
            path=path,
        )
    if version < SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, which this version cannot read "
            f"(it reads {SCHEMA_VERSION})",
            path=path,
        )


def _load(conn: sqlite3.Connection, *, key: str) -> JournalRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE key = ?", (key,)).fetchone()
    return None if row is None else _record(row)


def _page(conn: sqlite3.Connection, *, after: int, size: int) -> tuple[int, list[JournalRecord]]:
    rows = conn.execute(
        f"SELECT rowid, {_COLUMNS} FROM jobs WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, size)
    ).fetchall()
    return (rows[-1][0] if rows else after), [_record(row[1:]) for row in rows]


def _close(conn: sqlite3.Connection) -> None:
    # Fold the WAL back into the main file, so the journal is one self-contained file; if that
    # fails the WAL is still valid and is recovered at the next open.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _journal_error(path: Path, exc: BaseException) -> JournalError:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return JournalError(f"journal {path} is corrupt or not a journal ({text})", path=path)
    return JournalError(f"journal {path}: {text}", path=path)


def _request_json(request: GenerationRequest) -> str:
    data = request.payload()
    if request.allow_unlisted:
        data["allow_unlisted"] = True
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _request_from_json(text: str) -> GenerationRequest:
    data = json.loads(text)
    try:
        return GenerationRequest(**data)
    except ValueError:
        # Validated when it was recorded; a later, stricter version must still read it back.
        return GenerationRequest.model_construct(**data)


def _record(row: Sequence[Any]) -> JournalRecord:
    key, request, state, task_id, attempts, credits, videos, files, error, failure = row
    return JournalRecord(
        key=key,
        request=_request_from_json(request),
        state=JournalState(state),
        task_id=task_id,
        attempts=int(attempts),
        credits=int(credits),
        videos=tuple(json.loads(videos)),
        files=tuple(json.loads(files)),
        error=error,
        failure_class=_failure_class(failure),
    )


def _failure_class(value: str | None) -> FailureClass | None:
    if value is None:
        return None
    try:
        return FailureClass(value)
    except ValueError:
        return FailureClass.UNKNOWN
